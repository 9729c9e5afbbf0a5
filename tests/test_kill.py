"""Kill anywhere, rerun, same result: every study (lottery, pai, sparse, compare, stability, compress,
oneshot, collapse) run as `python -m lth.cli ...` is SIGKILLed LTH_KILLS times (default 2) at random points in
one run directory, then run to the end; its summary must equal an uninterrupted run's byte for byte
(less the wall-clock fields the study records, named per study in STUDIES).

Each study: a cold uninterrupted run A (it also fills the JAX compilation cache), a warm uninterrupted
run B (its wall time is T, and A == B checks that the study is deterministic, so a difference after
the kills is the resume's fault), then in a fresh directory K starts of the same command, each
SIGKILLed after a delay drawn uniformly from [0.5 s, T] (random.Random(LTH_KILL_SEED), default
fixed: a failure reproduces; the K delays are used earliest first), and one more start that must
finish. The delays and the kills that landed (return code -9; a start whose work was already done can
finish first) are printed. lottery's A and B are made once per session and shared (compress,
oneshot and stability work on copies of B).

Where a study writes absolute paths (compare's and stability's sub-runs, compress's and oneshot's
run directory)
each run lives under its own root, and the reference's root is replaced by the resumed run's before
comparing."""
import fcntl
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import DEMO, ROOT, TINY

SEED = int(os.environ.get("LTH_KILL_SEED", "0"))
KILLS = int(os.environ.get("LTH_KILLS", "2"))
MIN_DELAY = 0.5

pytestmark = pytest.mark.slow


def sets(items):
    return [a for t in items for a in ("--set", t)]


# lottery's uninterrupted run is shared: compress and oneshot work on a copy of it, stability reuses a copy as
# its k = 0 IMP run (same identity: lottery.levels and .controls are not part of it)
LOTTERY = ["lottery", "--config", DEMO, "--no-progress"] + sets(TINY)   # levels 0-2, reinit and random_prune
STAB = TINY + ["stability.rewind_points=0it,20it", "stability.alphas=5", "stability.levels=1"]


def argv_lottery(root):
    return LOTTERY + ["--run-dir", os.path.join(root, "run")]


def argv_pai(root):
    return ["pai", "--config", DEMO, "--no-progress", "--run-dir", os.path.join(root, "run")] + sets(
        TINY + ["pai.methods=snip,random", "pai.compression=10^1", "pai.sanity=shuffle"])


def argv_sparse(root):
    return ["sparse", "--config", DEMO, "--no-progress", "--run-dir", os.path.join(root, "run")] + sets(
        TINY + ["sparse.every=5it", "sparse.end=40it", "sparse.densities=0.1", "sparse.distributions=erk",
                "sparse.methods=gmp,rigl"])


def argv_compare(root):
    return ["compare", "--config", DEMO, "--no-progress", "--run-dir", os.path.join(root, "run")] + sets(
        TINY + ["train.duration=40it", "prune.fraction=0.6", "compare.densities=0.2", "compare.pai=snip",
                "compare.sparse=static", "compare.distributions=erk", f"run.out={os.path.join(root, 'out')}"])


def argv_stability(root):
    return ["stability", "--config", DEMO, "--no-progress", "--run-dir", os.path.join(root, "run")] + sets(
        STAB + [f"run.out={os.path.join(root, 'out')}"])


def argv_compress(root):
    return ["compress", "--run-dir", os.path.join(root, "lottery"), "--level", "1", "--no-progress"] + sets(
        ["compress.qat_duration=30it", "train.distill.teacher=level_0", "run.checkpoint_every=5it"])


def argv_oneshot(root):
    return ["oneshot", "--run-dir", os.path.join(root, "lottery"), "--level", "1", "--no-progress"] + sets(
        ["oneshot.methods=wanda,sparsegpt", "oneshot.sparsities=0.5", "oneshot.patterns=", "oneshot.recovery=20it",
         "oneshot.calibration=64", "run.checkpoint_every=5it"])


def argv_collapse(root):
    return ["collapse", "--model", "lenet_20_10", "--dataset", "mnist1d", "--methods", "synflow,snip,magnitude,random",
            "--max-log10", "2", "--step", "0.25", "--init", "kaiming_normal", "--rounds", "0",
            "--run-dir", os.path.join(root, "run")]


