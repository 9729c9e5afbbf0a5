"""Supermasks: a subnetwork of random weights found without training the weights — edge-popup
(Ramanujan et al. 2020, "What's hidden in a randomly weighted neural network?"), as
allenai/hidden-networks implements it (utils/conv_type.py GetSubnet / SubnetConv, utils/builder.py
`_init_conv`, main.py freeze_model_weights / get_optimizer).

Every prunable kernel W is frozen at its signed Kaiming constant, sign(W₀) · gain / √fan_in (gain √2
for ReLU; `init: signed_constant`, mode fan_in), and gets scores S drawn kaiming_uniform(a = √5),
i.e. U(−1/√fan_in, 1/√fan_in). The forward pass uses W ⊙ GetSubnet(|S|, k): of each layer's scores
the numel − int((1 − k) · numel) largest |S| are 1, the rest 0 (k: the layer's density). The backward
is straight-through: ∂L/∂S = (∂L/∂W' ⊙ W) ⊙ sign(S), W' = W ⊙ subnet (abs's derivative included).
Only the scores learn, with the run's optimizer and schedule (the reference: SGD 0.1, momentum 0.9,
weight decay on the scores, cosine); every parameter of the model stays at its init (biases and
BatchNorm too: the reference's layers have no bias and its BatchNorm no affine parameters). lth fixes
the mask (W ⊙ subnet) at the last step. The scores' draw is keyed by the replicate's weights (the
optimizer's init sees no key). Ties among |S| keep the lower flat index (torch's sort leaves them
unspecified).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lth.pruning.movement import State, ste_mask
from lth.pruning.prune import keep_top_k


def fan_in(shape) -> int:
    """torch's fan_in of a Flax kernel [..., in, out]."""
    return int(math.prod(shape[:-1]))


def subnet(scores, k):
    """GetSubnet(|S|, k): 1 at the numel − int((1 − k) · numel) largest |S| (ties: lower index)."""
    n = scores.size
    keep = n - int((1.0 - k) * n)
    return keep_top_k(jnp.abs(scores).ravel(), jnp.ones(n, bool), keep).reshape(scores.shape)


def signed_constant(w, gain=math.sqrt(2.0)):
    """sign(w) · gain / √fan_in (builder.py `signed_constant`, mode fan_in, scale_fan off)."""
    return jnp.sign(w) * (gain / math.sqrt(fan_in(w.shape)))


@dataclasses.dataclass(frozen=True)
class EdgePopup:
    """One arm's rule. `density`: per params leaf (jax.tree.leaves order), the kept fraction k of a
    scored kernel, None elsewhere."""

    density: tuple

    def start_params(self, params):
        """The frozen weights: each scored kernel at its signed Kaiming constant (one replicate)."""
        leaves, treedef = jax.tree.flatten(params)
        return jax.tree.unflatten(treedef, [p if d is None else signed_constant(p)
                                            for p, d in zip(leaves, self.density)])

    def init_scores(self, params):
        """kaiming_uniform(a=√5) per scored kernel: U(−1/√fan_in, 1/√fan_in); a scalar elsewhere."""
        leaves, treedef = jax.tree.flatten(params)
        seed = sum(jnp.sum(jnp.abs(p) * (i + 1)) for i, (p, d) in enumerate(zip(leaves, self.density))
                   if d is not None)
        key = jax.random.PRNGKey(jax.lax.bitcast_convert_type(jnp.float32(seed), jnp.int32))
        keys = jax.random.split(key, len(leaves))
        out = []
        for k, p, d in zip(keys, leaves, self.density):
            if d is None:
                out.append(jnp.zeros(()))
                continue
            bound = 1.0 / math.sqrt(fan_in(p.shape))
            out.append(jax.random.uniform(k, p.shape, jnp.float32, -bound, bound))
        return jax.tree.unflatten(treedef, out)

    def masks(self, scores, step=None):
        """Per params leaf: the subnet of its scores (scored leaves) or None."""
        return [None if d is None else subnet(s, d) for s, d in zip(jax.tree.leaves(scores), self.density)]

    def forward(self, params, opt_state):
        """W ⊙ subnet(|S|) on the scored leaves; straight-through (∂L/∂W' reaches the update)."""
        leaves, treedef = jax.tree.flatten(params)
        ms = self.masks(opt_state.scores)
        return jax.tree.unflatten(treedef, [p if m is None else ste_mask(p, m.astype(p.dtype))
                                            for p, m in zip(leaves, ms)])

    def score_grads(self, g_leaves, p_leaves, s_leaves):
        """∂L/∂S = G ⊙ W ⊙ sign(S) per scored leaf (G = ∂L/∂W'), a scalar 0 elsewhere."""
        return [jnp.zeros(()) if d is None else (g * p * jnp.sign(s)).astype(jnp.float32)
                for g, p, s, d in zip(g_leaves, p_leaves, s_leaves, self.density)]

    def wrap(self, tx: optax.GradientTransformation, schedule) -> optax.GradientTransformation:
        """The weights frozen (zero updates); the scores stepped by `tx` at schedule(t)."""
        def init(params):
            scores = self.init_scores(params)
            return State(optax.EmptyState(), scores, tx.init(scores), jnp.zeros((), jnp.int32))

        def update(grads, state, params=None):
            g_s = jax.tree.unflatten(jax.tree.structure(state.scores),
                                     self.score_grads(jax.tree.leaves(grads), jax.tree.leaves(params),
                                                      jax.tree.leaves(state.scores)))
            u_s, score_opt = tx.update(g_s, state.score_opt, state.scores)
            lr = schedule(state.count)
            scores = jax.tree.map(lambda s, u: s + lr * u, state.scores, u_s)
            return jax.tree.map(jnp.zeros_like, grads), State(state.inner, scores, score_opt, state.count + 1)

        return optax.GradientTransformation(init, update)


