"""Movement pruning (Sanh, Wolf & Rush 2020) while fine-tuning, as the transformers research project
`movement-pruning` implements it (examples/research_projects/movement-pruning: emmental/modules/
binarizer.py TopKBinarizer / ThresholdBinarizer, emmental/modules/masked_nn.py MaskedLinear,
masked_run_glue.py schedule_threshold / regularization).

Each prunable kernel W gets learned scores S (initialised to 0, emmental's mask_init=constant,
mask_scale=0) and the forward pass uses W ⊙ Bin(S):
  * hard (`movement_hard`, pruning_method=topK): Bin keeps the int(τ · numel) largest scores of the
    layer, τ the fraction kept, scheduled from 1 to the target density;
  * soft (`movement_soft`, pruning_method=sigmoied_threshold): Bin = σ(S) > τ, τ scheduled from
    `initial` to `final`; if fewer than nb_min = int(0.005 · numel) + 1 survive, the nb_min largest
    S are kept; the loss gains λ_t · mean over layers of mean(σ(S)) (the l1 regulariser), with
    λ_t = final_lambda · τ_t / final.
Straight-through estimator: ∂L/∂S = ∂L/∂W' ⊙ W, ∂L/∂W = ∂L/∂W' ⊙ Bin(S) (W' = W ⊙ Bin(S)).
The threshold schedule is cubic: τ_t = final + (initial − final)(1 − (t − t₀)/(t₁ − t₀))³ for
t₀ < t ≤ t₁, `initial` up to t₀ and `final` after t₁ (schedule_threshold, with t₀ = initial_warmup ·
warmup_steps and t₁ = total − final_warmup · warmup_steps: lth takes t₀, t₁ as sparse.begin / sparse.end).
Scores are trained by Adam (no weight decay) at `mask_lr` times the weights' schedule multiplier
(emmental's mask_scores_learning_rate in the same AdamW and linear schedule). lth fixes the mask
(the params multiplied by Bin(S) at τ's last value) at the last training step.
Ties among scores keep the lower flat index (torch's sort leaves them unspecified).
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lth.pruning.prune import keep_top_k


# ----- binarizers (one layer) ---------------------------------------------------------------------------
def topk_mask(scores, keep):
    """TopKBinarizer: the int(keep · numel) largest scores of the whole matrix (ties: lower index)."""
    n = scores.size
    j = jnp.floor(jnp.asarray(keep, jnp.float32) * n).astype(jnp.int32)
    return keep_top_k(scores.ravel(), jnp.ones(n, bool), j).reshape(scores.shape)


def threshold_mask(scores, threshold, sigmoid: bool = True):
    """ThresholdBinarizer: σ(S) > τ (or S > τ); fewer than nb_min = int(0.005·numel)+1 kept → S > the
    (numel − nb_min)-th smallest S (kthvalue of the raw scores)."""
    n = scores.size
    nb_min = int(0.005 * n) + 1
    s = jax.nn.sigmoid(scores) if sigmoid else scores
    mask = s > threshold
    kth = jnp.sort(scores.ravel())[max(n - nb_min, 1) - 1]
    return jnp.where(jnp.sum(mask) < nb_min, scores > kth, mask)


def threshold_schedule(step, initial: float, final: float, t0: int, t1: int):
    """schedule_threshold's τ_t (jittable): initial until t₀, cubic to final at t₁, final after."""
    t = jnp.asarray(step, jnp.float32)
    if t1 <= t0:
        return jnp.where(t <= t0, initial, final).astype(jnp.float32)
    p = jnp.clip((t - t0) / (t1 - t0), 0.0, 1.0)
    return jnp.float32(final) + (initial - final) * (1.0 - p) ** 3


def l1_regularization(score_leaves):
    """regularization(mode='l1'): the mean over layers of mean(σ(S))."""
    return sum(jnp.mean(jax.nn.sigmoid(s)) for s in score_leaves) / len(score_leaves)


@jax.custom_vjp
def ste_mask(w, mask):
    """W ⊙ mask forward; the backward hands W the unmasked ∂L/∂W' (the rule's optimizer splits it into
    ∂L/∂W = G ⊙ mask and ∂L/∂S = G ⊙ W)."""
    return w * mask


def _ste_fwd(w, mask):
    return w * mask, mask


def _ste_bwd(mask, g):
    return g, jnp.zeros_like(mask)


ste_mask.defvjp(_ste_fwd, _ste_bwd)


