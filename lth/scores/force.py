"""FORCE (de Jorge et al. 2021, "Progressive Skeletonization"): |θ₀ ⊙ g| of the dense initial
weights θ₀, g the loss gradient of the masked network θ₀ ⊙ m with respect to its weights — pruned
weights have a gradient too, so a later round may bring them back (the prune-at-init loop selects
over every weight: `Score.regrow`). naver/force `pruning/pruning_algos.py` get_average_saliencies
(prune_method=3, `original_weights`), gradients averaged over batches (get_average_gradients).

Its Iter-SNIP (prune_method=1) is `snip` over the same exponential rounds: |(θ₀ ⊙ m) ⊙ g| of the
masked network, pruned weights pinned (registered as `iter_snip`). Differences from that code:
the loss is cross-entropy (the code applies F.nll_loss to raw logits, i.e. −mean z_y; the paper
and its training use cross-entropy), the model runs in eval mode (the code leaves BatchNorm in
train mode), and ties at the threshold keep the lower flat index (the code keeps every score ≥ the
k-th largest)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lth.pruning.masks import apply as masked
from lth.scores.common import loss_fn, summed_grad


def force(apply_fn, variables, masks, batch, rng, *, batches: int = 1):
    theta0 = variables["params"]
    g = summed_grad(loss_fn(apply_fn, variables), masked(theta0, masks), batch, batches)
    return jax.tree.map(lambda gi, p: jnp.abs(gi * p), g, theta0)
