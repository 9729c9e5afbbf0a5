"""Extending lth from outside the package: a score with an option, a model family, a dataset, a layer-density
distribution and a study, each registered by a user's own module with lth.register, then used through the
CLI and the API — no file of lth touched. Also: docs/pages/extending.md's lists of files to add or touch
hold for every built-in entry (each registered by one line in the file it names)."""
from __future__ import annotations

import importlib
import json
import os
import re

import jax
import numpy as np
import pytest
from conftest import DEMO, ROOT, TINY

import lth
from lth import registry
from lth.cli import main

PLUGIN = '''"""A user's extension of lth: every kind of entry, registered from outside the package."""
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import lth
from lth.data import Source
from lth.harness.identity import Command
from lth.harness.run import BASE_SECTIONS, init_variables, keys, train_arm
from lth.harness.rundir import write_json
from lth.harness.summary import arm_entry
from lth.models.zoo import Family
from lth.options import options
from lth.pruning import masks as M
from lth.scores import Score
from lth.training.loop import device_data


# a score with an option: |w| plus noise of a declared scale (0: magnitude's ranking)
def noisy_magnitude(apply_fn, variables, masks, batch, rng, scale):
    leaves, treedef = jax.tree.flatten(variables["params"])
    ks = jax.random.split(rng, len(leaves))
    return jax.tree.unflatten(treedef, [jnp.abs(w) + scale * jax.random.normal(k, w.shape) for w, k in zip(leaves, ks)])


lth.register("score", "noisy_magnitude", Score(noisy_magnitude, False, {"scale": "noise_scale"},
                                               declares=options(noise_scale=(0.0, "noise added to |w|"))))


# a model family
class Blob(nn.Module):
    hidden: int
    num_classes: int

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Dense(self.hidden, name="fc_0")(x.reshape((x.shape[0], -1))))
        return nn.Dense(self.num_classes, name="out")(x)


def blob(m, classes, init, shape, width):
    return Blob(int(m.group(1)), classes)


lth.register("model", "blob", Family({r"blob_(\\d+)": (blob, "a one-hidden-layer net")}, ((8,), 3, 32)))


# a dataset: three Gaussian blobs in 8 dimensions
def blobs(cfg):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (3, 8))
    y = rng.integers(0, 3, 900)
    x = (centers[y] + rng.normal(0, 1, (900, 8))).astype(np.float32)
    return (x[:700], y[:700]), (x[700:], y[700:]), 3


lth.register("dataset", "blobs", Source(blobs, "three Gaussian blobs", ((8,), 3)))


# a layer-density distribution: the last layer dense, the others uniform (no budget kept: a toy)
@lth.register("distribution", "dense_last")
def dense_last(shapes, density, custom, resnet=False):
    names = list(shapes)
    return {n: 1.0 if n == names[-1] else custom.get(n, density) for n in names}


# a study with its own option: `arms` dense arms from different init streams
COMMAND = Command("twins", BASE_SECTIONS + ("twins",), prefix="twins_")
OPTIONS = {"twins": options(arms=(1, "dense arms, each from its own init stream"))}
HELP = "train the config's model `twins.arms` times"
DESCRIPTION = "Dense arms, one per init stream."
PLOT_FILE = "twins.txt"


def describe(s):
    return f"{s.cfg.model.name} on {s.cfg.data.name}"


def run(s, run_dir, log=print):
    rows = []
    for a in range(s.cfg.twins.arms):
        p, ms = init_variables(s, keys(s, "init", a))
        _, r = train_arm(s, os.path.join(run_dir, f"arm_{a}"), p, ms, M.ones_like(p), 0,
                         device_data(s.trainer, s.dataset))
        rows.append(arm_entry(r, arm=f"arm_{a}"))
    summary = {"arms": rows}
    write_json(os.path.join(run_dir, "summary.json"), summary)
    return summary


def table(summary):
    return "| arm | test accuracy |\\n|---|---|\\n" + "".join(
        f"| {e['arm']} | {e['test_accuracy']:.4f} |\\n" for e in summary["arms"])


def plot(summary, path):
    with open(path, "w") as f:
        f.write(table(summary))
    return path


lth.register("study", "twins", sys.modules[__name__])
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The user's module imported; every registry restored afterwards."""
    for reg in registry.KINDS.values():
        reg.names()   # the built-ins first
        monkeypatch.setattr(reg, "_entries", dict(reg._entries))
    (tmp_path / "lth_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "lth_plugin", raising=False)
    return importlib.import_module("lth_plugin")


def test_registered_score_model_dataset_distribution(plugin):
    """The score, with its declared option, through the API (0 noise ranks as magnitude; noise moves it);
    the model family and dataset through the API; the distribution through lth.sparsity."""
    from lth.harness.config import base

    cfg = base()
    assert cfg.pai.noise_scale == 0.0 and cfg.twins.arms == 1   # the schema holds the declared options
    ds = lth.load_data("blobs", validation_size=100)
    assert ds.x_train.shape == (600, 8) and ds.num_classes == 3
    model = lth.build_model("blob_16", 3, (8,))
    variables = model.init(jax.random.PRNGKey(0), ds.x_train[:2])
    mag = lth.score("magnitude", model.apply, variables)
    quiet = lth.score("noisy_magnitude", model.apply, variables)
    loud = lth.score("noisy_magnitude", model.apply, variables, noise_scale=1.0)
    for a, b, c in zip(jax.tree.leaves(mag), jax.tree.leaves(quiet), jax.tree.leaves(loud)):
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c)
    with pytest.raises(lth.UserError, match="noise_scal"):
        lth.score("noisy_magnitude", model.apply, variables, noise_scal=1.0)
    shapes = {"fc_0": (8, 16), "out": (16, 3)}
    assert lth.sparsity.densities(shapes, 0.3, "dense_last") == {"fc_0": 0.3, "out": 1.0}


@pytest.mark.slow   # over ~20 s on 2 cores: `make test-all`
def test_registered_study_through_cli_and_api(plugin, tmp_path, capsys, monkeypatch):
    """The study gets `lth twins` (its option settable with --set, part of its identity), a locked,
    resumable run directory, a table and a plot, `lth.twins` and `lth.open_run`; the registered score
    runs in a built-in study (`lth pai`) with its option set from the command line."""
    from lth.harness import run as harness
    from lth.harness import rundir

    out = tmp_path / "runs"
    sets = TINY + ["model.name=blob_16", "data.name=blobs", "data.validation_size=100", "train.batch_size=50",
                   "twins.arms=2"]
    args = ["twins", "--config", DEMO, "--no-progress", "--out", str(out)] + [a for t in sets for a in ("--set", t)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| arm_0 |" in text and "| arm_1 |" in text and "plot: " in text
    (run_dir,) = list(out.iterdir())
    assert run_dir.name.startswith("twins_mnist1d_mlp-")
    stored = json.load(open(run_dir / "config.json"))
    assert stored["identity"]["twins"] == {"arms": 2} and stored["identity"]["data"]["name"] == "blobs"
    with monkeypatch.context() as m:
        m.setattr(harness, "fit", lambda *a, **k: pytest.fail("a finished arm was trained again"))
        assert main(args) == 0 and "| arm_1 |" in capsys.readouterr().out   # resumed: nothing trained
    lock = rundir.RunLock(str(run_dir))
    assert main(args) == 2 and "in use by process" in capsys.readouterr().err
    lock.release()
    r = lth.open_run(run_dir)
    assert r.study == "twins" and r.table() == lth.twins(DEMO, sets, out=out).table()
    assert open(r.plot()).read() == r.table()
    assert main(["twins", "--config", DEMO, "--set", "twins.arms=zero"]) == 2
    assert "twins.arms" in capsys.readouterr().err

    pai = ["pai", "--config", DEMO, "--no-progress", "--out", str(out)] + [a for t in TINY + [
        "pai.methods=noisy_magnitude", "pai.noise_scale=0.5", "pai.compression=2"] for a in ("--set", t)]
    assert main(pai) == 0
    (pai_dir,) = [d for d in out.iterdir() if d.name.startswith("pai_")]
    summary = json.load(open(pai_dir / "summary.json"))
    assert [a["method"] for a in summary["arms"]] == ["noisy_magnitude"]
    assert json.load(open(pai_dir / "config.json"))["identity"]["pai"]["noise_scale"] == 0.5


# docs/pages/extending.md: per kind, the registry and the file holding the built-ins' one-line registrations
def extending_rows():
    text = open(os.path.join(ROOT, "docs", "pages", "extending.md")).read()
    return re.findall(r"^\| (score|model|dataset|distribution|sparse_method|study) \| `([^`]+)` \| `([^`]+)` \|",
                      text, re.M)


def test_extending_page_names_the_one_registry_line_of_every_builtin():
    """For each kind the page lists, its registry file registers every built-in entry in one line
    (`REGISTRY.add("name", ...)`), and no other lth file registers that kind: adding one is its module
    plus one line there."""
    rows = extending_rows()
    assert {k for k, _, _ in rows} == set(registry.KINDS)
    sources = {}
    for dp, _, fs in os.walk(os.path.join(ROOT, "lth")):
        for f in fs:
            if f.endswith(".py"):
                path = os.path.join(dp, f)
                sources[os.path.relpath(path, ROOT)] = open(path).read()
    for kind, registry_name, where in rows:
        reg = registry.KINDS[kind]
        assert getattr(registry, registry_name) is reg
        found = {}
        for path, src in sources.items():
            for name in re.findall(rf'{registry_name}\.add\(\s*f?"([^"]+)"', src):
                if "{" not in name:   # a loop's f-string (the GLUE tasks) is checked below
                    found.setdefault(path, set()).add(name)
        assert set(found) == {where}, f"{kind}: registered in {sorted(found)}, the page says {where}"
        builtins = set(reg.names())
        listed = found[where] | ({n for n in builtins if n.startswith("glue/")} if kind == "dataset" else set())
        assert builtins == listed, f"{kind}: {sorted(builtins ^ listed)}"
