"""The command line: help, and one-line errors (exit 2) for bad input that leave files untouched."""
import hashlib
import os
import re
import subprocess
import sys

import pytest
from conftest import DEMO, ROOT, TINY
from conftest import LOTTERY as BASE

from lth.cli import main


def snapshot(path):
    """{file: sha256} under `path`, but the run's log (every command appends to it)."""
    out = {}
    for d, _, files in os.walk(path):
        for f in files:
            if f.startswith("lth.log"):
                continue
            p = os.path.join(d, f)
            out[os.path.relpath(p, path)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def fails(capsys, argv, *needles):
    with pytest.raises(SystemExit) as e:
        code = main(argv)
        raise SystemExit(code)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize("extra,needles", [
    (["--set", "model.name=resnet999"], ["'resnet999'", "allowed"]),
    (["--set", "data.name=imagenet"], ["'imagenet'", "mnist1d"]),
    (["--set", "train.optimizer=rmsprop"], ["'rmsprop'", "sgd"]),
    (["--set", "prune.fraction=1.5"], ["1.5", "0 < fraction < 1"]),
    (["--set", "prune.fraction=0"], ["0.0", "0 < fraction < 1"]),
    (["--set", "lottery.levels=-1"], ["-1", "0 or more"]),
    (["--set", "lottery.rewind=500it"], ["'500it'", "rewind < 60"]),
    (["--set", "train.lrr=0.1"], ["'train.lrr'", "train.lr"]),
    (["--set", "lottery.levels=many"], ["'many'", "int"]),
    (["--set", "lottery.controls=reinit,bogus"], ["'bogus'", "random_prune"]),
    (["--set", "train.distill.teacher=level_0", "--set", "train.distill.alpha=2"], ["alpha 2.0", "0 <= alpha <= 1"]),
    (["--set", "train.distill.teacher=/nonexistent/level_0"], ["/nonexistent/level_0", "no finished level"]),
    (["--set", "data.name=mnist", "--set", "data.data_dir=/nonexistent/tfds"],
     ["'mnist'", "not prepared", "lth data prepare mnist"]),
    (["--set", "model.share_layers=2"], ["model.share_layers 2 needs a BERT model", "'lenet_24_12'"]),
    (["--set", "prune.structure=heads"], ["'heads'", "units, weights"]),
    (["--set", "prune.structure=units", "--set", "prune.layer_fractions=out=0.1"],
     ["layer pattern 'out' matches no prunable layer", "fc_0/kernel"]),
])
def test_bad_input_one_line_exit_2_and_nothing_written(capsys, tmp_path, extra, needles):
    fails(capsys, BASE + extra + ["--out", str(tmp_path)], *needles)
    assert os.listdir(tmp_path) == []


def test_unknown_command_and_missing_config(capsys):
    fails(capsys, ["prune-everything"], "'prune-everything'", "lottery")
    fails(capsys, ["lottery", "--config", "configs/nope.py"], "configs/nope.py", "get_config")


def test_run_dir_of_another_config_is_refused_untouched(capsys, finished_run):
    before = snapshot(finished_run)
    fails(capsys, BASE + ["--set", "train.lr=0.01", "--run-dir", finished_run], "another config", finished_run)
    assert snapshot(finished_run) == before


def test_rerun_skips_finished_levels_and_prints_table(capsys, finished_run):
    before = snapshot(finished_run)
    assert main(BASE + ["--set", "lottery.levels=1", "--set", "lottery.controls=", "--run-dir", finished_run]) == 0
    out = capsys.readouterr().out
    assert "| level | density % | ticket test accuracy % |" in out
    assert re.search(r"^\| 1 \| 79\.9\d \| \d+\.\d\d \|$", out, re.M), out
    after = snapshot(finished_run)
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed <= {"summary.json", "accuracy_vs_density.png"}  # nothing retrained


@pytest.mark.slow
def test_help_explains_every_option():
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "lth.cli", "lottery", "--help"], capture_output=True, text=True,
                         env=env, cwd=ROOT).stdout
    for opt in ("--config", "--set", "--replicates", "--out", "--run-dir", "--no-progress"):
        assert opt in out
    top = subprocess.run([sys.executable, "-m", "lth.cli", "--help"], capture_output=True, text=True, env=env,
                         cwd=ROOT).stdout
    for cmd in ("lottery", "data", "models"):
        assert cmd in top


