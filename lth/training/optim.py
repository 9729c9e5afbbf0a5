"""Optimizers and learning-rate schedules of the training loop (optax), from the config's `train`
section: the update direction at learning rate 1, and the rate as a function of the global step."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from lth.errors import UserError, check_choice
from lth.options import options

# The `train` section of the config: make_optimizer, make_schedule and training.step.make_trainer read
# it; its durations ('500it', '2ep') are turned into step counts by lth.harness.trainer.
OPTIONS = options(
    optimizer=("sgd", "sgd (with momentum) | adam | adamw"),
    lr=(0.1, "peak learning rate"),
    momentum=(0.9, "sgd momentum (0 = plain SGD)"),
    nesterov=(False, "sgd Nesterov momentum"),
    weight_decay=(0.0, "L2 added to the gradient (sgd, adam); decoupled for adamw"),
    batch_size=(128, "examples per training step"),
    duration=("20ep", "training length"),
    schedule=("constant", "constant | step | cosine | linear (decay to 0)"),
    milestones=("", "step schedule: comma-separated durations, e.g. '80ep,120ep'"),
    gamma=(0.1, "step schedule: factor at each milestone"),
    warmup=("0it", "linear warmup from 0 to lr over this duration"),
    eval_every=("1ep", "evaluate validation and test sets this often (and at the end)"),
    eval_batch_size=(1000, "examples per evaluation chunk"),
    clip_norm=(0.0, "clip the gradient to this global norm (0 = no clipping)"),
    max_loss=(0.0, "divergence guard: a training loss above this (0 = off), like a non-finite one, stops that "
                   "replicate (params frozen, diverged_at_step recorded)"),
)

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "linear")


def _matrices(params):
    """AdamW decays weight matrices and embeddings only, not biases or norm scales (as BERT)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def validate(t) -> None:
    """Checks of a `train` section that need no data: choices and ranges (one-line UserErrors)."""
    check_choice("train.optimizer", t.optimizer, OPTIMIZERS)
    check_choice("train.schedule", t.schedule, SCHEDULES)
    if not t.lr >= 0:
        raise UserError(f"train.lr {t.lr} out of range; allowed: 0 or a positive learning rate")
    if not 0 <= t.momentum < 1:
        raise UserError(f"train.momentum {t.momentum} out of range; allowed: 0 <= momentum < 1 (0 = plain SGD)")
    if not t.weight_decay >= 0:
        raise UserError(f"train.weight_decay {t.weight_decay} out of range; allowed: 0 (off) or a positive rate")
    if not t.gamma >= 0:
        raise UserError(f"train.gamma {t.gamma} out of range; allowed: 0 or a positive factor")
    if not t.clip_norm >= 0:
        raise UserError(f"train.clip_norm {t.clip_norm} out of range; allowed: 0 (off) or a positive norm")
    if not t.get("max_loss", 0.0) >= 0:
        raise UserError(f"train.max_loss {t.max_loss} out of range; allowed: 0 (off) or a positive loss")
    if t.eval_batch_size < 1:
        raise UserError(f"train.eval_batch_size {t.eval_batch_size} out of range; allowed: 1 or more")


def make_optimizer(t) -> optax.GradientTransformation:
    """The update direction at learning rate 1; the step scales it by schedule(step)."""
    validate(t)
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