# ----- the rule ------------------------------------------------------------------------------------------
class State(NamedTuple):
    """The optimizer state of a movement-pruned network: the weights' own, the scores and theirs."""

    inner: Any
    scores: Any       # per params leaf: S (prunable) or a scalar placeholder (orbax saves no size-0 arrays)
    score_opt: Any
    count: jax.Array  # steps taken (the schedule's t)


@dataclasses.dataclass(frozen=True)
class Movement:
    """One arm's movement rule. `prunable`: per params leaf (jax.tree.leaves order) whether it is
    scored; `soft`: sigmoied_threshold with the l1 penalty (else topK); τ from `initial` to `final`
    between steps t0 and t1; `final_lambda`: the penalty's final weight; `mask_lr` over `base_lr`:
    the scores' learning rate relative to the weights' schedule."""

    prunable: tuple
    soft: bool
    initial: float
    final: float
    t0: int
    t1: int
    final_lambda: float = 0.0
    mask_lr: float = 1e-2
    base_lr: float = 1.0

    def threshold(self, step):
        return threshold_schedule(step, self.initial, self.final, self.t0, self.t1)

    def binarize(self, s, step):
        tau = self.threshold(step)
        return threshold_mask(s, tau) if self.soft else topk_mask(s, tau)

    def masks(self, scores, step):
        """Per params leaf: Bin(S) (prunable) or None."""
        return [self.binarize(s, step) if on else None for s, on in zip(jax.tree.leaves(scores), self.prunable)]

    def forward(self, params, opt_state):
        """The weights the forward pass sees: W ⊙ Bin(S) on the scored leaves, straight-through."""
        leaves, treedef = jax.tree.flatten(params)
        ms = self.masks(opt_state.scores, opt_state.count)
        return jax.tree.unflatten(treedef, [p if m is None else ste_mask(p, m.astype(p.dtype))
                                            for p, m in zip(leaves, ms)])

    def split(self, g_leaves, p_leaves, s_leaves, step):
        """(∂L/∂W, ∂L/∂S) per leaf from G = ∂L/∂W' (what the straight-through forward hands W):
        G ⊙ Bin(S) and G ⊙ W (+ λ_t ∂/∂S of the l1 penalty, soft), a scalar 0 for unscored leaves."""
        ms = [self.binarize(s, step) if on else None for s, on in zip(s_leaves, self.prunable)]
        g_w = [g if m is None else g * m.astype(g.dtype) for g, m in zip(g_leaves, ms)]
        g_s = [jnp.zeros(()) if m is None else (g * p).astype(jnp.float32) for g, p, m in zip(g_leaves, p_leaves, ms)]
        if self.soft and self.final_lambda:
            lam = self.final_lambda * self.threshold(step) / self.final
            reg = iter(jax.grad(l1_regularization)([s for s, on in zip(s_leaves, self.prunable) if on]))
            g_s = [gs + lam * next(reg) if on else gs for gs, on in zip(g_s, self.prunable)]
        return g_w, g_s

    def wrap(self, tx: optax.GradientTransformation, schedule) -> optax.GradientTransformation:
        """`tx` for the weights plus the scores' Adam, stepping the scores inside `update`."""
        score_tx = optax.adam(1.0, eps=1e-8)

        def init(params):
            leaves, treedef = jax.tree.flatten(params)
            scores = jax.tree.unflatten(treedef, [jnp.zeros(p.shape, jnp.float32) if on else jnp.zeros(())
                                                  for p, on in zip(leaves, self.prunable)])
            return State(tx.init(params), scores, score_tx.init(scores), jnp.zeros((), jnp.int32))

        def update(grads, state, params=None):
            treedef = jax.tree.structure(grads)
            g_w, g_s = self.split(jax.tree.leaves(grads), jax.tree.leaves(params), jax.tree.leaves(state.scores),
                                  state.count)
            updates, inner = tx.update(jax.tree.unflatten(treedef, g_w), state.inner, params)
            g_s = jax.tree.unflatten(jax.tree.structure(state.scores), g_s)
            u_s, score_opt = score_tx.update(g_s, state.score_opt, state.scores)
            lr_s = self.mask_lr * schedule(state.count) / self.base_lr
            scores = jax.tree.map(lambda s, u: s + lr_s * u, state.scores, u_s)
            return updates, State(inner, scores, score_opt, state.count + 1)

        return optax.GradientTransformation(init, update)
