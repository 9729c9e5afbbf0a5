"""Host side of the training loop: runs compiled segments between events (epoch ends, evaluations,
checkpoints, captures such as the rewind point) and keeps the metric history."""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp
import numpy as np

from lth.training.hosts import to_host
from lth.training.signals import Graceful, Stopped
from lth.training.state import TrainState
from lth.training.step import Trainer


@dataclasses.dataclass
class DeviceData:
    """Training arrays on the device, and validation/test splits padded into evaluation chunks."""

    x_train: jnp.ndarray
    y_train: jnp.ndarray
    val: tuple
    test: tuple
    teacher: dict | None = None   # the teacher's variables [R] when distilling (lth.distill)


def device_data(trainer: Trainer, ds) -> DeviceData:
    c = trainer.chunk_size(len(ds.y_val), len(ds.y_test))
    return DeviceData(jnp.asarray(ds.x_train), jnp.asarray(ds.y_train),
                      trainer.chunked(ds.x_val, ds.y_val, c) if len(ds.y_val) else None,
                      trainer.chunked(ds.x_test, ds.y_test, c))


def _next_multiple(step, every):
    return (step // every + 1) * every if every > 0 else None


def fit(trainer: Trainer, state: TrainState, data: DeviceData, end: int, *, eval_every: int,
        history: list, checkpoint_every: int = 0, on_checkpoint: Callable | None = None,
        captures: dict[int, Callable] | None = None, progress=None, pending=None):
    """Train `state` (all replicates) up to global step `end`.

    Evaluates every `eval_every` steps and at `end`, appending to `history` dicts of per-replicate
    lists. Calls `captures[s](state)` when step s is reached (s may equal the start step) and
    `on_checkpoint(state, history, pending)` every `checkpoint_every` steps before the end, where
    `pending` holds the train losses since the last evaluation (pass it back in to resume exactly).
    A SIGINT / SIGTERM lets the current step finish, checkpoints there and raises signals.Stopped.
    """
    with Graceful() as stop:
        return _fit(trainer, state, data, end, eval_every, history, checkpoint_every, on_checkpoint, captures,
                    progress, pending, stop)


def _fit(trainer, state, data, end, eval_every, history, checkpoint_every, on_checkpoint, captures, progress,
         pending, stop_asked):
    captures = dict(captures or {})
    step = int(np.asarray(state.step)[0])
    state = trainer.place(state)   # replicates sharded over devices (run.parallel); as is on one
    if step in captures:
        captures.pop(step)(state)
    spe = trainer.steps_per_epoch
    perm, perm_epoch = None, None
    losses = [(k, np.asarray(l, np.float64)) for k, l in (pending or [])]  # null (non-finite) → nan
    while step < end:
        stops = [end, (step // spe + 1) * spe, _next_multiple(step, eval_every),
                 _next_multiple(step, checkpoint_every), *[s for s in captures if s > step]]
        stop = min(s for s in stops if s is not None)
        if perm_epoch != step // spe:
            perm_epoch = step // spe
            perm = trainer.epoch_perm(state.data_rng, perm_epoch)
        state, step_losses = trainer.run_steps(state, perm, data.x_train, data.y_train, stop - step,
                                              stop_asked.requested, teacher=data.teacher)
        # one entry per step, summed on the host in step order: the mean is the same wherever a run was cut
        losses += [(1, row) for row in np.asarray(to_host(step_losses), np.float64)]
        if progress is not None:
            progress.update(len(step_losses))
        if len(step_losses) < stop - step:  # a stop was asked for mid-segment: save here
            step += len(step_losses)
            if on_checkpoint:
                on_checkpoint(state, history, [(k, l.tolist()) for k, l in losses])
            raise Stopped(stop_asked.requested())
        step = stop
        if step in captures:
            captures.pop(step)(to_host(state))
        if step == end or (eval_every > 0 and step % eval_every == 0):
            n = sum(k for k, _ in losses)
            entry = {"step": step, "train_loss": (sum(k * l for k, l in losses) / n).tolist()}
            entry.update(evaluate(trainer, state, data))
            history.append(entry)
            losses = []
        saved = False
        if on_checkpoint and checkpoint_every > 0 and step % checkpoint_every == 0 and step < end:
            on_checkpoint(state, history, [(k, l.tolist()) for k, l in losses])
            saved = True
        if stop_asked.requested():  # asked for at the segment's last step: its events are done, save here
            if on_checkpoint and not saved:
                on_checkpoint(state, history, [(k, l.tolist()) for k, l in losses])
            raise Stopped(stop_asked.requested())
    return to_host(state), history


def evaluate(trainer: Trainer, state: TrainState, data: DeviceData) -> dict:
    out = {}
    for name, split in (("val", data.val), ("test", data.test)):
        if split is not None:
            loss, acc = trainer.evaluate(state, split)
            loss, acc = to_host((loss, acc))
            out[f"{name}_loss"], out[f"{name}_acc"] = np.asarray(loss).tolist(), np.asarray(acc).tolist()
    return out


def summarize(history: list) -> list[dict]:
    """Per replicate: final test accuracy and loss, the early-stop step (minimum validation loss),
    and the test accuracy there."""
    r = len(history[-1]["test_acc"])
    out = []
    for i in range(r):
        row = {"test_accuracy": history[-1]["test_acc"][i], "final_step": history[-1]["step"]}
        if "test_loss" in history[-1]:   # an MLM's log perplexity
            row["test_loss"] = history[-1]["test_loss"][i]
        if "val_loss" in history[-1]:
            best = min(history, key=lambda e: e["val_loss"][i])
            row.update(best_val_loss=best["val_loss"][i], best_val_loss_step=best["step"],
                       test_accuracy_at_best_val=best["test_acc"][i])
        out.append(row)
    return out
