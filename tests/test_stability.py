"""`lth stability`: the path between two copies is exact at its ends, identical copies have no
barrier, masks hold along the path, BatchNorm recomputation touches statistics only, bad input."""
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth import stability
from lth.cli import main
from lth.models import registry
from conftest import DEMO, TINY

STAB = ["stability.rewind_points=0it,20it", "stability.alphas=5", "replicates=2"]


def stab_args(out, *sets):
    return ["stability", "--config", DEMO, "--no-progress", "--out", str(out)] + sum(
        [["--set", s] for s in TINY + STAB + list(sets)], [])


def points(out):
    return {os.path.basename(os.path.dirname(p)): json.load(open(p))
            for p in glob.glob(os.path.join(str(out), "*", "points", "*", "stability.json"))}


def test_path_ends_equal_the_copies_own_evaluations(tmp_path, capsys):
    assert main(stab_args(tmp_path)) == 0
    pts = points(tmp_path)
    assert set(pts) == {"L0_k0", "L0_k20"}
    for p in pts.values():
        for split in ("train", "test"):
            curve, ends = np.asarray(p[f"{split}_error"]), np.asarray(p[f"{split}_endpoint_error"])
            assert curve.shape == (2, 5) and ends.shape == (2, 2)
            assert np.array_equal(curve[:, 0], ends[:, 0]) and np.array_equal(curve[:, -1], ends[:, 1])
        assert not np.array_equal(np.asarray(p["test_endpoint_error"])[:, 0], np.asarray(p["test_endpoint_error"])[:, 1]) \
            or p["copies"]["replicates"][0] != p["copies"]["replicates"][2]   # the copies did differ
    assert "| 0 | 100.00 | 20 |" in capsys.readouterr().out


def test_tickets_of_imp_levels_keep_their_masks_along_the_path(tmp_path):
    lot = ["lottery", "--config", DEMO, "--no-progress", "--out", str(tmp_path)] + sum(
        [["--set", s] for s in TINY + ["lottery.levels=1", "lottery.controls=", "replicates=2"]], [])
    assert main(lot) == 0
    assert main(stab_args(tmp_path, "stability.levels=1", "stability.rewind_points=20it")) == 0
    (summary,) = [json.load(open(p)) for p in glob.glob(os.path.join(str(tmp_path), "stability_*", "summary.json"))]
    assert [(p["level"], p["k"]) for p in summary["points"]] == [(0, 20), (1, 20)]
    assert abs(summary["points"][1]["density"] - 0.8) < 0.01 and summary["points"][0]["density"] == 1.0


def test_copies_with_the_same_data_order_have_no_barrier(tmp_path, monkeypatch):
    from lth.run import keys

    monkeypatch.setattr(stability, "copy_keys", lambda s: (jnp.concatenate([keys(s, "train")] * 2),
                                                          jnp.concatenate([keys(s, "data")] * 2)))
    assert main(stab_args(tmp_path)) == 0
    (summary,) = [json.load(open(p)) for p in glob.glob(os.path.join(str(tmp_path), "*", "summary.json"))]
    assert all(p["train_barrier"] == 0.0 and p["test_barrier"] == 0.0 for p in summary["points"])
    for p in points(tmp_path).values():
        assert len({tuple(c) for c in p["test_error"]}) <= 2 and all(len(set(c)) == 1 for c in p["test_error"])


def test_interpolation_keeps_pruned_weights_zero_and_is_exact_at_the_ends():
    rng = np.random.default_rng(0)
    mask = rng.random((6, 5)) < 0.3
    a, b = {"w": jnp.asarray(rng.normal(size=(6, 5)) * mask)}, {"w": jnp.asarray(rng.normal(size=(6, 5)) * mask)}
    for alpha in np.linspace(0, 1, 11):
        w = np.asarray(stability.interpolate(a, b, float(alpha))["w"])
        assert np.all(w[~mask] == 0)
    assert stability.interpolate(a, b, 0.0)["w"] is not None and np.array_equal(stability.interpolate(a, b, 0.0)["w"], a["w"])
    assert np.array_equal(stability.interpolate(a, b, 1.0)["w"], b["w"])
    assert np.array_equal(stability.interpolate(a, a, 0.3)["w"], a["w"])


class _S:
    def __init__(self, model):
        self.trainer = type("T", (), {"model": model})()


def test_recompute_changes_batchnorm_statistics_only():
    model = registry.build("vgg11", 10, "kaiming_normal", (16, 16, 3), width=1 / 16)
    v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    xs = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 16, 16, 3))
    stack = lambda t: jax.tree.map(lambda a: a[None], t)  # noqa: E731  (one replicate)
    new = stability.recompute_bn(_S(model), stack(v["params"]), stack({"batch_stats": v["batch_stats"]}), xs)
    assert set(new) == {"batch_stats"}                     # nothing but statistics comes back
    p = v["params"]["conv_0"]
    pre = jax.lax.conv_general_dilated(xs.reshape(12, 16, 16, 3), p["kernel"], (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]
    want = pre.reshape(3, 4, 16, 16, -1).mean(axis=(1, 2, 3)).mean(0)   # mean of the 3 batches' means
    np.testing.assert_allclose(np.asarray(new["batch_stats"]["bn_0"]["mean"][0]), np.asarray(want), rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.asarray(new["batch_stats"]["bn_0"]["var"][0]), np.asarray(v["batch_stats"]["bn_0"]["var"]))


@pytest.mark.parametrize("sets, needle", [
    (["stability.rewind_points=0it,99ep"], "'99ep' = step"),
    (["stability.levels=3"], "stability.levels 3 not in the lottery run"),
    (["stability.alphas=1"], "stability.alphas 1 out of range"),
    (["stability.bn=average"], "'average'"),
])
def test_bad_input(tmp_path, capsys, sets, needle):
    assert main(stab_args(tmp_path, *sets)) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []
