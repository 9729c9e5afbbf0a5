"""`lth transfer`: a ticket of one run trained with another recipe (here: SGD's ticket trained with
Adam, Morcos et al.'s optimizer transfer). The arm trains exactly the source level's mask from the
source's rewind weights; the controls keep the source's per-layer counts (random positions; the
largest weights of the init); bad sources are refused before anything is written."""
import json
import os

import jax
import numpy as np
from conftest import DEMO, TINY, assert_refused

from lth.cli import main
from lth.harness import checkpoint, paths
from lth.harness.run import init_variables, keys, setup
from lth.pruning import masks as M
from lth.studies import transfer as T
from lth.studies.compress import load_level


def target_sets(source, *extra):
    return TINY + ["train.optimizer=adam", "train.lr=1e-3", f"transfer.sources=sgd={source}", *extra]


def level1_density(run_dir):
    with open(paths.summary(run_dir)) as f:
        return json.load(f)["levels"][1]["density"]


def test_transfer_trains_the_source_ticket_and_matched_controls(finished_run, tmp_path, capsys):
    d = level1_density(finished_run)
    run = str(tmp_path / "t")
    argv = ["transfer", "--config", DEMO, "--run-dir", run, "--no-progress"]
    sets = target_sets(finished_run, f"transfer.densities={d}")
    assert main(argv + [a for x in sets for a in ("--set", x)]) == 0
    out = capsys.readouterr().out
    assert "| sgd |" in out and "| magnitude |" in out and "| dense |" in out
    with open(os.path.join(run, "summary.json")) as f:
        summary = json.load(f)
    names = [r["name"] for r in summary["rows"]]
    assert names == ["dense", "sgd", "random", "magnitude"]
    # a name stays bound to its run: the same name for another run is refused, nothing trained
    import shutil
    other = str(tmp_path / "copy")
    shutil.copytree(finished_run, other)
    sets2 = target_sets(other, f"transfer.densities={d}")
    assert main(argv + [a for x in sets2 for a in ("--set", x)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "this run directory trained 'sgd' from" in err[0]

    from lth.harness.config import load_config
    s = setup(load_config(DEMO, sets + [f"transfer.densities={d}"]), T.COMMAND)
    ticket = load_level(T.source_setup(finished_run), finished_run, 1).masks
    init, ms = init_variables(s, keys(s, "init"))
    like = s.trainer.new_state(init, ms, M.ones_like(init), 0, keys(s, "train"), keys(s, "data"))
    arm = lambda name: checkpoint.load_final(paths.named_arm(run, name), like, own=False).masks  # noqa: E731
    for a, b in zip(jax.tree.leaves(ticket), jax.tree.leaves(arm(f"sgd-d{d:g}"))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))   # the source's mask, exactly
    counts = {p: c for p, (c, _) in M.counts(ticket, s.prunable, axis=0).items()}
    for control in ("random", "magnitude"):
        m = arm(f"{control}-d{d:g}")
        got = {p: c for p, (c, _) in M.counts(m, s.prunable, axis=0).items()}
        assert {p: list(c) for p, c in got.items()} == {p: list(c) for p, c in counts.items()}
        assert any(not np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(jax.tree.leaves(m), jax.tree.leaves(ticket)))
    # magnitude: every kept weight of the init is at least as large as every pruned one, layer by layer
    mag = arm(f"magnitude-d{d:g}")
    for w, m, on in zip(jax.tree.leaves(init), jax.tree.leaves(mag), jax.tree.leaves(s.prunable)):
        if on and not np.asarray(m).all():
            w, m = np.abs(np.asarray(w[0])), np.asarray(m[0])
            assert w[m].min() >= w[~m].max()

    # the weights: the source's rewind point (transfer.weights=source), this config's init otherwise
    src_masks, src_params = T.read_source(finished_run, 1, "source")
    p_src, _ = T.transferred(s, src_masks, src_params, init)
    p_tgt, _ = T.transferred(s, src_masks, None, init)
    rewind = checkpoint.load(paths.rewind(finished_run), {"params": init, "model_state": {}})["params"]
    for a, b, c in zip(jax.tree.leaves(p_src), jax.tree.leaves(rewind), jax.tree.leaves(p_tgt)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, c in zip(jax.tree.leaves(init), jax.tree.leaves(p_tgt)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


def test_bad_sources_are_refused_before_anything_is_written(finished_run, tmp_path, capsys):
    d = level1_density(finished_run)
    assert_refused(capsys, "transfer", TINY, [
        ("transfer.sources=", "transfer.sources is empty"),
        ("transfer.sources=sgd", "transfer.sources entry 'sgd'"),
        (f"transfer.sources=dense={finished_run}", "not dense"),
        ("transfer.sources=x=/no/such/run", "is not a finished `lth lottery` run"),
        ([f"transfer.sources=sgd={finished_run}", "transfer.densities=0.37"],
         f"no finished level at that density; allowed: 1.0000 (level 0), {d:.4f} (level 1)"),
        ([f"transfer.sources=sgd={finished_run}", "transfer.densities=1.5"], "transfer.densities entry '1.5'"),
        ([f"transfer.sources=sgd={finished_run}", "transfer.controls=shuffle"], "transfer.controls entry"),
        ([f"transfer.sources=sgd={finished_run}", "transfer.weights=pretrained"], "transfer.weights"),
        ([f"transfer.sources=sgd={finished_run}", "transfer.masks=imp"], "transfer.masks"),
        ([f"transfer.sources=sgd={finished_run}", f"transfer.densities={d}", "model.name=lenet_30_12"],
         "do not fit this config's prunable weights: fc_0/kernel (40, 30) (source: (40, 24)), "
         "fc_1/kernel (30, 12)"),
    ], tmp_path)



def test_oneshot_masks_prune_the_trained_level_0_by_the_sources_rule(finished_run):
    """transfer.masks=oneshot: the source's trained level 0, global magnitude to the density over its
    prunable weights, each prune.layer_fractions group (here the last layer) ranked on its own at the
    same density; transfer.weights=trained: those trained weights, masked (Gordon et al.)."""
    import copy

    src = T.source_setup(finished_run)
    final = load_level(src, finished_run, 0)
    flat_w, flat_on = T._flat(final.params), T._flat(src.prunable)
    kernels = [p for p, on in flat_on.items() if on]
    last = kernels[-1].rsplit("/", 1)[0]
    grouped = copy.copy(src)
    grouped.cfg = copy.deepcopy(src.cfg)
    grouped.cfg.prune.layer_fractions = f"{last}=0.2"
    for d in (0.5, 0.3):
        masks = T._flat(T.oneshot_masks(grouped, final, d))
        for members in (kernels[:-1], kernels[-1:]):
            w = np.concatenate([np.abs(flat_w[p][0]).ravel() for p in members])
            m = np.concatenate([masks[p][0].ravel() for p in members])
            assert m.sum() == round(d * m.size)                    # each group at the density
            assert w[m].min() >= w[~m].max()                       # the largest trained weights
        masks, params = T.read_source(finished_run, 0, "trained", d)
        w = np.concatenate([np.abs(flat_w[p][0]).ravel() for p in kernels])
        m = np.concatenate([masks[p][0].ravel() for p in kernels])
        assert m.sum() == round(d * m.size) and w[m].min() >= w[~m].max()   # one global ranking
        for p, on in flat_on.items():
            if not on:
                assert masks[p].all()
            np.testing.assert_array_equal(params[p], flat_w[p] * masks[p])   # trained, masked


def test_class_subsets_and_training_parts_for_transfer_across_data():
    """data.classes keeps the listed labels in every split, relabeled 0..k-1 in the listed order;
    data.train_part K/N keeps the K-th of N consecutive parts of the training split (the validation
    carve unchanged); bad values are refused naming the key."""
    import pytest

    from lth.data import catalog as C
    from lth.errors import UserError
    from lth.harness.config import base

    def load(**kw):
        c = base().data
        c.name = "mnist1d"
        c.normalize = "0/1"   # fixed: the training split's own statistics would differ between subsets
        for k, v in kw.items():
            c[k] = v
        return C.load(c)
    full = load()
    sub = load(classes="7,2,5")
    assert sub.num_classes == 3
    for x, y, fx, fy in ((sub.x_test, sub.y_test, full.x_test, full.y_test),):
        want = np.isin(fy, [7, 2, 5])
        np.testing.assert_array_equal(x, fx[want])
        np.testing.assert_array_equal(y, np.select([fy[want] == 7, fy[want] == 2], [0, 1], 2))
    assert set(sub.y_train) == set(sub.y_val) == {0, 1, 2}
    halves = [load(train_part=f"{k}/2") for k in (1, 2)]
    np.testing.assert_array_equal(np.concatenate([h.x_train for h in halves]), full.x_train)
    np.testing.assert_array_equal(halves[0].x_val, full.x_val)
    for bad, key in ((dict(classes="3"), "data.classes"), (dict(classes="1,1"), "data.classes"),
                     (dict(classes="0,10"), "data.classes"), (dict(train_part="3/2"), "data.train_part"),
                     (dict(train_part="half"), "data.train_part")):
        with pytest.raises(UserError, match=key):
            load(**bad)
