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
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lth.errors import UserError
from lth.models.layers import example_weights
from lth.models.layers import input_shape as model_input_shape
from lth.pruning import masks as M
from lth.pruning.sparse_train import reset_slots
from lth.training.devices import axis_size
from lth.training.distill import INTERMEDIATE
from lth.training.distill import loss_of as distill_loss
from lth.training.evaluation import Evaluation, _slice
from lth.training.hosts import multi, to_host
from lth.training.objective import CLASSIFICATION
from lth.training.optim import make_optimizer, make_schedule
from lth.training.state import TrainState


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer(Evaluation):
    """Compiled functions for one model, optimizer and dataset size (evaluation: lth/training/evaluation.py)."""

    model: nn.Module
    tx: optax.GradientTransformation
    schedule: Callable
    batch_size: int
    eval_batch_size: int
    num_train: int
    augment: Callable | None = None   # (key, x) → x, applied to each training batch inside jit
    mesh: Mesh | None = None          # ('replicas', 'data') mesh (lth/training/devices.py); None = one device
    replicate_mode: str = "vmap"      # vmap | unroll: how the step maps over the replicate axis
    max_loss: float = 0.0             # a training loss above this marks the replicate diverged (0 = only non-finite)
    teacher: Callable | None = None   # knowledge distillation (lth.distill): (teacher variables, x) → logits
    distill_alpha: float = 1.0
    distill_temperature: float = 1.0
    distill_kind: str = "logits"      # lth/training/distill.py: logits | patient | tinybert_layers | tinybert_pred
    distill_beta: float = 0.0
    distill_normalize: bool = True
    sparse: Any = None                # lth.sparse_train.MaskUpdate: a mask that changes during training
    #                                   (GMP, SET, RigL)
    drop_last: bool = True            # False: an epoch is ceil(N / B) steps, the last batch partial
    #                                   (PyTorch's DataLoader)
    objective: Any = CLASSIFICATION   # the loss and metric (lth/training/objective.py): classification | mlm

    def shard(self, x):
        """Split one replicate's batch axis over the mesh's 'data' devices (params stay replicated
        within a replicate group; under vmap the replicate axis follows 'replicas')."""
        if axis_size(self.mesh, "data") == 1:
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, PartitionSpec("data")))

    def place(self, tree):
        """Stacked replicates with their leading axis sharded over 'replicas' (as is with one group)."""
        if axis_size(self.mesh, "replicas") == 1:
            return tree
        if multi():   # the same whole values in every process: each keeps its replicates' part
            tree = jax.tree.map(np.asarray, tree)
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec("replicas")))

    @property
    def steps_per_epoch(self) -> int:
        return self.num_train // self.batch_size if self.drop_last else -(-self.num_train // self.batch_size)

    @property
    def partial(self) -> bool:
        """Whether an epoch ends with a partial batch: it is run as a full batch padded with other
        examples that weigh 0 (one compiled shape) in the loss and in BatchNorm's statistics."""
        return not self.drop_last and self.num_train % self.batch_size != 0

    # ----- model -----------------------------------------------------------------------------
    def init_variables(self, rng, sample_x):
        """(params, model_state) for one replicate."""
        variables = self.model.init({"params": rng, "dropout": rng}, sample_x, train=False)
        variables = dict(variables)
        params = variables.pop("params")
        return params, variables

    def apply(self, params, model_state, x, train, rng, **kw):
        """(logits, new model_state); train mode updates collections such as batch_stats. `kw` go to
        the model (e.g. BERT's head_mask / mlp_mask)."""
        variables = {"params": params, **model_state}
        if train and model_state:
            return self.model.apply(variables, x, train=True, mutable=list(model_state), rngs={"dropout": rng}, **kw)
        return self.model.apply(variables, x, train=train, rngs={"dropout": rng}, **kw), model_state

    def forward_params(self, params, state):
        """The weights the forward pass uses: `params`, or their transform while a sparse rule shapes
        them (SR-STE's N:M projection, movement pruning's W ⊙ Bin(S); lth/pruning/sparse_train.py)."""
        if self.sparse is None or not self.sparse.transforms:
            return params
        return self.sparse.transform(params, state.opt_state, state.step)

    def new_state(self, params, model_state, masks, step, rng, data_rng) -> TrainState:
        """A fresh state (new optimizer state) for stacked replicates; params are masked."""
        return self._jit_new_state(params, model_state, masks, jnp.int32(step), rng, data_rng)

    @functools.cached_property
    def _jit_new_state(self):
        def make(params, model_state, masks, step, rng, data_rng):
            params = M.apply(params, masks)
            return TrainState(params=params, model_state=model_state, opt_state=self.tx.init(params),
                              masks=masks, step=step, rng=rng, data_rng=data_rng, diverged=jnp.int32(-1))
        return jax.jit(jax.vmap(make, in_axes=(0, 0, 0, None, 0, 0)))

    def init_replicates(self, rngs, input_shape):
        """(params, model_state) stacked over the [R] keys `rngs` (compiled once per model and input
        shape in a process, whichever trainer asks: Flax modules compare by value)."""
        return _init_replicates(self.model, rngs, model_input_shape(self.model, input_shape))

    # ----- training --------------------------------------------------------------------------
    def train_step(self, state: TrainState, x, y, teacher=None, update=False, weight=None):
        """One masked update; `teacher` (one replicate's variables) when distilling. `update`: this
        step also moves the mask (`sparse`, lth/pruning/sparse_train.py): GMP prunes before the optimizer
        step; SET / RigL drop and grow instead of it, zeroing the slots of the grown weights.
        `weight` [B] (0 / 1): the examples of a partial batch; the loss and BatchNorm's batch
        statistics are taken over those weighing 1, as PyTorch computes them on the smaller batch."""
        rng, step_rng, aug_rng = jax.random.split(state.rng, 3)
        if self.augment is not None:
            x = self.augment(aug_rng, x)
        if self.objective.prepares:   # e.g. the MLM's fresh masking of each batch
            x, y = self.objective.prepare(jax.random.fold_in(aug_rng, 1), x, y)
        x, y = self.shard(x), self.shard(y)
        target = None if self.teacher is None else self.teacher(teacher, x)

        layers = target is not None and self.distill_kind in INTERMEDIATE   # features="all" of both networks

        def loss_fn(params):
            with example_weights(weight):
                logits, new_ms = self.apply(self.forward_params(params, state), state.model_state, x, True, step_rng,
                                            **({"features": "all"} if layers else {}))
            if target is not None:
                return distill_loss(self.distill_kind, logits, target, y, self.distill_alpha,
                                    self.distill_temperature, self.distill_beta, self.distill_normalize,
                                    weight), new_ms
            return self.objective.loss(logits, y, weight), new_ms

        (loss, new_ms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        masks = state.masks
        if update:   # the dense gradient (RigL's grow score) before it is masked
            masks = self.sparse.new_masks(state.step, state.params, masks, grads, jax.random.fold_in(step_rng, 1),
                                          state.opt_state)
        if update and self.sparse.skips_step:
            activated = jax.tree.map(lambda n, o: n & ~o, masks, state.masks)
            opt_state = reset_slots(self.tx, state.opt_state, activated)
            params = M.apply(state.params, masks)   # grown weights were 0 (masked); dropped ones become 0
        else:
            grads = M.apply(grads, masks)
            updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
            lr = self.schedule(state.step)
            params = jax.tree.map(lambda p, u: p + (lr * u).astype(p.dtype), state.params, updates)
            if update and self.sparse.resamples:   # the supermask's kept weights rescaled as the mask is fixed
                params = self.sparse.fixed_params(params, state.opt_state)
            params = M.apply(params, masks)
        # divergence guard: from the first step whose loss is non-finite (or over max_loss) on, this
        # replicate's params, optimizer and model state stop changing; the step is recorded
        bad = ~jnp.isfinite(loss)
        if self.max_loss > 0:
            bad = bad | (loss > self.max_loss)
        halted = (state.diverged >= 0) | bad
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(halted, o, n), new, old)  # noqa: E731
        new = state.replace(params=keep(params, state.params), model_state=keep(new_ms, state.model_state),
                            opt_state=keep(opt_state, state.opt_state), masks=keep(masks, state.masks),
                            step=state.step + 1, rng=rng,
                            diverged=jnp.where(state.diverged >= 0, state.diverged,
                                               jnp.where(bad, state.step, -1)).astype(jnp.int32))
        return new, loss

    def _indexed_step(self, state, perm, x, y, teacher, update=False):
        pos = state.step % self.steps_per_epoch
        idx = jax.lax.dynamic_slice(perm, (pos * self.batch_size,), (self.batch_size,))
        weight = None
        if self.partial:   # positions past N in the padded order weigh 0
            weight = (pos * self.batch_size + jnp.arange(self.batch_size) < self.num_train).astype(jnp.float32)
        return self.train_step(state, x[idx], y[idx], teacher, update, weight)

    def run_steps(self, state, perm, x, y, n: int, should_stop=None, teacher=None):
        """Up to n train steps inside one epoch (all replicates); returns (state, train losses [k, R])
        for the k <= n steps taken: it stops early once `should_stop()` is truthy.

        A host loop over one compiled step, not a lax.fori_loop: on XLA:CPU a conv net's step runs
        ~16× slower inside a while loop (ResNet-20: 0.03 vs 0.5 steps/s), and dispatch is async,
        so the loop costs little elsewhere (LeNet-300-100: 790 vs 960 steps/s). `teacher`: the
        teacher's variables [R] when the trainer distills."""
        if (teacher is None) != (self.teacher is None):
            raise ValueError("teacher variables are needed exactly when the trainer distills")
        step = int(np.asarray(to_host(state.step))[0]) if self.sparse is not None else 0
        if self.replicate_mode == "sequential":   # each replicate alone, one after another (per step)
            r = int(np.shape(state.step)[0])
            parts = [_slice(state, i) for i in range(r)]
            teachers = [_slice(teacher, i) for i in range(r)]
            perms = [perm[i:i + 1] for i in range(r)]
        losses = []
        for i in range(n):
            fn = (self._jit_update_step if self.sparse is not None and self.sparse.is_update(step + i)
                  else self._jit_step)
            if self.replicate_mode == "sequential":
                out = [fn(p, q, x, y, t) for p, q, t in zip(parts, perms, teachers)]
                parts = [o[0] for o in out]
                losses.append(jnp.concatenate([o[1] for o in out]))
            else:
                state, loss = fn(state, perm, x, y, teacher)
                losses.append(loss)
            if should_stop is not None and should_stop():
                break
        if self.replicate_mode == "sequential":
            state = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
        return state, jnp.stack(losses)

    def epoch_perm(self, data_rng, epoch: int):
        return self._jit_perm(data_rng, jnp.int32(epoch))

    def over_replicates(self, fn, in_axes):
        """fn mapped over the leading replicate axis of the args whose in_axes entry is 0.

        'vmap' batches everything into one computation. 'unroll' lays the replicates' computations
        side by side in one program: vmapping convolutions over per-replicate kernels turns them
        into grouped convolutions, which XLA:CPU runs ~3× slower than R separate convolutions.
        'sequential' compiles one replicate (unrolled: a vmap of one would still batch the kernels)
        and `run_steps` / `evaluate` call it for each replicate in turn."""
        if self.replicate_mode == "vmap":
            spmd = "replicas" if axis_size(self.mesh, "replicas") > 1 else None
            return jax.vmap(fn, in_axes=in_axes, spmd_axis_name=spmd)

        def unrolled(*args):
            r = jax.tree.leaves(args[in_axes.index(0)])[0].shape[0]
            outs = [fn(*[jax.tree.map(lambda a, i=i: a[i], x) if ax == 0 else x for x, ax in zip(args, in_axes)])
                    for i in range(r)]
            return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
        return unrolled

    @functools.cached_property
    def _jit_step(self):
        return jax.jit(self.over_replicates(self._indexed_step, (0, 0, None, None, 0)))

    @functools.cached_property
    def _jit_update_step(self):
        return jax.jit(self.over_replicates(functools.partial(self._indexed_step, update=True), (0, 0, None, None, 0)))

    @functools.cached_property
    def _jit_perm(self):
        pad = self.steps_per_epoch * self.batch_size - self.num_train   # > 0 only with a partial last batch

        def perm(k, e):
            p = jax.random.permutation(jax.random.fold_in(k, e), self.num_train)
            return jnp.concatenate([p, p[:pad]]) if pad > 0 else p
        return jax.jit(jax.vmap(perm, in_axes=(0, None)))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init_replicates(model, rngs, input_shape):
    def one(k):   # Trainer.init_variables, for one key
        variables = dict(model.init({"params": k, "dropout": k}, jnp.zeros((1, *input_shape), jnp.float32),
                                    train=False))
        params = variables.pop("params")
        return params, variables
    return jax.vmap(one)(rngs)


