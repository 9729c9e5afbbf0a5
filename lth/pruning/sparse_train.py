"""Masks that change during training: gradual magnitude pruning and dynamic sparse training.

`MaskUpdate` is what the training loop (lth/training/step.py) calls on the steps where the mask changes:
  gmp     Gradual magnitude pruning (Zhu & Gupta 2017): at each update step t the weights are
          pruned by |θ| to sparsity s(t + 1), s(t) = s_f + (s_i − s_f)(1 − (t − t₀)/(t₁ − t₀))³
          clipped to [t₀, t₁], per layer at each layer's final density or in one global ranking;
          pruned weights never return. s at t + 1: the sparsity once the step is taken
          (jaxpruner `sparsity_schedules.PolynomialSchedule`, whose count is the steps before it).
          The optimizer step of that iteration is taken with the new mask.
  set     SET (Mocanu et al. 2018) and
  rigl    RigL (Evci et al. 2020): every update step t ≤ T_end each layer drops the
          k = ⌊f(t)·n_active⌋ active weights of smallest |θ| (f(t) = (α/2)(1 + cos(π·t / T_end)),
          rigl `sparse_optimizers_base.py` get_drop_fraction 'cosine'; the count as its
          `int(n_ones · drop_fraction)`) and grows k of the rest — RigL by the largest |∂L/∂θ| of
          the dense gradient on that step's batch, SET uniformly at random; a weight just dropped
          may be grown back (rigl and jaxpruner alike). Ties go to the lower flat index
          (jaxpruner's stable top-k). Newly grown weights start at 0 and their optimizer slots
          (momentum, Adam's moments) are zeroed; per-layer counts never change. On an update step
          no optimizer step is taken (rigl's RigL `apply_gradients`; jaxpruner's SET/RigL
          `skip_gradients`): the step only moves the mask.
Update steps are t₀ ≤ t ≤ t₁ with (t − t₀) divisible by the interval ΔT (rigl's
`is_mask_update_iter`; jaxpruner's when t₀ is a multiple of ΔT); GMP also updates at t₁ itself, so
that it ends at its final density when t₁ − t₀ is not a multiple of ΔT.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from lth.pruning.prune import keep_top_k
from lth.pruning.sparsity import kept
from lth.registry import SPARSE_METHODS


@dataclasses.dataclass(frozen=True)
class Method:
    """A sparse-training method as MaskUpdate reads it (registered in lth.registry.SPARSE_METHODS)."""

    start: str                        # dense (all ones, pruned gradually) | random (the final densities, exact counts)
    update: str | None = None         # prune (GMP's cubic schedule) | move (drop and grow) | None (the mask is fixed)
    grow: Callable | None = None      # move: (grads leaf, rng, params leaf) → grow score, higher grown first


def _random_grow(g, rng, p):
    # drawn flat and reshaped: the same law, far less XLA:CPU compile time than N-d draws
    return jax.random.uniform(rng, (p.size,)).reshape(p.shape)


SPARSE_METHODS.add("gmp", Method("dense", "prune"))
SPARSE_METHODS.add("static", Method("random"))
SPARSE_METHODS.add("set", Method("random", "move", _random_grow))
SPARSE_METHODS.add("rigl", Method("random", "move", lambda g, rng, p: jnp.abs(g)))


def moves(method: str) -> bool:
    """Whether `method`'s mask moves (drop and grow)."""
    return SPARSE_METHODS.get(method).update == "move"


def gmp_sparsity(t, final, t0: int, t1: int, initial=0.0):
    """Zhu & Gupta's cubic schedule s(t), clipped to [t₀, t₁] (float32, jittable)."""
    p = 1.0 if t1 == t0 else jnp.clip((jnp.asarray(t, jnp.float32) - t0) / (t1 - t0), 0.0, 1.0)
    return final + (initial - final) * (1.0 - p) ** 3


def drop_fraction(t, alpha: float, t_end: int):
    """f(t) = (α/2)(1 + cos(π · min(t, T_end) / T_end)) (optax.cosine_decay_schedule(α, T_end))."""
    return optax.cosine_decay_schedule(alpha, t_end)(t)


def drop_and_grow(w, mask, grow_score, n_drop):
    """One layer's move: keep the n_active − n_drop active weights of largest |w|, then grow the
    n_drop entries of largest `grow_score` among all the others. Returns the new mask (same shape)."""
    flat_m = mask.ravel()
    n_on = jnp.sum(flat_m, dtype=jnp.int32)
    keep = keep_top_k(jnp.abs(w).ravel(), flat_m, n_on - n_drop)
    grow = keep_top_k(grow_score.ravel().astype(jnp.float32), ~keep, n_drop)
    return (keep | grow).reshape(mask.shape)


