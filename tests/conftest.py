"""Shared tiny settings: narrow MLPs on MNIST-1D, tens of iterations."""
import os
import shutil
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "mnist1d_mlp.py")

def pytest_configure(config):
    """One JAX compilation cache for the whole session, shared by the xdist workers and the
    subprocesses the tests start (they inherit the environment): the same tiny models compile in
    many tests and processes, and a cache hit skips XLA's compile (the suite runs ~1/3 faster)."""
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ and not hasattr(config, "workerinput"):
        config._lth_jax_cache = tempfile.mkdtemp(prefix="lth-jax-cache-")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = config._lth_jax_cache
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")


def pytest_unconfigure(config):
    if getattr(config, "_lth_jax_cache", None):
        shutil.rmtree(config._lth_jax_cache, ignore_errors=True)
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)


TINY = [
    "model.name=lenet_24_12", "train.batch_size=50", "train.duration=60it", "train.eval_every=20it",
    "train.optimizer=sgd", "train.lr=0.05", "train.momentum=0.9", "train.weight_decay=1e-4",
    "lottery.levels=2", "run.checkpoint_every=10it", "run.progress=False", "prune.layer_fractions=",
    "replicates=1",
]


def tiny_config(*extra):
    from lth.harness.config import load_config

    return load_config(DEMO, TINY + list(extra))


@pytest.fixture
def tiny():
    return tiny_config


LOTTERY = ["lottery", "--config", DEMO, "--no-progress"] + [a for t in TINY for a in ("--set", t)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished lottery run (levels 0 and 1, no controls), one per test module."""
    from lth.cli import main

    out = tmp_path_factory.mktemp("runs")
    assert main(LOTTERY + ["--set", "lottery.levels=1", "--set", "lottery.controls=", "--out", str(out)]) == 0
    (run_dir,) = [os.path.join(out, d) for d in os.listdir(out)]
    return run_dir


def assert_refused(capsys, command, sets, cases, out):
    """Each (bad setting, message) of `cases` on top of `sets`: exit 2, one line naming it, and
    nothing written under `out`."""
    from lth.cli import main

    listing = sorted(os.listdir(out))
    for bad, needle in cases:
        bads = list(bad) if isinstance(bad, (list, tuple)) else [bad]   # one setting, or several together
        argv = [command, "--config", DEMO, "--out", str(out)] + [a for x in list(sets) + bads for a in ("--set", x)]
        assert main(argv) == 2, bad
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (bad, err)
    assert sorted(os.listdir(out)) == listing
