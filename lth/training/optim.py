"""Optimizers and learning-rate schedules of the training loop (optax), from the config's `train`
section: the update direction at learning rate 1, and the rate as a function of the global step."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from lth.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "linear")


def _matrices(params):
    """AdamW decays weight matrices and embeddings only, not biases or norm scales (as BERT)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(t) -> optax.GradientTransformation:
    """The update direction at learning rate 1; the step scales it by schedule(step)."""
    if t.optimizer == "sgd":
        base = optax.sgd(1.0, momentum=t.momentum or None, nesterov=t.nesterov)
    elif t.optimizer == "adam":
        base = optax.adam(1.0)
    elif t.optimizer == "adamw":
        base = optax.adamw(1.0, weight_decay=t.weight_decay, mask=_matrices)
    else:
        raise UserError(f"unknown optimizer {t.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
    if t.weight_decay and t.optimizer != "adamw":
        base = optax.chain(optax.add_decayed_weights(t.weight_decay), base)
    if t.clip_norm < 0:
        raise UserError(f"train.clip_norm {t.clip_norm} out of range; allowed: 0 (off) or a positive norm")
    return optax.chain(optax.clip_by_global_norm(t.clip_norm), base) if t.clip_norm else base


def make_schedule(t, total: int, warmup: int = 0, milestones=()) -> Callable:
    """Learning rate as a function of the global step: `t.schedule` at peak `t.lr` over `total`
    steps, after `warmup` steps of linear warmup; `milestones` (steps) for the step schedule."""
    warm = warmup
    if t.schedule == "constant":
        main = lambda s: jnp.asarray(t.lr, jnp.float32)  # noqa: E731
    elif t.schedule == "step":
        main = optax.piecewise_constant_schedule(t.lr, {int(m): t.gamma for m in milestones})
    elif t.schedule == "cosine":
        main = optax.cosine_decay_schedule(t.lr, max(total, 1))
    elif t.schedule == "linear":
        main = optax.linear_schedule(t.lr, 0.0, max(total - warm, 1), transition_begin=warm)
    else:
        raise UserError(f"unknown train.schedule {t.schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if warm <= 0:
        return main
    return lambda s: jnp.where(s < warm, t.lr * (s + 1) / warm, main(s))
