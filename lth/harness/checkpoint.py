"""Checkpoints through orbax (the only module that imports it).

`save`/`load`: one pytree at a fixed path (masks, rewind weights, final state of a level).
`Rolling`: the latest mid-training state plus JSON metadata, via orbax's CheckpointManager.
orbax writes into a temporary folder and renames it when complete, so an interrupted save never
leaves a half-written checkpoint behind under the final name.

Every checkpoint is verified: a checksum of each array (dtype, shape, CRC-32 of its bytes) is stored
beside it (`PATH.sums.json`; a rolling checkpoint's in its JSON metadata), and the checkpoint is read
back at once after it is written, and again whenever it is loaded. A torn or flipped write raises
`Corrupt` naming the directory a rerun with --repair moves to RUN/quarantine/ and recomputes.
"""
from __future__ import annotations

import contextlib
import logging
import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lth.errors import Corrupt
from lth.harness import distributed, paths
from lth.harness.rundir import read_json, strict, write_json
from lth.harness.runlog import log_exception
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


def _unreadable(path, e, redo):
    """The orbax / tensorstore exception to the run's log; one line for the user. A read that failed
    because another process of the run died is that, not a corrupt checkpoint: re-raised as it is."""
    if distributed.peer_failure(e):
        raise e
    log_exception(e)
    return Corrupt(f"checkpoint {path}", f"unreadable or of another config ({type(e).__name__})", redo)


def exists(path) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "_CHECKPOINT_METADATA"))


def sums_path(path) -> str:
    """Where the checksums of the checkpoint at `path` are kept: beside it, PATH.sums.json."""
    return os.path.normpath(path) + ".sums.json"


def checksums(tree) -> dict:
    """{key path: 'dtype[shape]:crc32'} of every array of `tree` (gathered to the host)."""
    out = {}
    for kp, a in jax.tree_util.tree_flatten_with_path(hosts.to_host(tree))[0]:
        if jax.dtypes.issubdtype(getattr(a, "dtype", None), jax.dtypes.prng_key):
            a = jax.random.key_data(a)
        a = np.ascontiguousarray(np.asarray(a))
        out[jax.tree_util.keystr(kp)] = f"{a.dtype.str}{list(a.shape)}:{zlib.crc32(a.tobytes()):08x}"
    return out


def _verify(path, tree, stored, redo) -> None:
    """Corrupt unless `tree` (as read back) has the checksums `stored` (None: none were stored)."""
    if stored is None:
        return
    got = checksums(tree)
    bad = sorted(k for k in set(stored) | set(got) if stored.get(k) != got.get(k))
    if bad:
        raise Corrupt(f"checkpoint {path}", f"corrupt: {len(bad)} array(s) differ from the checksums written with "
                      f"it (first: {bad[0]})", redo)


def _stored_sums(path, redo):
    sp = sums_path(path)
    if not os.path.exists(sp):
        return None   # written before checksums existed, or stopped between the two writes
    try:
        return read_json(sp)["arrays"]
    except Exception:   # unreadable JSON, or not the shape written
        raise Corrupt(sp, "unreadable", redo) from None


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


def save(path, tree, redo=None) -> None:
    """Write `tree` at `path` (replacing what an unfinished earlier attempt left there), its checksums
    beside it, then read it back and check them: a torn write is found now, not a level later."""
    sums = checksums(tree)
    with _checkpointer() as ckpt:
        ckpt.save(os.path.abspath(path), hosts.to_global(tree), force=True)
        ckpt.wait_until_finished()
    write_json(sums_path(path), {"arrays": sums})
    hosts.barrier(f"sums {path}")
    load(path, tree, redo)


def load(path, like, redo=None):
    """Restore the pytree at `path` with the structure, shapes and dtypes of `like`, checked against
    its stored checksums. `redo`: the directory a --repair rerun recomputes when it is corrupt. The
    checkpointer is closed on every path, errors included: an unclosed one's async tasks would report
    'Event loop is closed' at exit after the one-line error."""
    try:
        with _checkpointer() as ckpt:
            out = _uncommitted(ckpt.restore(os.path.abspath(path), _abstract(like)))
    except Exception as e:  # orbax raises many types for missing, truncated or mismatched files
        raise _unreadable(path, e, redo) from None
    _verify(path, out, _stored_sums(path, redo), redo)
    return out


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
        """Save (state, meta) as step `step` with the state's checksums in meta, then read it back."""
        meta = {**meta, "sums": checksums(state)}
        self.mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(hosts.to_global(state)),
                                                     meta=ocp.args.JsonSave(strict(meta))))
        self.mngr.wait_until_finished()
        self._restore(step, state)

    def latest(self, like):
        """(state, meta) of the newest checkpoint, or None when there is none."""
        if not os.path.isdir(self.directory):
            return None
        step = self.mngr.latest_step()
        if step is None:
            return None
        return self._restore(step, like)

    def _restore(self, step: int, like):
        """(state, meta) of step `step`, checked against the checksums in its metadata. A corrupt one
        is redone by moving this folder away: the arm then restarts from its start."""
        where = os.path.join(self.directory, str(step))
        try:
            out = self.mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(like)),
                                                                  meta=ocp.args.JsonRestore()))
        except Exception as e:
            raise _unreadable(where, e, self.directory) from None
        state, meta = _uncommitted(out["state"]), out["meta"]
        _verify(where, state, meta.pop("sums", None), self.directory)
        return state, meta

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


def load_final(arm: str, like, own: bool = True):
    """A finished arm's final TrainState, read into the shapes and shardings of `like`. `own`: the arm
    belongs to the running study (a corrupt one is then recomputed by --repair); False for another
    run's arm (a teacher, the lottery run of `lth compress` or `lth stability`)."""
    return load(paths.final(arm), like, redo=arm if own else None)
