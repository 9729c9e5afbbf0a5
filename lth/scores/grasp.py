"""GraSP (Wang et al. 2020): gradient signal preservation through a Hessian-gradient product.

g = ∇L and Hg = ∇(∇L · stop_gradient(g)) with the logits divided by a temperature (200 in the
paper), both summed over `batches` batches. The paper scores S = −θ ⊙ Hg and removes the weights
with the highest S. lth keeps the highest score, so `grasp` returns θ ⊙ Hg = −S: it removes the
same weights as the paper and the SynFlow code. `grasp_abs` returns |θ ⊙ Hg| (keeps weights whose
removal changes the gradient flow most, in either direction).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lth.masks import apply as masked
from lth.scores.common import chunks, keep_masked_out, loss_fn, summed_grad


def hessian_gradient(apply_fn, variables, params, batch, batches, temperature):
    loss = loss_fn(apply_fn, variables, temperature)
    g = jax.lax.stop_gradient(summed_grad(loss, params, batch, batches))
    xs, ys = chunks(batch, batches)

    def gdot(p):
        return sum(sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(jax.grad(loss)(p, xs[i], ys[i])),
                                                      jax.tree.leaves(g)))
                   for i in range(batches))
    return jax.grad(gdot)(params)


def grasp(apply_fn, variables, masks, batch, rng, *, batches: int = 1, temperature: float = 200.0):
    params = masked(variables["params"], masks)
    hg = hessian_gradient(apply_fn, variables, params, batch, batches, temperature)
    return keep_masked_out(jax.tree.map(lambda h, p: h * p, hg, params), masks)


def grasp_abs(apply_fn, variables, masks, batch, rng, *, batches: int = 1, temperature: float = 200.0):
    params = masked(variables["params"], masks)
    hg = hessian_gradient(apply_fn, variables, params, batch, batches, temperature)
    return keep_masked_out(jax.tree.map(lambda h, p: jnp.abs(h * p), hg, params), masks)
