"""Several processes, one run (jax.distributed): joining, and the few places where processes differ.

Every process runs the same command on the same files. The mesh (lth/training/devices.py) spans all their
devices, so replicates are sharded across processes; XLA's CPU collectives go through gloo. What
the host reads (losses, metrics, steps) is gathered to every process (`to_host`), so the study code
above the training loop sees the same full arrays everywhere and takes the same decisions.
Checkpoints are written by all processes together through orbax (`to_global`). Process 0 alone
takes the run-directory lock and writes JSON, tables, plots and TensorBoard events; the others
wait for it at `barrier`s. One process is the only case: every function here is then a no-op.
"""
from __future__ import annotations

import os

import jax

from lth.errors import UserError, first_line
from lth.training.hosts import multi

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def settings(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None):
    """(coordinator, processes, id) from the flags, else the usual environment; None when neither
    asks for several processes (SLURM with more than one task is left to jax's auto-detection)."""
    env = {k: os.environ.get(k) for k in ENV}
    coordinator = coordinator or env["JAX_COORDINATOR_ADDRESS"]
    try:
        n = num_processes if num_processes is not None else int(env["JAX_NUM_PROCESSES"] or 0)
        pid = process_id if process_id is not None else int(env["JAX_PROCESS_ID"] or 0)
    except ValueError:
        raise UserError(f"JAX_NUM_PROCESSES {env['JAX_NUM_PROCESSES']!r} / JAX_PROCESS_ID {env['JAX_PROCESS_ID']!r} "
                        f"are not integers; allowed: N >= 1 and 0 <= ID < N") from None
    slurm = int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and not coordinator
    if not coordinator and not slurm and n <= 1:
        return None
    if not slurm:
        if n < 1 or not 0 <= pid < n:
            raise UserError(f"process id {pid} of {n} processes; allowed: N >= 1 and 0 <= ID < N")
        if not coordinator or ":" not in coordinator:
            raise UserError(f"coordinator address {coordinator!r}; allowed: HOST:PORT of process 0 "
                            f"(--coordinator or JAX_COORDINATOR_ADDRESS)")
    return coordinator, n, pid


def initialize(coordinator=None, num_processes=None, process_id=None, timeout: int = 60) -> bool:
    """Join the run described by the flags / environment (before any JAX computation); False when
    this is a single-process run. A coordinator not reached within `timeout` s, or a process count
    or id the coordinator does not accept, is a one-line UserError."""
    s = settings(coordinator, num_processes, process_id)
    if s is None:
        return False
    coordinator, n, pid = s
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_recoverability", True)   # a dead peer is an error here, not an abort
    try:
        if coordinator:
            jax.distributed.initialize(coordinator, n, pid, initialization_timeout=timeout,
                                       heartbeat_timeout_seconds=max(10, timeout // 2))
        else:
            jax.distributed.initialize(initialization_timeout=timeout)   # SLURM
    except Exception as e:  # jax raises several types for an unreachable or mismatched coordinator
        first = first_line(e)
        raise UserError(f"could not join the jax.distributed run at {coordinator or 'SLURM'} as process {pid} of {n} "
                        f"within {timeout} s ({first}); start every process with the same coordinator "
                        f"and count") from None
    return True


def watch_peers(on_dead, period: float = 1.0, dead_after: float | None = None) -> None:
    """A daemon thread that keeps a heartbeat in the coordinator's key-value store and calls
    `on_dead(text)` when another process's heartbeat stops for `dead_after` s (default: the
    environment's LTH_PEER_TIMEOUT, else 15) or the coordinator is gone. Most failures surface sooner
    as an error of the next collective; this bounds the
    rest (e.g. orbax's save threads waiting at a barrier for a process that will never come)."""
    import threading
    import time

    from jax._src import distributed as jd

    client, me, n = jd.global_state.client, jax.process_index(), jax.process_count()
    if dead_after is None:
        dead_after = float(os.environ.get("LTH_PEER_TIMEOUT", "15"))

    def run():
        beat, last = 0, {q: (None, time.monotonic()) for q in range(n) if q != me}
        while True:
            beat += 1
            try:
                client.key_value_set(f"lth_alive/{me}", str(beat), allow_overwrite=True)
                now = time.monotonic()
                for q, (value, since) in last.items():
                    try:
                        v = client.key_value_try_get(f"lth_alive/{q}")
                    except Exception:   # not written yet
                        v = value
                    if v != value:
                        last[q] = (v, now)
                    elif now - since > dead_after:
                        return on_dead(f"process {q} sent no heartbeat for {dead_after:.0f} s")
            except Exception as e:   # the coordinator (process 0) is gone
                first = first_line(e, 150)
                return on_dead(f"the coordinator is unreachable: {first}")
            time.sleep(period)
    threading.Thread(target=run, name="lth-peer-watch", daemon=True).start()


PEER_SIGNS = ("Gloo", "Connection closed by peer", "Connection reset", "coordination service", "heartbeat",
              "UNAVAILABLE", "DEADLINE_EXCEEDED", "barrier")


def peer_failure(e: BaseException) -> str | None:
    """A one-line description when `e` says another process of this run is gone, else None."""
    if not multi():
        return None
    text = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return text[:200] if any(s.lower() in text.lower() for s in PEER_SIGNS) else None
