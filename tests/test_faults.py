"""Faults that are quiet and repairable: stderr goes to RUN/lth.log and the terminal gets one line;
checkpoints are verified by checksums when written and read; --repair quarantines a corrupt arm and
recomputes it to the same result; a real full disk (a tiny tmpfs) ends in one line and resumes."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import DEMO, ROOT, TINY

from lth.cli import main
from lth.errors import Corrupt
from lth.harness import checkpoint, runlog

CUT = ["--set", "lottery.levels=1", "--set", "lottery.controls="]


def argv(run_dir, *extra):
    return ["lottery", "--config", DEMO, "--no-progress", "--run-dir", str(run_dir)] + \
        [a for t in TINY for a in ("--set", t)] + CUT + list(extra)


def snapshot(root):
    """{relative path: bytes} of every file under `root` but the log."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            if not f.startswith(runlog.LOG) and f != ".lock":
                p = os.path.join(d, f)
                out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def garble(checkpoint_dir):
    """Overwrite every data file of an orbax checkpoint: reading it back fails inside tensorstore."""
    files = glob.glob(os.path.join(checkpoint_dir, "**", "d", "*"), recursive=True)
    assert files
    for f in files:
        with open(f, "wb") as fh:
            fh.write(b"garbage")


# ----- the run's log --------------------------------------------------------------------------------
def test_python_native_and_thread_stderr_go_to_the_run_log_not_the_terminal(tmp_path, capfd):
    run_dir = tmp_path / "run"
    with runlog.Capture() as cap:
        print("from python before the run directory is known", file=sys.stderr)
        os.write(2, b"from native code\n")
        runlog.attach(str(run_dir), ["lottery", "--config", "x.py"])
        t = threading.Thread(target=lambda: os.write(2, b"from a background thread\n"))   # orbax's writers
        t.start()
        t.join()
        print("the one line", file=runlog.terminal())
        assert cap.attached and runlog.location() == str(run_dir / runlog.LOG)
    err = capfd.readouterr().err
    assert err == "the one line\n", err
    log = (run_dir / runlog.LOG).read_text()
    assert log.startswith("==== ") and "command: lth lottery --config x.py" in log and "versions: lth " in log \
        and "devices: " in log
    for text in ("from python before", "from native code", "from a background thread"):
        assert text in log, text
    os.write(2, b"after\n")   # stderr is back once the capture ends
    assert capfd.readouterr().err == "after\n"


def test_the_log_rotates_and_keeps_every_command(tmp_path, monkeypatch):
    monkeypatch.setattr(runlog, "MAX_BYTES", 1000)   # about five commands' headers
    for n in range(25):
        with runlog.Capture():
            runlog.attach(str(tmp_path), [f"command-{n}"])
    names = sorted(os.listdir(tmp_path))
    assert names == ["lth.log", "lth.log.1", "lth.log.2", "lth.log.3"], names   # three old logs kept
    assert "command: lth command-24\n" in (tmp_path / "lth.log").read_text()
    assert all(os.path.getsize(tmp_path / n) <= 1000 for n in names)   # bounded: the oldest logs go
    logged = "".join((tmp_path / n).read_text() for n in names)
    assert "command-0\n" not in logged and logged.count("==== ") >= 15


# ----- checksums --------------------------------------------------------------------------------------
TREE = {"a": jnp.arange(6.0).reshape(2, 3), "b": {"c": jnp.ones(4, jnp.int32)}}


def test_a_silently_changed_checkpoint_fails_its_checksums(tmp_path):
    """A checkpoint that tensorstore reads without complaint but whose arrays differ from what was
    written (a flipped bit; here another checkpoint's data files copied in) is refused, naming the
    array and the directory a --repair recomputes."""
    p, other = str(tmp_path / "arm" / "final"), str(tmp_path / "other")
    checkpoint.save(p, TREE)
    assert json.load(open(checkpoint.sums_path(p)))["arrays"].keys() == {"['a']", "['b']['c']"}
    checkpoint.save(other, {"a": TREE["a"] + 1, "b": TREE["b"]})
    shutil.rmtree(p)
    shutil.copytree(other, p)
    with pytest.raises(Corrupt, match=r"\['a'\]") as e:
        checkpoint.load(p, TREE, redo=str(tmp_path / "arm"))
    assert e.value.redo == str(tmp_path / "arm") and "--repair" in str(e.value)


def test_a_torn_write_is_found_when_it_is_written(tmp_path, monkeypatch):
    real = ocp.StandardCheckpointer.save

    def torn(self, directory, state, **kw):   # the bytes that reach the disk are not the ones given
        return real(self, directory, {**state, "a": state["a"] * 0}, **kw)
    monkeypatch.setattr(ocp.StandardCheckpointer, "save", torn)
    with pytest.raises(Corrupt, match="differ from the checksums"):
        checkpoint.save(str(tmp_path / "final"), TREE, redo=str(tmp_path))