def random_mask(rng, shape, n_keep):
    """Exactly `n_keep` True entries at uniformly random positions."""
    size = math.prod(shape)
    return (jax.random.permutation(rng, size) < n_keep).reshape(shape)


def reset_slots(tx, opt_state, activated):
    """The optimizer's per-weight slots zeroed where `activated` (optax.tree_map_params)."""
    return optax.tree_map_params(tx, lambda v, a: jnp.where(a, jnp.zeros((), v.dtype), v), opt_state, activated)


@dataclasses.dataclass(frozen=True, eq=False)
class MaskUpdate:
    """The schedule and rule of a mask that changes during training (one replicate's view; the
    trainer maps it over replicates). `density`: per params leaf, the final density of a prunable
    leaf, None elsewhere (a tuple in jax.tree.leaves order); SET and RigL read it only for the
    starting mask (their updates keep each layer's count), GMP at every update. `scope` (gmp):
    layerwise | global."""

    method: str
    density: tuple
    begin: int
    end: int
    every: int
    alpha: float = 0.3
    scope: str = "layerwise"

    @property
    def spec(self) -> Method:
        return SPARSE_METHODS.get(self.method)

    def is_update(self, step: int) -> bool:
        if self.spec.update is None:
            return False
        on_grid = self.begin <= step <= self.end and (step - self.begin) % self.every == 0
        return on_grid or (self.spec.update == "prune" and step == self.end)   # GMP ends at its final density

    @property
    def skips_step(self) -> bool:
        return self.spec.update == "move"

    def initial_masks(self, params, rng):
        """Masks to start from: all ones for gmp; random at the layers' densities (exact counts)
        for static, set and rigl."""
        leaves, treedef = jax.tree.flatten(params)
        if self.spec.start == "dense":
            return jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
        ks = jax.random.split(rng, len(leaves))
        out = [jnp.ones(p.shape, bool) if d is None else random_mask(k, p.shape, kept(p.size, d))
               for k, p, d in zip(ks, leaves, self.density)]
        return jax.tree.unflatten(treedef, out)

    def new_masks(self, step, params, masks, grads, rng):
        """The masks after the update at `step` (jittable; one replicate)."""
        p_leaves, treedef = jax.tree.flatten(params)
        m_leaves, g_leaves = jax.tree.leaves(masks), jax.tree.leaves(grads)
        idx = [i for i, d in enumerate(self.density) if d is not None]
        out = list(m_leaves)
        if self.spec.update == "prune":
            s_t = lambda d: gmp_sparsity(step + 1, 1.0 - d, self.begin, self.end)  # noqa: E731
            if self.scope == "global":
                d = self.density[idx[0]]
                n = sum(p_leaves[i].size for i in idx)
                k = jnp.where(step + 1 >= self.end, kept(n, d), n - jnp.floor(s_t(d) * n).astype(jnp.int32))
                flat = keep_top_k(jnp.concatenate([jnp.abs(p_leaves[i]).ravel() for i in idx]),
                                  jnp.concatenate([m_leaves[i].ravel() for i in idx]), k)
                off = 0
                for i in idx:
                    out[i] = flat[off:off + p_leaves[i].size].reshape(p_leaves[i].shape)
                    off += p_leaves[i].size
            else:
                for i in idx:
                    n, d = p_leaves[i].size, self.density[i]
                    k = jnp.where(step + 1 >= self.end, kept(n, d), n - jnp.floor(s_t(d) * n).astype(jnp.int32))
                    out[i] = keep_top_k(jnp.abs(p_leaves[i]).ravel(), m_leaves[i].ravel(), k).reshape(p_leaves[i].shape)
            return jax.tree.unflatten(treedef, out)
        f = drop_fraction(step, self.alpha, self.end)
        ks = jax.random.split(rng, len(p_leaves))
        for i in idx:
            n_on = jnp.sum(m_leaves[i], dtype=jnp.int32)
            n_drop = (n_on.astype(jnp.float32) * f).astype(jnp.int32)
            score = self.spec.grow(g_leaves[i], ks[i], p_leaves[i])
            out[i] = drop_and_grow(p_leaves[i], m_leaves[i], score, n_drop)
        return jax.tree.unflatten(treedef, out)
