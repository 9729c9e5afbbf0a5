"""GraSP (Wang et al. 2020): gradient signal preservation through a Hessian-gradient product.

Derivatives are taken with respect to the prunable weights w only (the `prunable` leaves: conv /
linear kernels under the default `prune.prunable`); biases, BatchNorm γ/β and every other leaf are
constants. With L the mean cross-entropy of logits / temperature (200 in the paper), the model in
eval mode, and `batches` batches b:

    g = Σ_b ∇_w L_b  (stopped),    Hg = ∇_w Σ_b (∇_w L_b · g),    grasp = w ⊙ Hg.

The mask multiplies w inside the network, so g and Hg are 0 at pruned positions (this matters from
the second round of iterative pruning on). The paper scores S = −w ⊙ Hg and removes the weights with
the highest S; lth keeps the highest score, so `grasp` returns w ⊙ Hg = −S and removes the same
weights as the paper and the SynFlow code. The reference code also divides every score by
|Σ scores| + 1e-10, a positive scalar that does not change the ranking; lth omits it. `grasp_abs`
returns |w ⊙ Hg| (keeps weights whose removal changes the gradient flow most, in either direction).
Leaves outside `prunable` score 0 (they are never pruned).

Reference: the SynFlow code, ganguli-lab/Synaptic-Flow Pruners/pruners.py class GraSP
(torch.autograd.grad(L, [p for (_, p) in self.masked_parameters]) for both gradients, with
masked_parameters from Utils/generator.py: Conv2d / Linear weights), itself based on Wang et al.'s
alecwangcq/GraSP pruner/GraSP.py (gradients w.r.t. Conv2d / Linear weights). tests/test_fidelity.py
checks equality with the SynFlow code's scores on a VGG with biases and BatchNorm.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lth.options import options
from lth.pruning.masks import apply as masked
from lth.scores.common import chunks, keep_masked_out, loss_fn

OPTIONS = options(
    grasp_temperature=(200.0, "GraSP: the temperature of its Hessian-gradient product (alecwangcq/GraSP)"),
)


def hessian_gradient(apply_fn, variables, masks, prunable, batch, batches, temperature):
    """Hg w.r.t. the prunable leaves (masked inside the network); 0 for the other leaves."""
    params = masked(variables["params"], masks)
    leaves, treedef = jax.tree.flatten(params)
    mask_leaves, pr = jax.tree.leaves(masks), jax.tree.leaves(prunable)
    if len(pr) != len(leaves):
        raise ValueError(f"prunable has {len(pr)} leaves, params {len(leaves)}")
    idx = [i for i, p in enumerate(pr) if p]
    loss = loss_fn(apply_fn, variables, temperature)

    def loss_w(w, x, y):  # the loss as a function of the prunable weights, the rest held fixed
        full = list(leaves)
        for i, wi in zip(idx, w):
            full[i] = jnp.where(mask_leaves[i], wi, jnp.zeros((), wi.dtype))
        return loss(jax.tree.unflatten(treedef, full), x, y)

    w = [leaves[i] for i in idx]
    xs, ys = chunks(batch, batches)
    grads = [jax.grad(loss_w)(w, xs[b], ys[b]) for b in range(batches)]
    g = jax.lax.stop_gradient([sum(gs) for gs in zip(*grads)])

    def gdot(w):
        return sum(sum(jnp.vdot(a, c) for a, c in zip(jax.grad(loss_w)(w, xs[b], ys[b]), g))
                   for b in range(batches))
    hg = [jnp.zeros_like(p) for p in leaves]
    for i, h in zip(idx, jax.grad(gdot)(w)):
        hg[i] = h
    return jax.tree.unflatten(treedef, hg), params


def grasp(apply_fn, variables, masks, batch, rng, *, prunable, batches: int = 1, temperature: float = 200.0):
    """w ⊙ Hg (−S of the paper): the highest are kept."""
    hg, params = hessian_gradient(apply_fn, variables, masks, prunable, batch, batches, temperature)
    return keep_masked_out(jax.tree.map(lambda h, p: h * p, hg, params), masks)


def grasp_abs(apply_fn, variables, masks, batch, rng, *, prunable, batches: int = 1, temperature: float = 200.0):
    """|w ⊙ Hg|."""
    hg, params = hessian_gradient(apply_fn, variables, masks, prunable, batch, batches, temperature)
    return keep_masked_out(jax.tree.map(lambda h, p: jnp.abs(h * p), hg, params), masks)


def prepare(apply_fn, variables, prunable, input_shape, options) -> dict:
    """Scorer options: the model's prunable set bound (the leaves GraSP differentiates)."""
    return {**options, "prunable": prunable}