def test_collapse_command_writes_summary_table_and_plots(capsys, tmp_path):
    out = tmp_path / "collapse"
    # zero biases (the SynFlow code's own MLP keeps PyTorch's nonzero default biases, which break the
    # conservation that guarantees reaching max compression)
    assert main(["collapse", "--model", "lenet_20_10", "--dataset", "mnist1d", "--methods", "synflow,magnitude",
                 "--max-log10", "1", "--step", "0.5", "--out-dir", str(out), "--init", "kaiming_normal"]) == 0
    text = capsys.readouterr().out
    assert "| synflow | 10^" in text and "| magnitude | 10^" in text
    import json
    s = json.load(open(out / "summary.json"))
    assert s["data"] == "mnist1d" and s["compressions_log10"][:3] == [0, 0.5, 1]
    assert s["init"] == {"name": "kaiming_normal", "init": "kaiming_normal", "bias_init": "zeros", "bn_init": "ones",
                         "out_init": "kaiming_normal"}
    syn = s["methods"]["synflow"]
    assert syn["reaches_max_compression"] and syn["critical_compression_log10"] == s["compressions_log10"][-1]
    for lg, kept in syn["kept_per_layer"].items():
        assert sum(kept.values()) == round(sum(s["layers"].values()) / 10 ** float(lg))
    assert (out / "layer_density.png").stat().st_size > 0 and (out / "critical_compression.png").stat().st_size > 0


@pytest.mark.parametrize("argv,needles", [
    (["--methods", "synflow,snap"], ["'snap'", "synflow"]),
    (["--max-log10", "9"], ["beyond max compression"]),
    (["--model", "vgg99"], ["'vgg99'"]),
])
def test_collapse_bad_input(capsys, tmp_path, argv, needles):
    fails(capsys, ["collapse", "--model", "lenet_20_10", "--dataset", "mnist1d", "--out-dir", str(tmp_path / "c")]
          + argv, *needles)
    assert not (tmp_path / "c").exists()


def _inverted_reference(scorer, v, prunable, density, rounds, rng):
    """pai.sanity `invert` by its definition, in numpy: each round keeps the live weights with the
    *lowest* scores (ties to the lower flat index), round(d_r · total) of them, d_r = density^(r/rounds)."""
    import jax
    import numpy as np

    from lth.pruning import masks as M
    masks, pr = M.ones_like(v["params"]), jax.tree.leaves(prunable)
    total = sum(a.size for a, p in zip(jax.tree.leaves(masks), pr) if p)
    for r in range(rounds):
        scores = scorer(v, masks, jax.random.fold_in(rng, r))
        s = np.concatenate([np.asarray(a).ravel() for a, p in zip(jax.tree.leaves(scores), pr) if p])
        m = np.concatenate([np.asarray(a).ravel() for a, p in zip(jax.tree.leaves(masks), pr) if p])
        live = np.flatnonzero(m)
        kept = np.zeros(m.size, bool)
        kept[live[np.argsort(s[live], kind="stable")][:round(density ** ((r + 1) / rounds) * total)]] = True
        leaves, off = [], 0
        for a, p in zip(jax.tree.leaves(masks), pr):
            leaves.append(kept[off:off + a.size].reshape(a.shape) if p else np.asarray(a))
            off += a.size if p else 0
        masks = jax.tree.unflatten(jax.tree.structure(masks), leaves)
    return masks


