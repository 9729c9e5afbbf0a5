"""ProsPr (Alizadeh et al. 2022, "Prospect Pruning"): |∂L(θ_M(c))/∂c| at c = 1, where θ_0(c) = θ₀ ⊙ c
and θ_{i+1} = θ_i − η ∇L(θ_i): M plain SGD steps on every parameter (the mask multiplies the
initial weights once), differentiated through the steps (mil-ad/prospr `prospr/prospr.py` prune,
method='full'; `functional_sgd` with momentum 0, weight decay 0). Defaults from its cli.py: M = 3
inner steps (`pai.prospr_steps`), η = 0.1 (`pai.prospr_lr`), and — `--new-data-in-inner` False —
the same batch for every inner step and the outer loss. One round: the score is taken once at c = 1
(masks all ones); after pruning, c is the mask. Differences from that code: the model runs in eval
mode (its inner loop trains BatchNorm on batch statistics), and ties keep the lower flat index."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lth.options import options
from lth.scores.common import loss_fn

OPTIONS = options(
    prospr_steps=(3, "ProsPr: M inner SGD steps differentiated through (mil-ad/prospr cli.py --inner-steps)"),
    prospr_lr=(0.1, "ProsPr: their learning rate (--inner-lr)"),
)


def prospr(apply_fn, variables, masks, batch, rng, *, steps: int = 3, lr: float = 0.1):
    loss = loss_fn(apply_fn, variables)
    x, y = batch
    theta0 = variables["params"]

    def outer(c):
        params = jax.tree.map(lambda p, ci: p * ci, theta0, c)
        for _ in range(steps):   # unrolled: M is small, and no while loop around convolutions
            g = jax.grad(loss)(params, x, y)
            params = jax.tree.map(lambda p, gi: p - lr * gi, params, g)
        return loss(params, x, y)

    c = jax.tree.map(lambda m, p: m.astype(p.dtype), masks, theta0)
    return jax.tree.map(jnp.abs, jax.grad(outer)(c))
