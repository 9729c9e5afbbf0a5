"""Checkpoints through orbax (the only module that imports it).

`save`/`load`: one pytree at a fixed path (masks, rewind weights, final state of a level).
`Rolling`: the latest mid-training state plus JSON metadata, via orbax's CheckpointManager.
orbax writes into a temporary folder and renames it when complete, so an interrupted save never
leaves a half-written checkpoint behind under the final name.
"""
from __future__ import annotations

import contextlib
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lth.errors import UserError, first_line
from lth.harness import distributed, paths
from lth.harness.rundir import strict
from lth.training import hosts

logging.getLogger("absl").setLevel(logging.ERROR)


def _abstract(like):
    """Shapes and dtypes of `like`; across processes, restored whole on every device (then gathered)."""
    if hosts.multi():
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=hosts.replicated()), like)
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, like)


def _uncommitted(tree):
    """Restored arrays come back committed to a device; fresh ones are not, and jit compiles the two
    separately. A host round trip gives restored state the same cache key as fresh state."""
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), hosts.to_host(tree))


def _unreadable(path, e):
    first = first_line(e)
    return UserError(f"checkpoint {path} is unreadable or does not match this config ({first}); "
                     "move it away to recompute it")


def exists(path) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "_CHECKPOINT_METADATA"))


@contextlib.contextmanager
def _checkpointer():
    """A StandardCheckpointer closed on the way out, errors included (no async work outlives the
    call) — except when another process of the run died: its threads wait on that process, and
    joining them would hang (the CLI then exits at once with one line)."""
    ckpt = ocp.StandardCheckpointer()
    try:
        yield ckpt
    except BaseException as e:
        if not distributed.peer_failure(e):
            ckpt.close()
        raise
    ckpt.close()


def save(path, tree) -> None:
    with _checkpointer() as ckpt:
        ckpt.save(os.path.abspath(path), hosts.to_global(tree))
        ckpt.wait_until_finished()


def load(path, like):
    """Restore the pytree at `path` with the structure, shapes and dtypes of `like`. The checkpointer
    is closed on every path, errors included: an unclosed one's async tasks would report 'Event loop
    is closed' at exit after the one-line error."""
    try:
        with _checkpointer() as ckpt:
            return _uncommitted(ckpt.restore(os.path.abspath(path), _abstract(like)))
    except Exception as e:  # orbax raises many types for missing, truncated or mismatched files
        raise _unreadable(path, e) from None


class Rolling:
    """Latest mid-training checkpoint of one training run (older ones are deleted)."""

    def __init__(self, directory):
        self.directory = os.path.abspath(directory)
        self._mngr = None

    @property
    def mngr(self):
        if self._mngr is None:
            opts = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
            self._mngr = ocp.CheckpointManager(self.directory, options=opts)
        return self._mngr

    def save(self, step: int, state, meta: dict) -> None:
        self.mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(hosts.to_global(state)),
                                                     meta=ocp.args.JsonSave(strict(meta))))
        self.mngr.wait_until_finished()

    def latest(self, like):
        """(state, meta) of the newest checkpoint, or None when there is none."""
        if not os.path.isdir(self.directory):
            return None
        step = self.mngr.latest_step()
        if step is None:
            return None
        try:
            out = self.mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(like)),
                                                                  meta=ocp.args.JsonRestore()))
        except Exception as e:
            raise _unreadable(os.path.join(self.directory, str(step)), e) from None
        return _uncommitted(out["state"]), out["meta"]

    def close(self):
        if self._mngr is not None:
            self._mngr.close()
            self._mngr = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and distributed.peer_failure(exc):
            return   # its save threads wait on a dead process: closing would join them forever
        self.close()


def load_final(arm: str, like):
    """A finished arm's final TrainState, read into the shapes and shardings of `like`."""
    return load(paths.final(arm), like)
