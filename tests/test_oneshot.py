"""One-shot surgeons on one layer, equal to their authors' code on stored outputs
(tests/data/make_oneshot_reference.py: IST-DASLab/sparsegpt fasterprune, locuslab/wanda prune_wanda /
prune_magnitude), and the N:M mask constraint."""
import os

import jax.numpy as jnp
import numpy as np
import pytest

from lth.errors import UserError
from lth.surgeons import layer as L

REF = np.load(os.path.join(os.path.dirname(__file__), "data", "oneshot_reference.npz"))
NSEQ = 8   # both stored layers: 8 calibration sequences (the references' nsamples)
SPARSEGPT = {"unstr0.5_b128": (0.5, None, 128), "unstr0.5_b8": (0.5, None, 8), "unstr0.7_b8": (0.7, None, 8),
             "2of4_b8": (0.5, (2, 4), 8), "4of8_b16": (0.5, (4, 8), 16)}


def layer(name):
    """(kernel in lth's (in, out) layout, H of its calibration rows)."""
    return REF[f"{name}/w"].T, L.gram(REF[f"{name}/x"], NSEQ)


@pytest.mark.parametrize("name,configs", [
    ("B", ["unstr0.5_b8", "2of4_b8"]),     # the fast tier: lazy blocks, N:M and a dead input column
    pytest.param("A", list(SPARSEGPT), marks=pytest.mark.slow),
    pytest.param("B", ["unstr0.5_b128", "unstr0.7_b8", "4of8_b16"], marks=pytest.mark.slow)])
def test_sparsegpt_equals_fasterprune(name, configs):
    """Mask exactly, weights and losses to float32 roundoff — with one lazy block and with several,
    unstructured (one threshold per block) and N:M (chosen at each group's first column), and a dead
    input column (layer B). Each configuration compiles once (seconds), so most are in the slow tier."""
    kernel, h = layer(name)
    np.testing.assert_allclose(h, REF[f"sparsegpt/{name}/H"], rtol=1e-5, atol=1e-4)
    u, damp, dead = L.hinv_upper(h)
    np.testing.assert_allclose(u, REF[f"sparsegpt/{name}/hinv"], atol=1e-6)
    assert float(damp) == pytest.approx(float(REF[f"sparsegpt/{name}/damp"]), rel=1e-6)
    assert np.array_equal(dead, REF[f"{name}/dead"])
    for cfg in configs:
        sparsity, nm, block = SPARSEGPT[cfg]
        new, keep, losses = L.sparsegpt(kernel, h, sparsity, nm, block)
        ref = f"sparsegpt/{name}/{cfg}"
        assert np.array_equal(~np.asarray(keep).T, REF[f"{ref}/mask"]), cfg
        np.testing.assert_allclose(np.asarray(new).T, REF[f"{ref}/w"], atol=5e-7, err_msg=cfg)
        np.testing.assert_allclose(losses, REF[f"{ref}/losses"], rtol=1e-5, atol=1e-5, err_msg=cfg)
        assert not np.asarray(new)[~np.asarray(keep)].any()


@pytest.mark.parametrize("name", ["A", "B"])
def test_wanda_and_magnitude_equal_the_wanda_code(name):
    kernel, h = layer(name)
    metric = L.wanda_metric(kernel, h)
    np.testing.assert_allclose(np.asarray(metric).T, REF[f"wanda/{name}/metric"], rtol=1e-5)
    for key, (sparsity, nm) in {"unstr0.5": (0.5, None), "unstr0.7": (0.7, None), "2of4": (0.5, (2, 4)),
                                "4of8": (0.5, (4, 8))}.items():
        assert np.array_equal(~np.asarray(L.wanda_keep(metric, sparsity, nm)).T, REF[f"wanda/{name}/mask_{key}"]), key
    assert np.array_equal(~np.asarray(L.magnitude_keep(kernel, 0.5, (2, 4))).T, REF[f"magnitude/{name}/mask_2of4"])
    assert np.array_equal(~np.asarray(L.magnitude_keep(kernel, 0.5)).T, REF[f"magnitude/{name}/mask_unstr0.5"])


