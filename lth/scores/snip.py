"""SNIP (Lee et al. 2019): connection sensitivity |g ⊙ w|, g the loss gradient summed over
`batches` batches."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lth.pruning.masks import apply as masked
from lth.scores.common import keep_masked_out, loss_fn, summed_grad


def snip(apply_fn, variables, masks, batch, rng, *, batches: int = 1):
    params = masked(variables["params"], masks)
    g = summed_grad(loss_fn(apply_fn, variables), params, batch, batches)
    return keep_masked_out(jax.tree.map(lambda gi, p: jnp.abs(gi * p), g, params), masks)
