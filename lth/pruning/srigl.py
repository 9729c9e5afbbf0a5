"""SRigL (Lasby et al., ICLR 2024, "Dynamic sparse training with structured sparsity"): RigL with a
constant fan-in per neuron and neuron ablation, as calgaryml/condensed-sparsity implements it
(src/rigl_torch/rigl_constant_fan.py RigLConstFanScheduler: `_rigl_step`, `_get_neurons_to_ablate`,
`_get_drop_mask`, `_get_grow_mask`, `random_sparsify`; utils/rigl_utils.py get_fan_in_after_ablation).

A layer of n_out neurons (a Flax kernel's last axis; fan-in: every other axis) keeps a budget
B = int(numel · (1 − S)) (S its sparsity) as a constant fan-in k = B // (n_out − ablated) per live
neuron. The starting mask gives each neuron k₀ = B // n_out uniformly random inputs. At an update
with drop fraction f (RigL's cosine, lth/pruning/sparse_train.py), of the layer's n_ones active
weights:
1. n_prune = int(n_ones · f), n_keep = n_ones − n_prune (clamped to the nonzero |w| count);
2. ablation (unless the layer is protected: the reference never ablates its classifier): a weight
   is salient if among the layer's n_keep largest |w| or its n_prune largest |∂L/∂w| (over all
   positions); a neuron with fewer than thr salient weights is ablated, thr = γ if γ ≥ 1 else
   max(1, int(γ · k₀)), lowered to the (min_neurons + 1)-th largest count so that more than
   min_neurons = B // fan_in neurons stay (γ = `sparse.gamma_sal`, the reference's
   min_salient_weights_per_neuron = 0.3);
3. k = B // (n_out − ablated); drop: the layer's n_keep largest |w| are kept, ablated neurons' last;
   a neuron keeping more than k keeps its k largest |w| (the reference truncates such a row by
   sorting the boolean mask, which keeps arbitrary entries: lth takes the largest);
4. grow: every live neuron is refilled to exactly k by its largest |∂L/∂w| among the positions it
   did not keep (a weight dropped now may come back); ablated neurons grow nothing.
Newly grown weights start at 0 with zeroed optimizer slots (lth's RigL rule). Ties go to the lower
index (torch's topk leaves them unspecified). Ablation is recomputed at every update, so an ablated
neuron can come back. lth takes no optimizer step on an update step (rigl's and lth's RigL); the
reference steps the optimizer first and then moves the mask.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from lth.pruning.prune import keep_top_k


def budget(numel: int, density: float) -> int:
    """B = int(numel · (1 − S)), S = 1 − density (the reference stores the sparsity)."""
    return int(numel * (1 - (1 - density)))


def rows(x):
    """A Flax kernel [..., n_out] as neurons × fan-in [n_out, fan_in]."""
    return x.reshape(-1, x.shape[-1]).T


def unrows(r, shape):
    return r.T.reshape(shape)


def row_top(score, eligible, k):
    """Per row i, the k[i] largest `score` among `eligible` (ties: lower index)."""
    s = jnp.where(eligible, score, -jnp.inf)
    order = jnp.argsort(-s, axis=1, stable=True)
    rank = jnp.argsort(order, axis=1)
    return (rank < k[:, None]) & eligible


def const_fan_mask(rng, shape, density: float):
    """k₀ = B // n_out uniformly random inputs for every neuron (random_sparsify)."""
    n_out = shape[-1]
    fan = math.prod(shape[:-1])
    k0 = budget(math.prod(shape), density) // n_out
    u = jax.random.uniform(rng, (n_out, fan))
    m = row_top(u, jnp.ones((n_out, fan), bool), jnp.full((n_out,), k0))
    return unrows(m, shape)


def update(w, mask, grad, f, density: float, gamma: float, protected: bool = False):
    """One layer's SRigL move (module docstring): the new mask, and the ablated neurons [n_out]."""
    shape = w.shape
    a, m, g = jnp.abs(rows(w)), rows(mask), jnp.abs(rows(grad)).astype(jnp.float32)
    n_out, fan = a.shape
    b = budget(w.size, density)
    n_ones = jnp.sum(m, dtype=jnp.int32)
    n_prune = (n_ones.astype(jnp.float32) * f).astype(jnp.int32)
    n_keep = n_ones - n_prune
    nnz = jnp.sum(a != 0, dtype=jnp.int32)
    n_keep = jnp.minimum(n_keep, nnz)
    n_prune = n_ones - n_keep
    everywhere = jnp.ones(a.size, bool)
    if protected or gamma == 0:
        ablated = jnp.zeros((n_out,), bool)
    else:
        salient = (keep_top_k(a.ravel(), everywhere, n_keep) | keep_top_k(g.ravel(), everywhere, n_prune))
        counts = jnp.sum(salient.reshape(a.shape), axis=1)
        k0 = b // n_out
        thr = gamma if gamma >= 1 else max(1, int(gamma * k0))
        min_neurons = min(b // fan, n_out - 1)
        ref = jnp.sort(counts)[::-1][min_neurons]
        ablated = counts < jnp.minimum(thr, ref)
    n_active = jnp.maximum(n_out - jnp.sum(ablated, dtype=jnp.int32), 1)
    k = b // n_active
    drop_score = jnp.where(ablated[:, None], jnp.min(a) - 1, a)
    keep = keep_top_k(drop_score.ravel(), everywhere, n_keep).reshape(a.shape)
    keep = row_top(a, keep, jnp.full((n_out,), k))          # a neuron keeping more than k: its k largest |w|
    need = jnp.where(ablated, 0, jnp.maximum(k - jnp.sum(keep, axis=1), 0))
    grow = row_top(g, ~keep, need)
    return unrows(keep | grow, shape), ablated
