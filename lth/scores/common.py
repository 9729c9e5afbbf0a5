"""Shared pieces of the data-dependent scores: the masked loss and batch splitting.

`apply_fn(variables, x) -> logits` runs the model in eval mode (BatchNorm uses its statistics), as
the SynFlow reference code does for every score. `batch` is (x, y) with x of shape [N, ...]; scores
that take several batches split it into `batches` equal chunks.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def loss_fn(apply_fn, variables, temperature: float = 1.0):
    """loss(params, x, y): mean cross-entropy of logits / temperature."""
    def loss(params, x, y):
        logits = apply_fn({**variables, "params": params}, x) / temperature
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss


def chunks(batch, batches: int):
    x, y = batch
    n = (x.shape[0] // batches) * batches
    if n == 0:
        raise ValueError(f"a batch of {x.shape[0]} examples cannot be split into {batches} batches")
    return x[:n].reshape(batches, n // batches, *x.shape[1:]), y[:n].reshape(batches, n // batches)


def summed_grad(loss, params, batch, batches: int):
    """Σ over the batch chunks of ∇loss (Python-unrolled: no while loop around convolutions)."""
    xs, ys = chunks(batch, batches)
    grads = [jax.grad(loss)(params, xs[i], ys[i]) for i in range(batches)]
    return jax.tree.map(lambda *g: sum(g), *grads)


def keep_masked_out(scores, masks):
    """Pruned weights score -inf: whatever the criterion, they stay pruned."""
    return jax.tree.map(lambda s, m: jnp.where(m, s, -jnp.inf), scores, masks)
