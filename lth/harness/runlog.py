"""The run's log: while a command runs, everything written to stderr — Python's and the native
libraries' (orbax's and tensorstore's background threads, asyncio's "Exception ignored" reports,
absl and warnings) — goes to `RUN/lth.log`, a rotating log of every command run in that directory
(its arguments, versions and devices first); the terminal keeps stdout, the progress bar and the
command's one `lth: error:` line.

Until the run directory is known the stream is held in a temporary file, copied into the log once
`attach(run_dir)` is called. Called in-process (tests, a notebook calling `lth.cli.main`), `Capture`
puts stderr back on the way out; as the `lth` program it keeps the redirection to the end, so that
reports printed while the interpreter shuts down also reach the log.
"""
from __future__ import annotations

import io
import logging
import logging.handlers
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from importlib import metadata

import jax

LOG = "lth.log"
MAX_BYTES = 2 << 20   # then lth.log → lth.log.1 (three kept)
BACKUPS = 3

_active: Capture | None = None


def terminal():
    """The stream the user sees (stderr as it was before the capture): the progress bar and the
    command's one-line errors go there."""
    return _active.terminal if _active is not None else sys.stderr


def location() -> str | None:
    """Where this command's stderr is written: RUN/lth.log once attached, else the temporary file."""
    return None if _active is None else _active.path


def log_exception(e: BaseException) -> None:
    """The whole traceback of `e` into the run's log (nothing on the terminal); a log that cannot be
    written (a full disk) is skipped."""
    if _active is not None:
        try:
            _active.stream.write("".join(traceback.format_exception(type(e), e, e.__traceback__)))
            _active.stream.flush()
        except OSError:
            pass


def attach(run_dir: str, argv) -> str | None:
    """From now on this command's stderr goes to RUN/lth.log (created, rotated when over 2 MB), after
    a header (time, arguments, versions, devices) and what was written before. Returns its path."""
    return _active.attach(run_dir, argv) if _active is not None else None


def _header(argv) -> str:
    try:
        devices = f"{jax.default_backend()} {[d.device_kind for d in jax.local_devices()]}"
        proc = f"process {jax.process_index()}/{jax.process_count()}"
    except Exception as e:   # no backend: the header still goes out
        devices, proc = f"unknown ({type(e).__name__})", "process ?"
    try:
        version = metadata.version("lth")
    except metadata.PackageNotFoundError:
        version = "?"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (f"==== {stamp}  pid {os.getpid()}  {proc}\n"
            f"command: lth {' '.join(argv)}\n"
            f"versions: lth {version}, jax {jax.__version__}, python {platform.python_version()}, "
            f"{platform.platform()}\n"
            f"devices: {devices}\n")


def _writes_to_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):   # pytest's capture, a notebook's stream
        return False


class Capture:
    """Redirects stderr (sys.stderr and file descriptor 2) into a file while it is active."""

    def __init__(self, keep: bool = False):
        self.keep = keep   # leave the redirection in place on the way out (the `lth` program)
        self.terminal = None
        self.path = None
        self.attached = False

    def __enter__(self):
        global _active
        sys.stderr.flush()
        self._saved_fd = os.dup(2)
        self.terminal = self._entered_with = sys.stderr
        if _writes_to_fd2(sys.stderr):   # the real stderr: keep a stream on a copy of its descriptor
            self.terminal = io.TextIOWrapper(os.fdopen(os.dup(self._saved_fd), "wb", buffering=0), encoding="utf-8",
                                             errors="replace", line_buffering=True, write_through=True)
        fd, self.path = tempfile.mkstemp(prefix="lth-", suffix=".log")
        self._point_at(fd)
        _active = self
        return self

    def _point_at(self, fd: int) -> None:
        """stderr (fd 2 and sys.stderr) → the open file `fd` (taken over)."""
        sys.stderr.flush()
        os.dup2(fd, 2)
        os.close(fd)
        self.stream = io.TextIOWrapper(os.fdopen(os.dup(2), "wb", buffering=0), encoding="utf-8",
                                       errors="replace", line_buffering=True, write_through=True)
        sys.stderr = self.stream

    def attach(self, run_dir: str, argv) -> str:
        path = os.path.abspath(os.path.join(run_dir, LOG))
        if self.attached:
            return self.path
        try:
            os.makedirs(run_dir, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS,
                                                           encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(message)s"))
            handler.emit(logging.makeLogRecord({"msg": _header(argv).rstrip("\n")}))   # rotates first if due
            handler.close()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self.stream.flush()
            with open(self.path, "rb") as src, os.fdopen(os.dup(fd), "ab") as dst:
                shutil.copyfileobj(src, dst)
        except OSError:   # a full disk or a read-only directory: keep the temporary file
            return self.path
        self._point_at(fd)
        os.unlink(self.path)
        self.path, self.attached = path, True
        return path

    def __exit__(self, exc_type, exc, tb):
        global _active
        if self.keep:
            return False
        try:
            self.stream.flush()
        except OSError:   # a full disk
            pass
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        if self.terminal is not self._entered_with:
            self.terminal.close()
        sys.stderr = self._entered_with
        self.stream.close()
        _active = None
        if not self.attached and exc is None:
            os.unlink(self.path) if os.path.exists(self.path) else None
        return False

    def discard(self) -> None:
        """Nothing worth keeping was written (the command ended before its run directory was known,
        without a fault): remove the temporary file."""
        if not self.attached and self.path and os.path.exists(self.path):
            os.unlink(self.path)
