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
