"""Losses shared by the training step and distillation."""
from __future__ import annotations

import jax.numpy as jnp


def weighted_mean(values, weight=None):
    """The mean of per-example `values`, over the examples weighing 1 when `weight` is given."""
    return values.mean() if weight is None else jnp.sum(values * weight) / jnp.sum(weight)
