"""Checkpoints through orbax (the only module that imports it).

`save`/`load`: one pytree at a fixed path (masks, rewind weights, final state of a level).
`Rolling`: the latest mid-training state plus JSON metadata, via orbax's CheckpointManager.
orbax writes into a temporary folder and renames it when complete, so an interrupted save never
leaves a half-written checkpoint behind under the final name.
"""
from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lth.errors import UserError

logging.getLogger("absl").setLevel(logging.ERROR)


def _abstract(like):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, like)


def _uncommitted(tree):
    """Restored arrays come back committed to a device; fresh ones are not, and jit compiles the two
    separately. A host round trip gives restored state the same cache key as fresh state."""
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), tree)


def _unreadable(path, e):
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    return UserError(f"checkpoint {path} is unreadable or does not match this config ({first}); "
                     "move it away to recompute it")


def exists(path) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "_CHECKPOINT_METADATA"))


def save(path, tree) -> None:
    with ocp.StandardCheckpointer() as ckpt:   # closed on the way out: no async work outlives the call
        ckpt.save(os.path.abspath(path), tree)
        ckpt.wait_until_finished()


def load(path, like):
    """Restore the pytree at `path` with the structure, shapes and dtypes of `like`. The checkpointer
    is closed on every path, errors included: an unclosed one's async tasks would report 'Event loop
    is closed' at exit after the one-line error."""
    try:
        with ocp.StandardCheckpointer() as ckpt:
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
        from lth.experiment import strict

        self.mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
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

    def __exit__(self, *exc):
        self.close()