def test_a_corrupt_rolling_checkpoint_names_its_folder_for_repair(tmp_path):
    """Mid-training checkpoints keep their checksums in their metadata; a corrupt one is redone by
    moving the arm's ckpt/ folder away (the arm restarts from its start)."""
    with checkpoint.Rolling(str(tmp_path / "ckpt")) as r:
        r.save(10, TREE, {"history": []})
        state, meta = r.latest(TREE)
        assert meta == {"history": []} and np.array_equal(state["a"], TREE["a"])
    garble(tmp_path / "ckpt" / "10" / "state")
    with checkpoint.Rolling(str(tmp_path / "ckpt")) as r, pytest.raises(Corrupt) as e:
        r.latest(TREE)
    assert e.value.redo == str(tmp_path / "ckpt") and "ckpt/10 is unreadable" in str(e.value)


# ----- corrupt checkpoint: one line, then --repair -----------------------------------------------------
def test_a_corrupt_level_is_one_line_then_repaired_to_the_same_result(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    garble(run / "level_1" / "final")
    before = snapshot(run)
    assert main(argv(run)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lth: error: checkpoint ") and "level_1/final is unreadable" in err[0] \
        and "rerun with --repair" in err[0] and f"(log: {run / runlog.LOG})" in err[0], err
    after = snapshot(run)   # nothing touched but the summary (rewritten from the finished arms as they load)
    assert {k: v for k, v in after.items() if k != "summary.json"} == {k: v for k, v in before.items()
                                                                       if k != "summary.json"}
    assert "Traceback" in (run / runlog.LOG).read_text()                   # the detail is in the log

    assert main(argv(run, "--repair")) == 0
    out = capsys.readouterr()
    assert "repair: checkpoint" in out.out and out.err == ""
    (moved,) = os.listdir(run / "quarantine")                              # kept, never deleted
    assert moved.startswith("level_1-") and os.path.isdir(run / "quarantine" / moved / "final")
    ref, got = (json.load(open(os.path.join(d, "summary.json"))) for d in (finished_run, run))
    assert got["levels"] == ref["levels"]                                  # recomputed to the same result
    a, b = (open(os.path.join(d, "level_1", "final.sums.json")).read() for d in (finished_run, run))
    assert a == b                                                          # the same arrays, bit for bit


# ----- the program itself: counted lines -----------------------------------------------------------------
def cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "lth.cli", *args], capture_output=True, text=True, env=env, cwd=cwd)


@pytest.mark.slow
def test_corrupt_checkpoint_prints_exactly_one_line_from_the_program(finished_run, tmp_path):
    """As a program (orbax's and asyncio's reports at shutdown included) stderr is one line."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    garble(run / "level_0" / "final")
    r = cli(*argv(run))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "level_0/final is unreadable" in lines[0], r.stderr
    assert "Traceback" in (run / runlog.LOG).read_text()


@pytest.mark.slow
def test_sigterm_is_one_line_and_the_rerun_resumes(finished_run, tmp_path):
    """SIGTERM mid-level: exit 143 and one line; the rerun finishes like an uninterrupted run."""
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-m", "lth.cli", *argv(run)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    ckpt = run / "level_1" / "ckpt"
    while p.poll() is None and not (ckpt.exists() and any(n.isdigit() for n in os.listdir(ckpt))):
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert p.returncode == 143 and len(lines) == 1 and lines[0].startswith("lth: error: stopped by SIGTERM") \
        and "rerun the same command to resume" in lines[0], err
    assert main(argv(run)) == 0
    ref, got = (json.load(open(os.path.join(d, "summary.json"))) for d in (finished_run, run))
    assert got["levels"] == ref["levels"]


def _mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("a real full disk needs a tmpfs (root)")


@pytest.mark.slow
def test_a_real_full_disk_is_one_line_and_the_moved_run_resumes(tmp_path):
    """The run directory on a 256 KB tmpfs: exit 4, one line naming where, the rest in the log; the
    directory moved to a disk with room resumes to the uninterrupted result."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "256k")
    try:
        r = cli(*argv(disk / "run", "--set", "lottery.levels=2"))
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 4 and len(lines) == 1 and lines[0].startswith("lth: error: disk full while writing ") \
            and str(disk / "run") in lines[0] and "free space and rerun" in lines[0], r.stderr
        shutil.copytree(disk / "run", tmp_path / "moved", ignore=shutil.ignore_patterns(".lock"))
    finally:
        subprocess.run(["umount", str(disk)])
    assert main(argv(tmp_path / "moved", "--set", "lottery.levels=2")) == 0
    assert main(argv(tmp_path / "whole", "--set", "lottery.levels=2")) == 0
    ref, got = (json.load(open(tmp_path / d / "summary.json")) for d in ("whole", "moved"))
    assert got["levels"] == ref["levels"]
    assert np.isfinite([lv["test_accuracy"] for lv in got["levels"]]).all()
