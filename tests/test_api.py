"""The public API: the README's Python example runs as written; `lth.__all__` is what is public;
bad input raises lth.UserError with the CLI's message; a Result reads back any run."""
import os
import re

import pytest

import lth
from conftest import ROOT


def readme_example() -> str:
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)        # its runs/ goes here
    scope = {}
    exec(compile(readme_example(), "README.md", "exec"), scope)
    out = capsys.readouterr().out
    counts = scope["lth"].masks.counts(scope["masks"], scope["prunable"])
    kept = sum(int(k) for k, _ in counts.values())
    total = sum(n for _, n in counts.values())
    assert kept == round(0.02 * total) and all(int(k) > 0 for k, _ in counts.values())   # exact, no collapse
    ticket, trained = scope["ticket"], scope["trained"]
    import jax
    import numpy as np
    for m, w in zip(jax.tree.leaves(ticket), jax.tree.leaves(trained["params"])):
        assert not np.any(np.asarray(w)[~np.asarray(m)])                 # pruned weights stayed 0
    assert 0.1 < scope["metrics"]["test_accuracy"] <= 1.0                # better than chance (10 classes)
    result = scope["result"]
    assert result.run_dir.startswith("runs" + os.sep) and os.path.exists(os.path.join(result.run_dir, "accuracy_vs_density.png"))
    assert "| level | density % |" in out and len(result.summary["levels"]) == 2
    # the same run through the CLI is found done (same identity), nothing retrained
    from lth.cli import main
    assert main(["lottery", "--config", os.path.join(ROOT, "configs", "mnist1d_mlp.py"), "--no-progress", "--set",
                 "lottery.levels=1", "--set", "lottery.controls=", "--set", "train.duration=2ep"]) == 0
    assert result.table() in capsys.readouterr().out
    from analysis import report   # and the report of any run reads it back
    assert report.main([result.run_dir]) == 0 and "| level | density % |" in capsys.readouterr().out


def test_public_names_and_user_errors(tmp_path):
    assert set(lth.__all__) >= {"lottery", "pai", "stability", "heads", "collapse", "compress", "open_run", "Result",
                                "load_config", "build_model", "load_data", "score", "prune_at_init", "train_masked",
                                "masks", "prune", "UserError", "run_study"}
    for name in lth.__all__:
        assert getattr(lth, name) is not None
    with pytest.raises(lth.UserError, match="no_such_config.*not found.*mnist1d_mlp"):
        lth.load_config("no_such_config")
    with pytest.raises(lth.UserError, match="unknown config key 'lottery.levls'"):
        lth.lottery("mnist1d_mlp", {"lottery.levls": 2}, out=tmp_path)
    with pytest.raises(lth.UserError, match="prune.fraction 1.5 out of range"):
        lth.lottery({"config": "mnist1d_mlp", "prune.fraction": 1.5}, out=tmp_path)
    assert os.listdir(tmp_path) == []                                   # nothing written
    with pytest.raises(lth.UserError, match="holds no lth results"):
        lth.open_run(tmp_path)
    cfg = lth.load_config({"config": "mnist1d_mlp", "lottery.levels": 3}, ["train.lr=0.5"])
    assert (cfg.lottery.levels, cfg.train.lr, cfg.name) == (3, 0.5, "mnist1d_mlp")


def test_report_reads_every_study(tmp_path, capsys):
    """analysis.report works on a lottery run, a pai run and a collapse run (the latter two raised
    KeyError before it went through lth.open_run), and refuses a folder with no results."""
    from analysis import report
    from lth.cli import main
    from conftest import DEMO, TINY

    sets = [a for t in TINY for a in ("--set", t)]
    assert main(["pai", "--config", DEMO, "--no-progress", "--out", str(tmp_path), *sets, "--set", "pai.methods=magnitude",
                 "--set", "pai.compression=10^0.5"]) == 0
    assert main(["collapse", "--model", "lenet_12", "--methods", "magnitude", "--max-log10", "0.5", "--step", "0.5",
                 "--data-dir", str(tmp_path / "none"), "--out-dir", str(tmp_path / "col")]) == 0
    capsys.readouterr()
    (pai_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("pai_")]
    for d, needle in ((pai_dir, "| magnitude |"), (tmp_path / "col", "| magnitude |")):
        assert report.main([str(d)]) == 0
        out = capsys.readouterr().out
        assert needle in out and out.strip().endswith(".png"), out
    assert lth.open_run(pai_dir).study == "pai" and lth.open_run(tmp_path / "col").study == "collapse"
    assert report.main([str(tmp_path / "none")]) == 2


TOY = '''"""A toy study: one arm that trains the config's model, dense."""
import os

from lth import masks as M
from lth.experiment import write_json
from lth.fit import device_data
from lth.run import BASE_SECTIONS, Command, init_variables, keys, train_arm
from lth.summary import arm_entry

COMMAND = Command("toy", BASE_SECTIONS, prefix="toy_")
HELP = "train the config's model once"
DESCRIPTION = "One dense arm."
PLOT_FILE = "toy.txt"


def describe(s):
    return s.cfg.model.name


def run(s, run_dir, log=print):
    p, ms = init_variables(s, keys(s, "init"))
    _, rows = train_arm(s, os.path.join(run_dir, "arm"), p, ms, M.ones_like(p), 0, device_data(s.trainer, s.dataset))
    summary = {"arms": [arm_entry(rows, arm="dense")]}
    write_json(os.path.join(run_dir, "summary.json"), summary)
    return summary


def table(summary):
    return "| arm | test accuracy |\\n|---|---|\\n" + "".join(
        f"| {e['arm']} | {e['test_accuracy']:.4f} |\\n" for e in summary["arms"])


def plot(summary, path):
    with open(path, "w") as f:
        f.write(table(summary))
    return path
'''


def test_a_new_study_is_one_module_and_one_registry_line(tmp_path, monkeypatch, capsys):
    """Through the protocol alone the toy study gets a CLI subcommand, a locked run directory,
    resumability (a rerun trains nothing), a summary, a table, a plot and the API."""
    from lth import experiment, run as harness, studies
    from lth.cli import main
    from conftest import DEMO, TINY

    (tmp_path / "toy_study.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(studies.REGISTRY, "toy", "toy_study")           # the one registry line
    args = ["toy", "--config", DEMO, "--no-progress", "--out", str(tmp_path / "runs")] + [a for t in TINY for a in ("--set", t)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| dense |" in out and "plot: " in out and "time: " in out
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert run_dir.name.startswith("toy_mnist1d_mlp-") and (run_dir / "summary.json").exists()
    monkeypatch.setattr(harness, "fit", lambda *a, **k: pytest.fail("a finished arm was trained again"))
    assert main(args) == 0 and "| dense |" in capsys.readouterr().out  # resumed: nothing trained
    lock = experiment.RunLock(str(run_dir))
    assert main(args) == 2 and "in use by process" in capsys.readouterr().err
    lock.release()
    r = lth.open_run(run_dir)
    assert r.study == "toy" and r.table() == lth.run_study("toy", DEMO, TINY, out=tmp_path / "runs").table()
    assert open(r.plot()).read() == r.table()
