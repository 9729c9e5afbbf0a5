"""Stopping a run cleanly: Ctrl-C (SIGINT) or SIGTERM during training lets the current step finish,
saves a checkpoint at that step and ends the command (exit 130 / 143); rerunning it resumes
bit-identically. Outside training, SIGTERM ends the command like Ctrl-C."""
from __future__ import annotations

import signal
import threading


class Stopped(KeyboardInterrupt):
    """Raised once the state at the stop has been saved; `signum` is the signal that asked for it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Graceful:
    """While active, SIGINT / SIGTERM only record that a stop was asked for (`requested()` → signum
    or None); a second signal stops at once. Off the main thread it does nothing."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def requested(self):
        return self.signum

    def _handler(self, signum, frame):
        if self.signum is not None:
            raise Stopped(signum)
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
        return False


def raise_on_sigterm() -> None:
    """Make SIGTERM raise Stopped (outside training), so cleanup runs and the exit code is 143."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: (_ for _ in ()).throw(Stopped(signum)))
