"""IMP invariants: exact rewinding, geometric density, resume after a kill, determinism, replicates."""
import json
import os

import jax
import numpy as np
import pytest
from conftest import tiny_config

from lth.harness import checkpoint
from lth.harness import run as harness
from lth.harness.rundir import open_run_dir
from lth.pruning import masks as M
from lth.pruning import prune as P
from lth.studies import lottery

pytestmark = pytest.mark.xdist_group("lottery")   # its module fixture is computed once, on one worker

REWIND = ["lottery.rewind=20it", "lottery.controls=reinit,random_prune"]


def run(path, *overrides, spy=None, monkeypatch=None):
    cfg = tiny_config(*overrides)
    s = lottery.setup(cfg)
    open_run_dir(str(path), cfg, lottery.COMMAND)
    calls = []
    if spy is not None:
        real = harness.fit

        def recording(trainer, state, *a, **kw):
            calls.append(state)
            return real(trainer, state, *a, **kw)
        spy.setattr(harness, "fit", recording)
    summary = lottery.run(s, str(path), log=lambda *_: None)
    return s, summary, calls


def final(path, s, level, arm=None):
    d = os.path.join(path, *(("controls", arm) if arm else ()), f"level_{level}", "final")
    return checkpoint.load(d, _like(s))


def _like(s):
    p, ms = lottery.init_variables(s, lottery.keys(s, "init"))
    return s.trainer.new_state(p, ms, M.ones_like(p), 0, lottery.keys(s, "train"), lottery.keys(s, "data"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref")
    mp = pytest.MonkeyPatch()
    s, summary, calls = run(path, *REWIND, spy=mp)
    mp.undo()
    return path, s, summary, calls


def tree_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_level_starts_from_rewind_weights_times_mask(reference):
    path, s, summary, calls = reference
    level0, level1, reinit1, random1 = calls[:4]
    rw = checkpoint.load(os.path.join(path, "level_0", "rewind"),
                         {"params": level0.params, "model_state": level0.model_state})
    # the rewind weights are level 0's weights at step k
    from lth.training.loop import device_data, fit
    at_k, _ = fit(s.trainer, level0, device_data(s.trainer, s.dataset), 20, eval_every=0, history=[])
    assert tree_equal(rw["params"], at_k.params)
    # level 1 starts from exactly (rewind ⊙ mask_1) at step k, mask_1 from level 0's trained magnitudes
    f0 = final(path, s, 0)
    want_mask = P.prune_replicates(jax.tree.map(abs, f0.params), f0.masks, s.prunable, fraction=0.2)
    assert tree_equal(level1.masks, want_mask)
    assert tree_equal(level1.params, M.apply(rw["params"], want_mask))
    assert int(level1.step[0]) == 20
    # controls: reinit keeps the mask with new weights; random prune keeps per-layer counts, new positions
    assert tree_equal(reinit1.masks, level1.masks) and not tree_equal(reinit1.params, level1.params)
    assert M.counts(random1.masks, s.prunable, axis=0).keys() == M.counts(level1.masks, s.prunable, axis=0).keys()
    for k, (n, _) in M.counts(random1.masks, s.prunable, axis=0).items():
        assert np.array_equal(n, M.counts(level1.masks, s.prunable, axis=0)[k][0])
    assert not tree_equal(random1.masks, level1.masks)
    assert tree_equal(random1.params, M.apply(rw["params"], random1.masks))


def test_density_is_geometric_and_summary_complete(reference):
    path, s, summary, _ = reference
    stored = json.load(open(os.path.join(path, "summary.json")))
    assert stored["config"]["train"]["duration"] == "60it"
    total = sum(n for _, n in M.counts(M.ones_like(_like(s).params), s.prunable, axis=0).values())
    for e in stored["levels"]:
        assert abs(e["density"] - 0.8 ** e["level"]) <= e["level"] / total + 1e-12
        for key in ("test_accuracy", "best_val_loss_step", "test_accuracy_at_best_val"):
            assert key in e and key in e["replicates"][0]
    assert [e["level"] for e in stored["controls"]["reinit"]] == [1, 2]
    assert [e["level"] for e in stored["controls"]["random_prune"]] == [1, 2]


def test_killed_run_resumes_to_the_same_result(reference, tmp_path, monkeypatch):
    ref_path, s, ref_summary, _ = reference
    real_save, saves = checkpoint.Rolling.save, []

    def dying_save(self, step, state, meta):
        real_save(self, step, state, meta)
        saves.append(step)
        if len(saves) == 7:  # level 0 saves at 10..50, then level 1 at 30, 40: dies at step 40
            raise KeyboardInterrupt
    monkeypatch.setattr(checkpoint.Rolling, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, *REWIND)
    assert os.path.exists(tmp_path / "level_0" / "metrics.json")
    assert not os.path.exists(tmp_path / "level_1" / "metrics.json")
    monkeypatch.setattr(checkpoint.Rolling, "save", real_save)
    _, summary, calls = run(tmp_path, *REWIND, spy=monkeypatch)
    assert int(calls[0].step[0]) == 40  # resumed mid-level from the last checkpoint, not from k
    assert summary["levels"] == ref_summary["levels"]
    assert summary["controls"] == ref_summary["controls"]
    for level in (1, 2):
        a, b = final(tmp_path, s, level), final(ref_path, s, level)
        assert tree_equal(a.masks, b.masks) and tree_equal(a.params, b.params)


@pytest.mark.slow   # over ~15 s on 2 cores: `make test-all`
def test_same_seed_identical_and_other_seed_differs(reference, tmp_path):
    ref_path, s, ref_summary, _ = reference
    _, summary, _ = run(tmp_path / "a", *REWIND)
    assert summary["levels"] == ref_summary["levels"]
    assert tree_equal(final(tmp_path / "a", s, 2).masks, final(ref_path, s, 2).masks)
    _, other, _ = run(tmp_path / "b", *REWIND, "seed=1", "lottery.levels=1", "lottery.controls=")
    assert other["levels"][1]["test_accuracy"] != ref_summary["levels"][1]["test_accuracy"] or \
        not tree_equal(final(tmp_path / "b", s, 1).masks, final(ref_path, s, 1).masks)


def test_vmapped_replicates_equal_seeds_run_one_by_one(tmp_path):
    common = ["lottery.levels=1", "lottery.controls="]
    s2, both, _ = run(tmp_path / "r2", *common, "replicates=2")
    for r in range(2):
        s1, one, _ = run(tmp_path / f"s{r}", *common, f"seed={r}")
        for lb, lo in zip(both["levels"], one["levels"]):
            rb, ro = lb["replicates"][r], lo["replicates"][0]
            assert rb["seed"] == ro["seed"] == r
            assert rb["density"] == ro["density"]
            np.testing.assert_allclose(rb["test_accuracy"], ro["test_accuracy"], atol=2e-3)
        mb = M.index(final(tmp_path / "r2", s2, 1).masks, r)
        mo = M.index(final(tmp_path / f"s{r}", s1, 1).masks, 0)
        agree = np.mean(np.concatenate([np.asarray(a).ravel() == np.asarray(b).ravel()
                                        for a, b in zip(jax.tree.leaves(mb), jax.tree.leaves(mo))]))
        assert agree > 0.999
    assert both["levels"][0]["test_accuracy_std"] >= 0


def test_learning_rate_rewinding_starts_from_trained_weights(tmp_path, monkeypatch):
    s, summary, calls = run(tmp_path, "lottery.levels=1", "lottery.controls=", "lottery.rewind=20it",
                            "lottery.rewind_mode=lr", spy=monkeypatch)
    f0 = final(tmp_path, s, 0)
    assert tree_equal(calls[1].params, M.apply(f0.params, calls[1].masks))
    assert int(calls[1].step[0]) == 20


def test_original_fraction_that_empties_a_layer_is_refused_and_collapse_is_stated():
    from lth.errors import UserError

    with pytest.raises(UserError, match=r"prune.layer_fractions out=0.4 .* empties that layer"):
        lottery.validate(tiny_config("prune.of=original", "prune.fraction=0.2", "prune.layer_fractions=out=0.4",
                                     "lottery.levels=3"))
    lottery.validate(tiny_config("prune.of=original", "prune.fraction=0.2", "prune.layer_fractions=out=0.3",
                                 "lottery.levels=3"))   # 0.9 of the layer: allowed
    masks = {"a": {"kernel": np.ones((2, 3, 3), bool)}, "b": {"kernel": np.array([[[True]], [[False]]])}}
    prunable = {"a": {"kernel": True}, "b": {"kernel": True}}
    assert lottery.collapsed_layers(masks, prunable) == {"b/kernel": [1]}


def test_imp_levels_at_a_distributions_layer_densities(tmp_path):
    """prune.scope = erk: level L keeps each layer at ERK's density for (1 − f)^L, ranked by |w| within it."""
    from lth.pruning import sparsity as SP
    s, summary, _ = run(tmp_path, "lottery.levels=2", "lottery.controls=", "prune.scope=erk", "prune.fraction=0.5",
                        "train.duration=20it")
    shapes = {p: tuple(x.shape[1:]) for p, x, pr in zip(M.leaf_paths(final(tmp_path, s, 0).params),
                                                        jax.tree.leaves(final(tmp_path, s, 0).params),
                                                        jax.tree.leaves(s.prunable)) if pr}
    for level in (1, 2):
        want = SP.densities(shapes, 0.5 ** level, "erk")
        got = summary["levels"][level]["replicates"][0]["density_per_layer"]
        for p, d in want.items():
            n = int(np.prod(shapes[p]))
            assert round(got[p] * n) == round(d * n), (level, p)
    assert len({round(v, 3) for v in summary["levels"][2]["replicates"][0]["density_per_layer"].values()}) > 1
