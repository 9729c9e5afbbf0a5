"""Run directories: the stored config and its identity (checked on reuse), the one-process lock, strict JSON."""
from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
import time

from lth.errors import Corrupt, UserError, first_line
from lth.harness import paths
from lth.training.hosts import is_main


def check_run_dir(path: str, cfg, command) -> None:
    """UserError if `path` holds a run of a different config (nothing is written)."""
    stored = paths.config(path)
    if os.path.exists(stored):
        try:
            with open(stored) as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise UserError(f"{stored} is unreadable ({e}); choose another run directory") from None
        if not command.matches(old.get("identity"), cfg):
            raise UserError(f"run directory {path} holds a run of another config (hash {old.get('hash')}, "
                            f"this one {command.hash(cfg)}); choose another --run-dir or drop it to use the default")
    elif os.path.isdir(path) and set(os.listdir(path)) - {".lock"}:
        raise UserError(f"run directory {path} is not empty and holds no lth config.json; choose another")


class RunLock:
    """One process per run directory: an exclusive flock on <dir>/.lock, held while this object
    lives (the OS drops it when the process ends, so a crashed run's lock is simply taken over).
    The file holds the owner's PID for the error message."""

    fd = None

    def __init__(self, path: str):
        os.makedirs(path, exist_ok=True)
        self.path = os.path.join(path, ".lock")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            self.fd = None
            raise UserError(f"run directory {path} is in use by process {owner}; allowed: one process per run "
                            f"directory (wait for it, or choose another --run-dir)") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        self.release()


def open_run_dir(path: str, cfg, command) -> RunLock:
    """Lock `path` (creating it) and record the config (after check_run_dir). Keep the returned lock
    for as long as the run writes into the directory."""
    lock = RunLock(path)
    stored = paths.config(path)
    if not os.path.exists(stored):
        write_json(stored, {"command": command.name, "hash": command.hash(cfg), "identity": command.identity(cfg),
                            "config": json.loads(cfg.to_json())})
    return lock


QUARANTINE = "quarantine"


def quarantine(run_dir: str, target: str) -> str:
    """Move `target` (a directory of the run) to RUN/quarantine/<its path>-<time>, where it is kept
    (never deleted) and out of the way of the rerun that recomputes it. Returns the new path."""
    root, target = os.path.abspath(run_dir), os.path.abspath(target)
    rel = os.path.relpath(target, root)
    if rel == "." or rel.startswith("..") or rel.split(os.sep)[0] == QUARANTINE:
        raise UserError(f"{target} is not a part of the run directory {root} that can be recomputed; "
                        f"move it away by hand")
    dest = os.path.join(root, QUARANTINE, f"{rel}-{time.strftime('%Y%m%d-%H%M%S')}")
    n, base = 1, dest
    while os.path.exists(dest):
        n, dest = n + 1, f"{base}.{n}"
    if is_main() and os.path.exists(target):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.replace(target, dest)
    return dest


def strict(obj):
    """obj with every non-finite float (NaN, ±Infinity) replaced by None: strict JSON readers (jq,
    JavaScript) reject those tokens. numpy scalars and arrays become Python numbers and lists."""
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return strict(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str, obj) -> None:
    """Write strict JSON (non-finite numbers as null) atomically (temporary file, then rename);
    in a run of several processes, process 0 alone writes."""
    if not is_main():
        return
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(strict(obj), f, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:   # e.g. disk full: the old file stays, no temporary one is left behind
        os.unlink(tmp) if os.path.exists(tmp) else None
        raise


def read_json(path: str, redo: str | None = None):
    """The JSON at `path`; Corrupt (naming `redo`, the directory a --repair rerun recomputes) if it
    does not parse."""
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise Corrupt(path, f"corrupt ({first_line(e, 80)})", redo) from None