# ----- Zhou et al. 2019: the Bernoulli supermask ---------------------------------------------------
class ZhouState(NamedTuple):
    """The optimizer state of a Bernoulli-supermask arm: State's fields plus the replicate's key."""

    inner: Any
    scores: Any       # per params leaf: S (scored kernels) or a scalar placeholder
    score_opt: Any
    count: jax.Array  # steps taken: each forward's sample is keyed by it
    key: jax.Array    # the replicate's sampling key


def layer_std(w):
    """tf.nn.moments' standard deviation over the whole kernel (the population std)."""
    return jnp.sqrt(jnp.mean(jnp.square(w - jnp.mean(w))))


@dataclasses.dataclass(frozen=True)
class Bernoulli:
    """Zhou et al. 2019, "Deconstructing lottery tickets: zeros, signs, and the supermask", as
    uber-research/deconstructing-lottery-tickets implements it (masked_networks.py
    get_effective_mask / make_signed_consts / MaskedDense.call, train_supermask.py).

    Every scored kernel W is frozen (`weights=signed_constant`: sign(W₀) · std(W₀) · multiplier, the
    layer's population std as tf.nn.moments gives it; `init`: W₀ as drawn) and gets mask scores S, all
    at `bias` (the reference's --sigmoid_bias, Constant init). Each training forward draws
    b ~ Bernoulli(σ(S)) afresh and uses W ⊙ m · r with m = b + σ(S) − stop_gradient(σ(S)) (value b,
    gradient σ'(S)) and, with `rescale` (--dynamic_scaling), r = numel / Σ m — whose gradient reaches
    S too: ∂L/∂S_j = σ'(S_j) · (r · G_j W_j − numel / (Σm)² · Σ_i G_i W_i m_i), G = ∂L/∂(W ⊙ m · r).
    Only S learns (every other parameter stays at its init: the reference's kernels and biases are
    non-trainable). The mask is fixed at the last step to one more sample (the reference samples at
    test time too), and each kernel then holds W · r of that sample. A layer whose sample keeps
    nothing divides by 1, where the reference divides by zero. Its density is an outcome
    (σ(bias) at the start)."""

    scored: tuple          # per params leaf: whether it carries a supermask
    bias: float = 0.0
    weights: str = "signed_constant"
    multiplier: float = 1.0
    rescale: bool = True

    def start_params(self, params):
        leaves, treedef = jax.tree.flatten(params)
        if self.weights != "signed_constant":
            return params
        return jax.tree.unflatten(treedef, [jnp.sign(p) * layer_std(p) * self.multiplier if on else p
                                            for p, on in zip(leaves, self.scored)])

    def init_state(self, params):
        leaves, treedef = jax.tree.flatten(params)
        seed = sum(jnp.sum(jnp.abs(p) * (i + 1)) for i, (p, on) in enumerate(zip(leaves, self.scored)) if on)
        key = jax.random.PRNGKey(jax.lax.bitcast_convert_type(jnp.float32(seed), jnp.int32))
        scores = jax.tree.unflatten(treedef, [jnp.full(p.shape, self.bias, jnp.float32) if on else jnp.zeros(())
                                              for p, on in zip(leaves, self.scored)])
        return scores, key

    def samples(self, scores, key, count):
        """Per params leaf: b ~ Bernoulli(σ(S)) of this step (a float 0/1 array), or None."""
        leaves = jax.tree.leaves(scores)
        keys = jax.random.split(jax.random.fold_in(key, count), len(leaves))
        return [jax.random.bernoulli(k, jax.nn.sigmoid(s)).astype(jnp.float32) if on else None
                for k, s, on in zip(keys, leaves, self.scored)]

    def _scale(self, b):
        return b.size / jnp.maximum(jnp.sum(b), 1.0) if self.rescale else jnp.float32(1.0)

    def forward(self, params, opt_state):
        """W ⊙ b · r on the scored leaves (its gradient handed to the rule unchanged, ste_mask)."""
        leaves, treedef = jax.tree.flatten(params)
        bs = self.samples(opt_state.scores, opt_state.key, opt_state.count)
        return jax.tree.unflatten(treedef, [p if b is None else ste_mask(p, (b * self._scale(b)).astype(p.dtype))
                                            for p, b in zip(leaves, bs)])

    def score_grads(self, g_leaves, p_leaves, s_leaves, bs):
        out = []
        for g, w, s, b, on in zip(g_leaves, p_leaves, s_leaves, bs, self.scored):
            if not on:
                out.append(jnp.zeros(()))
                continue
            sig = jax.nn.sigmoid(s)
            gw = (g * w).astype(jnp.float32)
            r = self._scale(b)
            d = r * gw
            if self.rescale:
                d = d - b.size / jnp.square(jnp.maximum(jnp.sum(b), 1.0)) * jnp.sum(gw * b)
            out.append(sig * (1.0 - sig) * d)
        return out

    def masks(self, opt_state):
        """Per params leaf: the fixed mask (one more sample) or None."""
        return [None if b is None else b > 0 for b in self.samples(opt_state.scores, opt_state.key,
                                                                    opt_state.count)]

    def fixed_params(self, params, opt_state):
        """The params once the mask is fixed: each scored kernel W · r of the final sample."""
        leaves, treedef = jax.tree.flatten(params)
        bs = self.samples(opt_state.scores, opt_state.key, opt_state.count)
        return jax.tree.unflatten(treedef, [p if b is None else p * self._scale(b).astype(p.dtype)
                                            for p, b in zip(leaves, bs)])

    def wrap(self, tx: optax.GradientTransformation, schedule) -> optax.GradientTransformation:
        """The weights frozen (zero updates); the scores stepped by `tx` at schedule(t)."""
        def init(params):
            scores, key = self.init_state(params)
            return ZhouState(optax.EmptyState(), scores, tx.init(scores), jnp.zeros((), jnp.int32), key)

        def update(grads, state, params=None):
            bs = self.samples(state.scores, state.key, state.count)
            g_s = jax.tree.unflatten(jax.tree.structure(state.scores),
                                     self.score_grads(jax.tree.leaves(grads), jax.tree.leaves(params),
                                                      jax.tree.leaves(state.scores), bs))
            u_s, score_opt = tx.update(g_s, state.score_opt, state.scores)
            lr = schedule(state.count)
            scores = jax.tree.map(lambda s, u: s + lr * u, state.scores, u_s)
            return (jax.tree.map(jnp.zeros_like, grads),
                    ZhouState(state.inner, scores, score_opt, state.count + 1, state.key))

        return optax.GradientTransformation(init, update)