def test_nm_keeps_n_of_every_m_along_the_input_axis():
    rng = np.random.default_rng(0)
    for shape in [(8, 3), (3, 3, 8, 5)]:   # a Dense kernel (in, out), a convolution (kh, kw, in, out)
        s = jnp.asarray(rng.standard_normal(shape))
        keep = np.asarray(L.nm_keep(s, 2, 4))
        groups = np.moveaxis(keep, -2, -1).reshape(*shape[:-2], shape[-1], shape[-2] // 4, 4)
        assert (groups.sum(-1) == 2).all()
        top = np.sort(np.moveaxis(np.asarray(s), -2, -1).reshape(groups.shape), -1)[..., 2:]
        kept = np.sort(np.where(groups, np.moveaxis(np.asarray(s), -2, -1).reshape(groups.shape), -np.inf), -1)[..., 2:]
        assert np.array_equal(top, kept)


def test_bad_patterns_are_one_line():
    for spec, needle in [("4:4", "0 < N < M"), ("3:2", "0 < N < M"), ("2-4", "N:M such as 2:4"), ("a:b", "N:M")]:
        with pytest.raises(UserError, match=needle):
            L.parse_pattern(spec)
    with pytest.raises(UserError, match="M=8 does not divide the input dimension 12"):
        L.check_nm(2, 8, 12)
    kernel, h = layer("A")
    with pytest.raises(UserError, match="blocksize 6: allowed: a multiple of M=4"):
        L.sparsegpt(kernel, h, 0.5, (2, 4), 6)


# ----- a whole network, layer by layer --------------------------------------------------------------
@pytest.mark.slow
def test_each_layer_is_calibrated_through_the_pruned_layers_before_it():
    """Wanda on an MLP: layer 2's mask comes from the inputs it gets from the *pruned* layer 1 (the
    references' sequential drivers), not from the dense network's activations."""
    import jax

    from lth.models import build
    from lth.pruning import masks as M
    from lth.surgeons.model import prune_oneshot

    model = build("lenet_24_12", 10, "kaiming_normal", (40,), 1.0)
    v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 40)), train=False)
    x = jax.random.normal(jax.random.PRNGKey(1), (96, 40))
    params, keep = prune_oneshot(lambda v, x: model.apply(v, x, train=False), v, "wanda", sparsity=0.5, x=x)
    p = v["params"]
    k0 = L.wanda_keep(L.wanda_metric(p["fc_0"]["kernel"], L.gram(x, 96)), 0.5)
    assert np.array_equal(keep["fc_0"]["kernel"], k0)
    pruned_h = jax.nn.relu(x @ jnp.where(k0, p["fc_0"]["kernel"], 0) + p["fc_0"]["bias"])
    dense_h = jax.nn.relu(x @ p["fc_0"]["kernel"] + p["fc_0"]["bias"])
    k1 = L.wanda_keep(L.wanda_metric(p["fc_1"]["kernel"], L.gram(pruned_h, 96)), 0.5)
    assert np.array_equal(keep["fc_1"]["kernel"], k1)
    assert not np.array_equal(k1, L.wanda_keep(L.wanda_metric(p["fc_1"]["kernel"], L.gram(dense_h, 96)), 0.5))
    assert jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), params, p) == jax.tree.map(lambda _: True, p)
    assert M.density(keep, M.prunable_tree(p, ".*kernel"))[0] == pytest.approx(0.5, abs=0.01)


# ----- the study ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_oneshot_study_prunes_recovers_and_resumes(finished_run, capsys):
    from lth import api

    sets = ["oneshot.methods=magnitude,sparsegpt", "oneshot.sparsities=0.7", "oneshot.patterns=2:4",
            "oneshot.recovery=10it", "oneshot.calibration=64"]
    r = api.run_study("oneshot", None, sets, run_dir=finished_run, level=1)
    rows = {(x["method"], x["target"]): x for x in r.summary["rows"]}
    assert set(rows) == {(m, t) for m in ("magnitude", "sparsegpt") for t in ("0.7", "2:4")}
    ticket = r.summary["density"]   # level 1 is already a ticket: its pruned weights stay pruned
    assert ticket < 0.81 and all(x["density"] <= min(ticket, 0.5) + 1e-6 for x in rows.values() if x["target"] == "2:4")
    assert all(np.isfinite(x["recovered_accuracy"]) for x in rows.values())
    assert "| sparsegpt | 2:4 |" in r.table()
    assert os.path.getsize(r.plot()) > 10_000
    again = api.run_study("oneshot", None, sets, run_dir=finished_run, level=1)   # resumes: nothing recomputed
    assert again.summary["rows"] == r.summary["rows"]


@pytest.mark.slow
def test_gradient_surgeons_in_the_study_one_shot_and_gradual(finished_run):
    """obs / obs_noupdate / obd reach the target in one global ranking; the OBS update is what separates
    obs from obs_noupdate (same mask, different weights → different accuracy); gradual (steps=2) fine-tunes
    once between its steps (the cubic schedule's first step at s·(1 − 1/8)) and ends at the target."""
    from lth import api
    from lth.studies.oneshot import gradual_sparsities

    np.testing.assert_allclose(gradual_sparsities(0.8, 2), [0.8 * 7 / 8, 0.8])
    sets = ["oneshot.methods=obs,obs_noupdate,obd", "oneshot.sparsities=0.8", "oneshot.patterns=",
            "oneshot.scope=global", "oneshot.calibration=64", "oneshot.fisher_block=12"]
    r = api.run_study("oneshot", None, sets, run_dir=finished_run, level=0)
    rows = {x["method"]: x for x in r.summary["rows"]}
    assert all(abs(x["density"] - 0.2) < 1e-3 for x in rows.values())
    assert rows["obs"]["test_accuracy"] != rows["obs_noupdate"]["test_accuracy"]
    g = api.run_study("oneshot", None, sets[:1] + sets[2:] + ["oneshot.methods=obs", "oneshot.sparsities=0.8",
                                                             "oneshot.steps=2", "oneshot.interval=3it"],
                      run_dir=finished_run, level=0)
    (row,) = g.summary["rows"]
    assert row["steps"] == 2 and abs(row["density"] - 0.2) < 1e-3
    assert os.path.exists(os.path.join(g.run_dir, "arms", "obs-0.8-step1", "final"))
    assert "obs (2 steps)" in g.table()