def prepare_stability(root, lottery_run):
    """The k = 0 IMP run, a copy of lottery's, where stability looks for it (k = 20's it runs itself)."""
    from lth.harness.config import load_config
    from lth.studies import stability

    cfg = load_config(DEMO, STAB + [f"run.out={os.path.join(root, 'out')}"])
    shutil.copytree(lottery_run, stability.LOTTERY.run_dir(stability.ticket_config(cfg, "0it", [1])))


def prepare_from_run(root, lottery_run):
    """A copy of lottery's run, for a study of one of its levels (FROM_RUN: compress, oneshot)."""
    shutil.copytree(lottery_run, os.path.join(root, "lottery"))


def summary_file(root):
    return os.path.join(root, "run", "summary.json")


def compress_results(root):
    (path,) = glob.glob(os.path.join(root, "lottery", "compress", "level_1-*", "results.json"))
    return path


def oneshot_results(root):
    (path,) = glob.glob(os.path.join(root, "lottery", "oneshot", "level_1-*", "results.json"))
    return path


# study: (argv of a root, its result file, preparation of a root (root, lottery run), fields left out
# of the comparison because they hold wall-clock times)
STUDIES = {
    "lottery": (argv_lottery, summary_file, None, ()),
    "pai": (argv_pai, summary_file, None, ()),
    # "seconds": each arm's training wall time (metrics.json, summed over resumed sessions)
    "sparse": (argv_sparse, summary_file, None, ("seconds",)),
    # "seconds": the sparse arms' training wall time, copied into methods.*.points
    "compare": (argv_compare, summary_file, None, ("seconds",)),
    "stability": (argv_stability, summary_file, prepare_stability, ()),
    "compress": (argv_compress, compress_results, prepare_from_run, ()),
    "oneshot": (argv_oneshot, oneshot_results, prepare_from_run, ()),
    # "seconds", "score_s", "select_s": each method's scoring / selection wall time (methods.*)
    "collapse": (argv_collapse, summary_file, None, ("seconds", "score_s", "select_s")),
}


# ----- processes ----------------------------------------------------------------------------------
def start(argv, log):
    """`python -m lth.cli argv` in its own session (so a kill reaches all of it), output to `log`."""
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")   # the log holds what it printed before the kill
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "lth.cli"] + argv, stdout=f, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT, start_new_session=True)


def tail(log, n=3000):
    with open(log) as f:
        return f.read()[-n:]


def run_to_end(argv, log, timeout=600):
    """Run to completion: its wall time; exit 0 asserted."""
    t0 = time.perf_counter()
    p = start(argv, log)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise AssertionError(f"lth {argv[0]} did not finish in {timeout} s:\n{tail(log)}") from None
    assert rc == 0, f"lth {argv[0]} exited {rc}:\n{tail(log)}"
    return time.perf_counter() - t0


def run_killed(argv, log, delay):
    """Start, and SIGKILL after `delay` s unless it finished first: True if the kill landed."""
    p = start(argv, log)
    try:
        rc = p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:   # the group's last process is gone
            pass
        rc = p.wait()
    if rc == -signal.SIGKILL:
        return True
    # it finished before the kill (or between the wait's timeout and the kill)
    assert rc == 0, f"lth {argv[0]} (a rerun after a kill) exited {rc}:\n{tail(log)}"
    return False


def progress(root):
    """Where a run stands: (finished arms, points and levels: metrics.json, stability.json and collapse's
    point files; the steps of the mid-arm rolling checkpoints, <arm>/ckpt/<step>)."""
    done, steps = 0, []
    for d, dirs, files in os.walk(root):
        done += sum(f in ("metrics.json", "stability.json") or
                    (f.endswith(".json") and os.path.basename(os.path.dirname(d)) == "points") for f in files)
        if os.path.basename(d) == "ckpt":
            steps += sorted(int(n) for n in dirs if n.isdigit())
    return done, steps


