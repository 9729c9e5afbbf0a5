"""The one training loop: a jit-compiled masked train step, vmapped over a leading replicate axis.

Every state leaf carries a leading replicate axis R (R = 1 for a single run). Data live whole on
the device; each epoch's order is a permutation drawn from the replicate's data key, and batches
are sliced from it by index inside jit. Masks are applied to the gradient and to the params after
every update, so pruned weights stay exactly 0 whatever the optimizer (momentum, weight decay).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from lth import masks as M
from lth.config import parse_duration
from lth.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "linear")


class TrainState(struct.PyTreeNode):
    params: Any
    model_state: Any      # non-param collections (e.g. batch_stats); {} when the model has none
    opt_state: Any
    masks: Any
    step: jax.Array       # int32: global iteration (levels that rewind to k start at k)
    rng: jax.Array        # key for per-step randomness (dropout, augmentation)
    data_rng: jax.Array   # key of the data order: epoch e is permutation(fold_in(data_rng, e))


def make_optimizer(t) -> optax.GradientTransformation:
    """The update direction at learning rate 1; the step scales it by schedule(step)."""
    if t.optimizer == "sgd":
        base = optax.sgd(1.0, momentum=t.momentum or None, nesterov=t.nesterov)
    elif t.optimizer == "adam":
        base = optax.adam(1.0)
    elif t.optimizer == "adamw":
        return optax.adamw(1.0, weight_decay=t.weight_decay)
    else:
        raise UserError(f"unknown optimizer {t.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
    return optax.chain(optax.add_decayed_weights(t.weight_decay), base) if t.weight_decay else base


def make_schedule(t, steps_per_epoch: int, total: int) -> Callable:
    """Learning rate as a function of the global step."""
    warm = parse_duration(t.warmup, steps_per_epoch, "train.warmup")
    if t.schedule == "constant":
        main = lambda s: jnp.asarray(t.lr, jnp.float32)  # noqa: E731
    elif t.schedule == "step":
        marks = [parse_duration(m, steps_per_epoch, "train.milestones") for m in t.milestones.split(",") if m.strip()]
        main = optax.piecewise_constant_schedule(t.lr, {m: t.gamma for m in marks})
    elif t.schedule == "cosine":
        main = optax.cosine_decay_schedule(t.lr, max(total, 1))
    elif t.schedule == "linear":
        main = optax.linear_schedule(t.lr, 0.0, max(total - warm, 1), transition_begin=warm)
    else:
        raise UserError(f"unknown train.schedule {t.schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if warm <= 0:
        return main
    return lambda s: jnp.where(s < warm, t.lr * (s + 1) / warm, main(s))


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
    """Compiled functions for one model, optimizer and dataset size."""

    model: nn.Module
    tx: optax.GradientTransformation
    schedule: Callable
    batch_size: int
    eval_batch_size: int
    num_train: int

    @property
    def steps_per_epoch(self) -> int:
        return self.num_train // self.batch_size

    # ----- model -----------------------------------------------------------------------------
    def init_variables(self, rng, sample_x):
        """(params, model_state) for one replicate."""
        variables = self.model.init({"params": rng, "dropout": rng}, sample_x, train=False)
        variables = dict(variables)
        params = variables.pop("params")
        return params, variables

    def apply(self, params, model_state, x, train, rng):
        """(logits, new model_state); train mode updates collections such as batch_stats."""
        variables = {"params": params, **model_state}
        if train and model_state:
            return self.model.apply(variables, x, train=True, mutable=list(model_state), rngs={"dropout": rng})
        return self.model.apply(variables, x, train=train, rngs={"dropout": rng}), model_state

    def new_state(self, params, model_state, masks, step, rng, data_rng) -> TrainState:
        """A fresh state (new optimizer state) for stacked replicates; params are masked."""
        return self._jit_new_state(params, model_state, masks, jnp.int32(step), rng, data_rng)

    @functools.cached_property
    def _jit_new_state(self):
        def make(params, model_state, masks, step, rng, data_rng):
            params = M.apply(params, masks)
            return TrainState(params=params, model_state=model_state, opt_state=self.tx.init(params),
                              masks=masks, step=step, rng=rng, data_rng=data_rng)
        return jax.jit(jax.vmap(make, in_axes=(0, 0, 0, None, 0, 0)))

    def init_replicates(self, rngs, input_shape):
        """(params, model_state) stacked over the [R] keys `rngs`."""
        return self._jit_init(rngs, tuple(input_shape))

    @functools.cached_property
    def _jit_init(self):
        def init(rngs, input_shape):
            return jax.vmap(lambda k: self.init_variables(k, jnp.zeros((1, *input_shape), jnp.float32)))(rngs)
        return jax.jit(init, static_argnums=1)

    # ----- training --------------------------------------------------------------------------
    def train_step(self, state: TrainState, x, y):
        rng, step_rng = jax.random.split(state.rng)

        def loss_fn(params):
            logits, new_ms = self.apply(params, state.model_state, x, True, step_rng)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_ms

        (loss, new_ms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grads = M.apply(grads, state.masks)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        lr = self.schedule(state.step)
        params = jax.tree.map(lambda p, u: p + (lr * u).astype(p.dtype), state.params, updates)
        params = M.apply(params, state.masks)
        new = state.replace(params=params, model_state=new_ms, opt_state=opt_state, step=state.step + 1, rng=rng)
        return new, loss

    def _run_steps(self, state, perm, x, y, n):
        def body(_, carry):
            st, total = carry
            pos = st.step % self.steps_per_epoch
            idx = jax.lax.dynamic_slice(perm, (pos * self.batch_size,), (self.batch_size,))
            st, loss = self.train_step(st, x[idx], y[idx])
            return st, total + loss

        state, total = jax.lax.fori_loop(0, n, body, (state, jnp.zeros((), jnp.float32)))
        return state, total / jnp.maximum(n, 1)

    def run_steps(self, state, perm, x, y, n: int):
        """n train steps inside one epoch (all replicates); returns (state, mean train loss [R])."""
        return self._jit_run(state, perm, x, y, jnp.int32(n))

    def epoch_perm(self, data_rng, epoch: int):
        return self._jit_perm(data_rng, jnp.int32(epoch))

    @functools.cached_property
    def _jit_run(self):
        return jax.jit(jax.vmap(self._run_steps, in_axes=(0, 0, None, None, None)))

    @functools.cached_property
    def _jit_perm(self):
        return jax.jit(jax.vmap(lambda k, e: jax.random.permutation(jax.random.fold_in(k, e), self.num_train),
                                in_axes=(0, None)))

    @functools.cached_property
    def _jit_eval(self):
        return jax.jit(jax.vmap(self._evaluate, in_axes=(0, None, None, None)))

    # ----- evaluation ------------------------------------------------------------------------
    def _evaluate(self, state, xs, ys, ws):
        def chunk(args):
            xb, yb, wb = args
            logits, _ = self.apply(state.params, state.model_state, xb, False, state.rng)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
            return jnp.sum(loss * wb), jnp.sum((jnp.argmax(logits, -1) == yb) * wb)

        loss, correct = jax.lax.map(chunk, (xs, ys, ws))
        n = jnp.sum(ws)
        return jnp.sum(loss) / n, jnp.sum(correct) / n

    def evaluate(self, state, split):
        """(loss [R], accuracy [R]) on a padded split from `chunked`."""
        return self._jit_eval(state, *split)

    def chunked(self, x, y):
        """Pad and reshape a split into evaluation chunks (device arrays, built once)."""
        c = min(self.eval_batch_size, len(y))
        n = -(-len(y) // c) * c
        pad = n - len(y)
        w = np.concatenate([np.ones(len(y), np.float32), np.zeros(pad, np.float32)])
        xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        yp = np.concatenate([y, np.zeros(pad, y.dtype)])
        return (jnp.asarray(xp.reshape(n // c, c, *x.shape[1:])), jnp.asarray(yp.reshape(n // c, c)),
                jnp.asarray(w.reshape(n // c, c)))


def make_trainer(model, train_cfg, num_train: int) -> Trainer:
    if train_cfg.batch_size < 1 or train_cfg.batch_size > num_train:
        raise UserError(f"train.batch_size {train_cfg.batch_size} out of range; allowed: 1..{num_train} (training examples)")
    spe = num_train // train_cfg.batch_size
    total = parse_duration(train_cfg.duration, spe, "train.duration")
    if total < 1:
        raise UserError(f"train.duration {train_cfg.duration!r} is zero iterations; allowed: at least 1it")
    return Trainer(model, make_optimizer(train_cfg), make_schedule(train_cfg, spe, total),
                   train_cfg.batch_size, train_cfg.eval_batch_size, num_train)
