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
  srste  SR-STE (Zhou et al. 2021; aojunzz/NM-sparsity devkit/sparse_ops/sparse_ops.py `Sparse`):
          N:M from scratch. The weights stay dense; every forward uses W ⊙ m(W), m keeping in each
          group of M consecutive inputs (axis -2) the N largest |w| (sparse_ops: the M − N first of
          an ascending stable sort are zeroed, so ties prune the lower index), and the backward is
          straight-through plus the sparse-refined decay: ∂L/∂W = G + λ·(1 − m)·W. The mask is
          fixed (made N:M, the params masked) only at the last step t₁, before its optimizer step.
Update steps are t₀ ≤ t ≤ t₁ with (t − t₀) divisible by the interval ΔT (rigl's
`is_mask_update_iter`; jaxpruner's when t₀ is a multiple of ΔT); GMP also updates at t₁ itself, so
that it ends at its final density when t₁ − t₀ is not a multiple of ΔT.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from lth.pruning import srigl
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
SPARSE_METHODS.add("srste", Method("dense", "srste"))
SPARSE_METHODS.add("movement_hard", Method("dense", "movement"))   # lth/pruning/movement.py
SPARSE_METHODS.add("movement_soft", Method("dense", "movement"))
SPARSE_METHODS.add("edgepopup", Method("dense", "movement"))        # lth/pruning/supermask.py (the same protocol)
SPARSE_METHODS.add("supermask", Method("dense", "movement"))        # lth/pruning/supermask.py Bernoulli (Zhou et al.)
SPARSE_METHODS.add("srigl", Method("const_fan", "srigl", lambda g, rng, p: jnp.abs(g)))   # lth/pruning/srigl.py


def srste_mask(w, n: int, m: int):
    """SR-STE's N:M keep-mask of w: in each group of m consecutive entries along axis -2, the m − n
    first of a stable ascending sort of |w| are pruned (so ties prune the lower index)."""
    a = jnp.moveaxis(jnp.abs(w), -2, -1)
    g = a.reshape(*a.shape[:-1], a.shape[-1] // m, m)
    # the rank in a stable ascending sort, by m² comparisons (an argsort per group is ~10× slower on CPU)
    i = jnp.arange(m)
    below = (g[..., None, :] < g[..., :, None]) | ((g[..., None, :] == g[..., :, None]) & (i[None, :] < i[:, None]))
    rank = jnp.sum(below, axis=-1)   # 0 = the smallest
    return jnp.moveaxis((rank >= m - n).reshape(a.shape), -1, -2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def srste(w, n: int, m: int, decay: float):
    """W ⊙ m(W) forward; backward G + decay·(1 − m)·W (sparse_ops.py Sparse.forward / backward)."""
    return w * srste_mask(w, n, m).astype(w.dtype)


def _srste_fwd(w, n, m, decay):
    mask = srste_mask(w, n, m).astype(w.dtype)
    return w * mask, (w, mask)


def _srste_bwd(n, m, decay, res, g):
    w, mask = res
    return (g + decay * (1 - mask) * w,)


srste.defvjp(_srste_fwd, _srste_bwd)


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
    pattern: tuple | None = None      # srste: (N, M)
    decay: float = 2e-4               # srste: λ of the sparse-refined gradient
    fix: int = -1                     # srste, movement: the step that fixes the mask (the last one)
    rule: Any = None                  # movement: lth.pruning.movement.Movement; edgepopup: supermask.EdgePopup
    gamma: float = 0.3                # srigl: γ_sal, the salient weights a neuron needs (fraction of k₀, or a count)
    protect: tuple = ()               # srigl: per params leaf, never ablated (the classifier)

    @property
    def spec(self) -> Method:
        return SPARSE_METHODS.get(self.method)

    def is_update(self, step: int) -> bool:
        if self.spec.update is None:
            return False
        if self.transforms:   # the mask is fixed once, at the last step
            return step == self.fix
        on_grid = self.begin <= step <= self.end and (step - self.begin) % self.every == 0
        return on_grid or (self.spec.update == "prune" and step == self.end)   # GMP ends at its final density

    @property
    def skips_step(self) -> bool:
        return self.spec.update in ("move", "srigl")

    @property
    def transforms(self) -> bool:
        """Whether the forward pass sees transformed weights until the mask is fixed (SR-STE's
        W ⊙ m(W), movement pruning's W ⊙ Bin(S))."""
        return self.spec.update in ("srste", "movement")

    def transform(self, params, opt_state=None, step=None):
        """The weights the forward pass uses (one replicate): SR-STE's N:M projection of each prunable
        leaf, or movement pruning's W ⊙ Bin(S); the params as they are once the mask is fixed."""
        if self.spec.update == "movement":
            out = self.rule.forward(params, opt_state)
        else:
            n, m = self.pattern
            leaves, treedef = jax.tree.flatten(params)
            out = jax.tree.unflatten(treedef, [p if d is None else srste(p, n, m, self.decay)
                                               for p, d in zip(leaves, self.density)])
        if step is None:
            return out
        return jax.tree.map(lambda a, b: jnp.where(step > self.fix, a, b), params, out)

    @property
    def resamples(self) -> bool:
        """A stochastic mask (Zhou et al.'s Bernoulli supermask): its rule keys each sample by its state,
        and rescales the weights it keeps when the mask is fixed (`fixed_params`)."""
        return hasattr(self.rule, "fixed_params")

    def fixed_params(self, params, opt_state):
        """The params at the step that fixes the mask: the rule's (the supermask's W · r), else as they are."""
        return self.rule.fixed_params(params, opt_state) if self.resamples else params

    def start_params(self, params):
        """The params an arm starts from (one replicate): the rule's (edge-popup's frozen signed
        constants), else as they are."""
        return self.rule.start_params(params) if hasattr(self.rule, "start_params") else params

    def wrap_tx(self, tx, schedule):
        """The optimizer of an arm: `tx`, with movement pruning's scores and their Adam around it."""
        return self.rule.wrap(tx, schedule) if self.spec.update == "movement" else tx

    def initial_masks(self, params, rng):
        """Masks to start from: all ones for gmp; random at the layers' densities (exact counts)
        for static, set and rigl."""
        leaves, treedef = jax.tree.flatten(params)
        if self.spec.start == "dense":
            return jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
        ks = jax.random.split(rng, len(leaves))
        if self.spec.start == "const_fan":   # SRigL: every neuron the same number of random inputs
            out = [jnp.ones(p.shape, bool) if d is None or d >= 1 else srigl.const_fan_mask(k, p.shape, d)
                   for k, p, d in zip(ks, leaves, self.density)]
            return jax.tree.unflatten(treedef, out)
        out = [jnp.ones(p.shape, bool) if d is None else random_mask(k, p.shape, kept(p.size, d))
               for k, p, d in zip(ks, leaves, self.density)]
        return jax.tree.unflatten(treedef, out)

    def new_masks(self, step, params, masks, grads, rng, opt_state=None):
        """The masks after the update at `step` (jittable; one replicate)."""
        p_leaves, treedef = jax.tree.flatten(params)
        m_leaves, g_leaves = jax.tree.leaves(masks), jax.tree.leaves(grads)
        idx = [i for i, d in enumerate(self.density) if d is not None]
        out = list(m_leaves)
        if self.spec.update == "movement":
            bs = (self.rule.masks(opt_state) if self.resamples
                  else self.rule.masks(opt_state.scores, opt_state.count))
            for i, b in enumerate(bs):
                if b is not None:
                    out[i] = m_leaves[i] & b
            return jax.tree.unflatten(treedef, out)
        if self.spec.update == "srste":
            for i in idx:
                out[i] = m_leaves[i] & srste_mask(p_leaves[i], *self.pattern)
            return jax.tree.unflatten(treedef, out)
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
        if self.spec.update == "srigl":
            for i in idx:
                if self.density[i] < 1:
                    out[i] = srigl.update(p_leaves[i], m_leaves[i], g_leaves[i], f, self.density[i], self.gamma,
                                          bool(self.protect[i]) if self.protect else False)[0]
            return jax.tree.unflatten(treedef, out)
        ks = jax.random.split(rng, len(p_leaves))
        for i in idx:
            n_on = jnp.sum(m_leaves[i], dtype=jnp.int32)
            n_drop = (n_on.astype(jnp.float32) * f).astype(jnp.int32)
            score = self.spec.grow(g_leaves[i], ks[i], p_leaves[i])
            out[i] = drop_and_grow(p_leaves[i], m_leaves[i], score, n_drop)
        return jax.tree.unflatten(treedef, out)
