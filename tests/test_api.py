"""The public API: the README's Python example runs as written; `lth.__all__` is what is public;
bad input raises lth.UserError with the CLI's message; a Result reads back any run."""
import os
import re

import pytest
from conftest import ROOT

import lth


def readme_example() -> str:
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
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
    assert result.run_dir.startswith("runs" + os.sep) and os.path.exists(os.path.join(result.run_dir,
                                                                                      "accuracy_vs_density.png"))
    assert "| level | density % |" in out and len(result.summary["levels"]) == 2
    # the same run through the CLI is found done (same identity), nothing retrained
    from lth.cli import main
    assert main(["lottery", "--config", os.path.join(ROOT, "configs", "mnist1d_mlp.py"), "--no-progress", "--set",
                 "lottery.levels=1", "--set", "lottery.controls=", "--set", "train.duration=2ep"]) == 0
    assert result.table() in capsys.readouterr().out
    from analysis import report  # and the report of any run reads it back
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


@pytest.mark.slow
def test_report_reads_every_study(tmp_path, capsys):
    """analysis.report works on a lottery run, a pai run and a collapse run (the latter two raised
    KeyError before it went through lth.open_run), and refuses a folder with no results."""
    from conftest import DEMO, TINY

    from analysis import report
    from lth.cli import main

    sets = [a for t in TINY for a in ("--set", t)]
    assert main(["pai", "--config", DEMO, "--no-progress", "--out", str(tmp_path), *sets,
                 "--set", "pai.methods=magnitude", "--set", "pai.compression=10^0.5"]) == 0
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