@pytest.mark.slow   # over ~20 s on 2 cores: `make test-all`
def test_pai_command_prunes_trains_and_runs_sanity_checks(capsys, tmp_path, monkeypatch):
    import jax
    import numpy as np

    from lth.harness import run as harness
    from lth.pruning import at_init as pai
    from lth.pruning import masks as M
    from lth.pruning import prune as P
    from lth.studies import pai as pai_run
    start, train_arm = {}, pai_run.train_arm

    def spy(s, adir, params, model_state, masks, step, data, **kw):   # every arm's state at step 0 of its training
        start["setup"] = s
        return train_arm(s, adir, params, model_state, masks, step, data,
                         captures={step: lambda st: start.__setitem__(kw["label"], st)}, **kw)
    monkeypatch.setattr(pai_run, "train_arm", spy)
    args = ["pai", "--config", DEMO, "--no-progress", "--out", str(tmp_path)] + [a for t in TINY for a in ("--set", t)]
    args += ["--set", "pai.methods=synflow,snip", "--set", "pai.compression=10^1", "--set", "pai.rounds=5",
             "--set", "pai.sanity=shuffle,invert,reinit", "--set", "pai.batch_size=64"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| synflow | shuffle | 10^1.00 |" in text and "| snip | invert | 10^1.00 |" in text
    import json
    (run,) = list(tmp_path.iterdir())
    s = json.load(open(run / "summary.json"))
    arms = {e["arm"]: e for e in s["arms"]}
    assert set(arms) == {f"{n}@10^1" for n in ("synflow", "snip", "synflow+shuffle", "synflow+invert", "snip+shuffle",
                                               "snip+invert", "synflow+reinit", "snip+reinit")}
    syn, sh = arms["synflow@10^1"], arms["synflow+shuffle@10^1"]
    assert abs(syn["density"] - 0.1) < 1e-3
    assert syn["replicates"][0]["density_per_layer"] == sh["replicates"][0]["density_per_layer"]
    assert (run / "accuracy_vs_compression.png").stat().st_size > 0
    # reinit: the method's own mask, trained from a fresh draw of the same initializer (the run's
    # `reinit` stream), not from the method's init; invert: the lowest-scoring weights, as many
    s = start["setup"]
    init, _ = harness.random_init(s, harness.keys(s, "init"))
    fresh, _ = harness.random_init(s, harness.keys(s, "reinit"))
    pr = jax.tree.leaves(s.prunable)
    leaves = lambda t: [np.asarray(a) for a in jax.tree.leaves(t)]  # noqa: E731
    for method in ("synflow", "snip"):
        base, reinit, inv = (start[f"{method}{c}@10^1"] for c in ("", "+reinit", "+invert"))
        for a, b in zip(leaves(reinit.masks), leaves(base.masks)):
            np.testing.assert_array_equal(a, b)
        for w, w0, m in zip(leaves(base.params), leaves(init), leaves(base.masks)):
            np.testing.assert_array_equal(w, np.where(m, w0, 0))
        for w, w0, w1, m, p in zip(leaves(reinit.params), leaves(init), leaves(fresh), leaves(base.masks), pr):
            np.testing.assert_array_equal(w, np.where(m, w1, 0))
            assert not p or (not np.any((w1 == w0)[m]) and 0.7 < np.std(w1) / np.std(w0) < 1.4)
        v = {"params": M.index(init, 0)}
        want = _inverted_reference(s.scorer(method, v), v, s.prunable, 0.1, 5, harness.keys(s, "pai_score")[0])
        for a, b in zip(leaves(M.index(inv.masks, 0)), leaves(want)):
            np.testing.assert_array_equal(a, b)
        # shuffle: the method's mask, each layer permuted with the run's `shuffle` key
        shuffled = P.shuffle(M.index(base.masks, 0), s.prunable, harness.keys(s, "shuffle")[0])
        for a, b in zip(leaves(M.index(start[f"{method}+shuffle@10^1"].masks, 0)), leaves(shuffled)):
            np.testing.assert_array_equal(a, b)
        total = sum(a.size for a, p in zip(leaves(want), pr) if p)
        kept = [sum(pai.kept_per_layer(M.index(t.masks, 0), s.prunable).values()) for t in (base, reinit, inv)]
        assert kept == [round(0.1 * total)] * 3


@pytest.mark.parametrize("extra,needles", [
    (["--set", "pai.compression=0.5"], ["0.5", ">= 1"]),
    (["--set", "pai.compression=10^6"], ["beyond max compression"]),
    (["--set", "pai.rounds=-1"], ["-1"]),
    (["--set", "pai.methods=bogus"], ["'bogus'"]),
    (["--set", "pai.sanity=flip"], ["'flip'", "shuffle"]),
    (["--set", "train.distill.teacher=level_0"], ["`lth pai` does not distill", "lth lottery, lth compress"]),
])
def test_pai_bad_input(capsys, tmp_path, extra, needles):
    args = ["pai", "--config", DEMO, "--no-progress", "--out", str(tmp_path)] + [a for t in TINY for a in ("--set", t)]
    fails(capsys, args + extra, *needles)
    assert os.listdir(tmp_path) == []


def test_layer_collapse_experiment_script(capsys, tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("exp", os.path.join(ROOT, "experiments", "synflow_layer_collapse.py"))
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    monkeypatch.chdir(tmp_path)
    assert exp.main(["--models", "lenet_12", "--methods", "synflow,random", "--max-log10", "1", "--step", "0.5",
                     "--data-dir", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "| lenet_12 | synflow | 10^" in out and "| synthetic |" in out
    assert (tmp_path / "runs" / "collapse_lenet_12_w1" / "summary.json").exists()


def test_oneshot_refuses_bad_targets_in_one_line_writing_nothing(finished_run, capsys):
    before = sorted(os.listdir(finished_run))
    for sets, needle in [("oneshot.patterns=3:8", "M=8 does not divide the input dimension 12"),
                         ("oneshot.patterns=4:4", "0 < N < M"),
                         ("oneshot.sparsities=1.5", "strictly between 0 and 1"),
                         ("oneshot.calibration=0", "oneshot.calibration 0 out of range"),
                         ("oneshot.methods=obc", "unknown oneshot.methods entry 'obc'"),
                         (("oneshot.methods=obs", "oneshot.fisher_block=200", "oneshot.patterns="),
                          "block 200 is larger than out/kernel (120 weights)"),
                         (("oneshot.methods=obs", "oneshot.patterns=2:4"), "obs prunes unstructured"),
                         (("oneshot.methods=obs", "oneshot.calibration=4"), "calibration 4 < oneshot.grad_batch 8"),
                         ("oneshot.steps=0", "oneshot.steps 0 out of range"),
                         (("oneshot.blocksize=6", "oneshot.patterns=2:4"), "blocksize 6: allowed: a multiple of M=4"),
                         ("oneshot.patterns=4:8", "pattern 4:8 for out/kernel: M=8 does not divide")]:
        sets = [sets] if isinstance(sets, str) else list(sets)
        assert main(["oneshot", "--run-dir", finished_run, "--no-progress"] + [a for x in sets for a in ("--set", x)]) \
            == 2, sets
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (sets, err)
    assert sorted(os.listdir(finished_run)) == before
