"""`lth compare`: one table of every family, its arms those of `lth lottery` / `lth pai` /
`lth sparse` runs of the same identity (reused as they are)."""
import os

import pytest
from conftest import DEMO, TINY, assert_refused

import lth


@pytest.mark.slow   # over ~20 s on 2 cores: `make test-all`
def test_compare_reuses_the_studies_arms_and_counts_imps_trainings(tmp_path, capsys):
    sets = TINY + ["train.duration=40it", "prune.fraction=0.6", "compare.densities=0.2", "compare.pai=snip",
                   "compare.sparse=static", "compare.distributions=erk"]
    pai = lth.pai(DEMO, TINY + ["train.duration=40it", "prune.fraction=0.6", "pai.methods=snip", "pai.compression=5"],
                  out=str(tmp_path))
    arm = os.path.join(pai.run_dir, "arms", pai.summary["arms"][0]["arm"], "metrics.json")
    before = os.stat(arm).st_mtime_ns
    res = lth.compare(DEMO, sets, out=str(tmp_path))
    assert res.summary["runs"]["pai"] == pai.run_dir and os.stat(arm).st_mtime_ns == before   # reused, not retrained
    (p,) = res.summary["methods"]["snip"]["points"]
    assert p["test_accuracy"] == pai.summary["arms"][0]["test_accuracy"] and p["cost_steps"] == 40
    imp = res.summary["methods"]["imp"]["points"]
    assert [q["level"] for q in imp] == [1, 2] and [q["cost_steps"] for q in imp] == [80, 120]   # L + 1 trainings
    assert imp[-1]["density"] <= 0.2 < imp[0]["density"]
    assert set(res.summary["methods"]) == {"imp", "imp_reinit", "snip", "static-erk", "oneshot-magnitude",
                                           "oneshot-obs"}
    for m in ("oneshot-magnitude", "oneshot-obs"):   # the trained dense network (IMP's level 0) pruned after training
        (q,) = res.summary["methods"][m]["points"]
        assert abs(q["density"] - 0.2) < 1e-3 and q["cost_steps"] == 40 and q["target_density"] == 0.2
    table = res.table()
    assert "| oneshot-obs | after training, one-shot | 1 |" in table
    assert "| imp | after training | 3 |" in table and "(L2, 15.9%)" in table and os.path.exists(res.plot())
    assert_refused(capsys, "compare", sets, [("compare.pai=snip,florce", "unknown compare.pai score 'florce'"),
                                             ("compare.densities=0.2,0", "compare.densities entry '0' out of range"),
                                             ("compare.sparse=rigl,gmpp", "unknown compare.sparse method 'gmpp'"),
                                             ("compare.oneshot=obc", "unknown compare.oneshot method 'obc'"),
                                             ("compare.imp=False", "compare.oneshot 'magnitude,obs' prunes IMP's")],
                   tmp_path)