def steps_per_epoch(num_train: int, batch_size: int, drop_last: bool = True) -> int:
    """floor(N / B) full batches an epoch, or ceil(N / B) with the last one partial (drop_last False)."""
    return num_train // batch_size if drop_last else -(-num_train // batch_size)


def make_trainer(model, train_cfg, num_train: int, *, total: int, warmup: int = 0, milestones=(), augment=None,
                 mesh=None, replicates: str = "vmap", teacher: Callable | None = None,
                 drop_last: bool = True, objective=CLASSIFICATION) -> Trainer:
    """The trainer of `model` for `num_train` examples: optimizer and batch sizes from `train_cfg`,
    the schedule over `total` steps with `warmup` steps and step-schedule `milestones` (step counts;
    lth.harness.trainer.trainer_from_config converts a config's durations). `teacher` (variables, x) →
    logits: distill with `train_cfg.distill`'s alpha and temperature. `drop_last` False: epochs of
    ceil(N / B) steps, the last batch partial. `objective`: the loss and metric (lth/training/objective.py)."""
    if train_cfg.batch_size < 1 or train_cfg.batch_size > num_train:
        raise UserError(f"train.batch_size {train_cfg.batch_size} out of range; "
                        f"allowed: 1..{num_train} (training examples)")
    d = axis_size(mesh, "data")
    if train_cfg.batch_size % d:
        raise UserError(f"train.batch_size {train_cfg.batch_size} is not divisible by the {d} devices that split "
                        f"each batch; allowed: a multiple of {d} (or set run.devices / run.parallel)")
    if total < 1:
        raise UserError(f"training length {total} iterations; allowed: at least 1")
    max_loss = float(train_cfg.get("max_loss", 0.0))
    if max_loss < 0:
        raise UserError(f"train.max_loss {max_loss} out of range; allowed: 0 (off) or a positive loss")
    d = train_cfg.get("distill")
    return Trainer(model, make_optimizer(train_cfg), make_schedule(train_cfg, total, warmup, milestones),
                   train_cfg.batch_size, train_cfg.eval_batch_size, num_train, augment, mesh, replicates, max_loss,
                   teacher, float(d.alpha) if teacher else 1.0, float(d.temperature) if teacher else 1.0,
                   drop_last=bool(drop_last), objective=objective)