# ----- comparison ---------------------------------------------------------------------------------
def without(obj, fields, where="", found=None):
    """`obj` less the keys `fields` at any depth; the paths where they were are added to `found`."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in fields:
                found.append(f"{where}/{k}")
            else:
                out[k] = without(v, fields, f"{where}/{k}", found)
        return out
    if isinstance(obj, list):
        return [without(v, fields, f"{where}/{i}", found) for i, v in enumerate(obj)]
    return obj


def assert_same(ref: bytes, got: bytes, fields, what):
    """Byte for byte, or, with wall-clock `fields`, the JSON less those (present at the same places)."""
    if not fields:
        assert got == ref, f"{what}: the resumed run's result differs from the uninterrupted run's"
        return
    fa, fb = [], []
    a, b = without(json.loads(ref), fields, found=fa), without(json.loads(got), fields, found=fb)
    assert fa == fb, (what, fa, fb)
    assert json.dumps(b, indent=1) == json.dumps(a, indent=1), \
        f"{what}: the resumed run's result (less {fields}) differs from the uninterrupted run's"


def read(path, root, into_root):
    with open(path, "rb") as f:
        return f.read().replace(root.encode(), into_root.encode())


# ----- the harness --------------------------------------------------------------------------------
def uninterrupted(tmp, study, lottery_run=None):
    """Runs A (cold) and B (warm), each under its own root: (B's wall time T, B's result, B's root)."""
    argv_of, result, prepare, fields = STUDIES[study]
    out = []
    for name in ("A", "B"):
        root = str(tmp / name)
        os.makedirs(root)
        if prepare:
            prepare(root, lottery_run)
        seconds = run_to_end(argv_of(root), os.path.join(root, "log.txt"))
        out.append((seconds, result(root), root))
    (_, ra, a), (t, rb, b) = out
    assert_same(read(ra, a, b), read(rb, b, b), fields, f"{study}: two uninterrupted runs")
    return t, rb, b


@pytest.fixture(scope="session")
def lottery_reference(tmp_path_factory, worker_id):
    """lottery's uninterrupted runs, made once per session: under xdist by the first worker that asks
    (the others wait on a lock file in the session's shared temporary folder and read its record)."""
    if worker_id == "master":
        return uninterrupted(tmp_path_factory.mktemp("kill-lottery-ref"), "lottery")
    shared = tmp_path_factory.getbasetemp().parent
    record = shared / "kill-lottery-ref.json"
    with open(shared / "kill-lottery-ref.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes
        if not record.exists():
            record.write_text(json.dumps(uninterrupted(tmp_path_factory.mktemp("kill-lottery-ref"), "lottery")))
        return tuple(json.loads(record.read_text()))


@pytest.mark.parametrize("study", list(STUDIES))
def test_killed_anywhere_resumes_to_the_same_result(study, tmp_path, request):
    argv_of, result, prepare, fields = STUDIES[study]
    lottery_run = None
    if study == "lottery" or prepare is not None:
        lt, lres, lroot = request.getfixturevalue("lottery_reference")
        lottery_run = os.path.join(lroot, "run")
    if study == "lottery":
        t, ref, ref_root = lt, lres, lroot
    else:
        t, ref, ref_root = uninterrupted(tmp_path / "ref", study, lottery_run)
    root = str(tmp_path / "cut")
    os.makedirs(root)
    if prepare:
        prepare(root, lottery_run)
    argv = argv_of(root)
    rng = random.Random(f"{SEED}-{study}")
    # earliest first: a later start resumes with less left to do, so a later kill is the one that may
    # come after the end
    delays = sorted(round(rng.uniform(MIN_DELAY, max(t, MIN_DELAY)), 2) for _ in range(KILLS))
    landed, where = [], []
    for i, d in enumerate(delays):
        landed.append(run_killed(argv, os.path.join(root, f"kill_{i}.txt"), d))
        where.append(progress(root))
    run_to_end(argv, os.path.join(root, "final.txt"))
    mid = sum(k and bool(steps) for k, (_, steps) in zip(landed, where))
    print(f"kill harness {study}: T = {t:.1f} s, K = {KILLS}, seed {SEED}, delays {delays} s, "
          f"landed {landed} ({sum(landed)}/{KILLS}, {mid} left a mid-arm checkpoint); after each start "
          f"(results done, checkpoint steps): {where}")
    assert_same(read(result(ref_root), ref_root, root), read(result(root), root, root), fields,
                f"{study} after kills at {delays} s (landed {landed})")
    assert KILLS == 0 or any(landed), \
        f"{study}: no kill landed before the run finished (delays {delays} s, T {t:.1f} s)"
