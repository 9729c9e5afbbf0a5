"""`lth stability`: the path between two copies is exact at its ends, identical copies have no
barrier, masks hold along the path, BatchNorm recomputation touches statistics only, bad input."""
import contextlib
import glob
import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DEMO, TINY

from lth.cli import main
from lth.studies import stability

pytestmark = pytest.mark.xdist_group("stability")   # its module fixture is computed once, on one worker

STAB = ["stability.rewind_points=0it,20it", "stability.alphas=5", "replicates=2"]


def stab_args(out, *sets):
    return ["stability", "--config", DEMO, "--no-progress", "--out", str(out)] + sum(
        [["--set", s] for s in TINY + STAB + list(sets)], [])


def points(out):
    return {os.path.basename(os.path.dirname(p)): json.load(open(p))
            for p in glob.glob(os.path.join(str(out), "*", "points", "*", "stability.json"))}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """IMP rewound to k = 20 run first (levels 0-2), then a stability study of the dense net and the
    level-2 tickets at k = 0 and k = 20 (level 1's mask comes from the dense run whatever k is): the k = 20 IMP run
    is reused, the k = 0 one is run by it."""
    out = tmp_path_factory.mktemp("stab")
    short = ["train.duration=40it"]   # k = 20 is mid-training; every run of the study is this long
    lot = ["lottery", "--config", DEMO, "--no-progress", "--out", str(out)] + sum(
        [["--set", s] for s in TINY + short + ["lottery.levels=2", "lottery.controls=", "replicates=2",
                                               "lottery.rewind=20it"]], [])
    assert main(lot) == 0
    (k20,) = glob.glob(os.path.join(str(out), "mnist1d_mlp-*"))
    before = os.stat(os.path.join(k20, "level_2", "metrics.json")).st_mtime_ns
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(stab_args(out, "stability.levels=2", *short)) == 0
    assert os.stat(os.path.join(k20, "level_2", "metrics.json")).st_mtime_ns == before   # reused, not retrained
    return out, k20, buf.getvalue()


def test_path_ends_equal_the_copies_own_evaluations(study):
    out, _, text = study
    pts = points(out)
    assert set(pts) == {"L0_k0", "L0_k20", "L2_k0", "L2_k20"}
    for p in pts.values():
        for split in ("train", "test"):
            curve, ends = np.asarray(p[f"{split}_error"]), np.asarray(p[f"{split}_endpoint_error"])
            assert curve.shape == (2, 5) and ends.shape == (2, 2)
            assert np.array_equal(curve[:, 0], ends[:, 0]) and np.array_equal(curve[:, -1], ends[:, 1])
        assert not np.array_equal(np.asarray(p["test_endpoint_error"])[:, 0],
                                  np.asarray(p["test_endpoint_error"])[:, 1]) \
            or p["copies"]["replicates"][0] != p["copies"]["replicates"][2]   # the copies did differ
    assert "| 0 | 100.00 | 20 |" in text


def test_tickets_at_each_k_come_from_imp_rewound_to_that_k(study):
    """Frankle et al. 2020, Algorithm 2: the ticket at k is level L of IMP rewound to k, applied to the
    dense run's weights at k — not one IMP run's mask for every k."""
    from lth.harness import checkpoint
    from lth.harness.run import keys, setup
    from lth.pruning import masks as M

    out, k20, _ = study
    (summary,) = [json.load(open(p)) for p in glob.glob(os.path.join(str(out), "stability_*", "summary.json"))]
    assert [(p["level"], p["k"]) for p in summary["points"]] == [(0, 0), (0, 20), (2, 0), (2, 20)]
    assert abs(summary["points"][2]["density"] - 0.64) < 0.01 and summary["points"][0]["density"] == 1.0
    runs = {p["k"]: p["lottery_run"] for p in summary["points"] if p["level"]}
    assert runs[20] == k20 and runs[0] != k20
    cfg0 = json.load(open(os.path.join(runs[0], "config.json")))["config"]
    assert cfg0["lottery"]["rewind"] == "0it" and cfg0["lottery"]["controls"] == ""
    assert not os.path.exists(os.path.join(runs[0], "level_3"))    # only the levels asked for
    from lth.harness.config import load_config
    s = setup(load_config(DEMO, TINY + STAB + ["train.duration=40it"]), stability.COMMAND)
    p0, ms0 = stability.init_variables(s, keys(s, "init"))
    like = s.trainer.new_state(p0, ms0, M.ones_like(p0), 0, keys(s, "train"), keys(s, "data"))
    stab_dir = os.path.dirname(os.path.dirname(os.path.dirname(
        glob.glob(os.path.join(str(out), "stability_*", "points", "L2_k20", "stability.json"))[0])))
    imp = {k: checkpoint.load(os.path.join(runs[k], "level_2", "final"), like).masks for k in (0, 20)}
    for k in (0, 20):
        two = jax.tree.map(lambda a: jnp.concatenate([a, a]), like)
        copies = checkpoint.load(os.path.join(stab_dir, "points", f"L2_k{k}", "copies", "final"), two).masks
        for a, b in zip(jax.tree.leaves(copies), jax.tree.leaves(imp[k])):
            assert np.array_equal(np.asarray(a), np.concatenate([np.asarray(b)] * 2))
        # the trunk's weights at k are IMP's rewind weights at k (the same dense run)
        rw = checkpoint.load(os.path.join(runs[k], "level_0", "rewind"), {"params": p0, "model_state": ms0})
        trunk = checkpoint.load(os.path.join(stab_dir, "trunk", f"k{k}"), {"params": p0, "model_state": ms0})
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(rw), jax.tree.leaves(trunk)))
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(imp[0]), jax.tree.leaves(imp[20])))


@pytest.mark.slow   # over ~15 s on 2 cores: `make test-all`
def test_copies_with_the_same_data_order_have_no_barrier(tmp_path, monkeypatch):
    from lth.harness.run import keys

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
    assert stability.interpolate(a, b, 0.0)["w"] is not None and np.array_equal(stability.interpolate(a, b, 0.0)["w"],
                                                                                 a["w"])
    assert np.array_equal(stability.interpolate(a, b, 1.0)["w"], b["w"])
    assert np.array_equal(stability.interpolate(a, a, 0.3)["w"], a["w"])


def test_barrier_is_the_peak_above_the_mean_of_the_ends():
    curve = np.array([[0.2, 0.5, 0.9, 0.4, 0.1],      # peak inside: 0.9 − (0.2 + 0.1)/2
                      [0.6, 0.3, 0.2, 0.1, 0.4]]).T   # peak at an end: 0.6 − (0.6 + 0.4)/2
    np.testing.assert_allclose(stability.barrier(curve), [0.75, 0.1], atol=1e-12)


def _conv0_mean(params, xs):
    p = params["conv_0"]
    pre = jax.lax.conv_general_dilated(xs.reshape(-1, *xs.shape[2:]), p["kernel"], (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]
    return pre.reshape(*xs.shape[:2], -1, pre.shape[-1]).mean(axis=(1, 2)).mean(0)


@pytest.mark.parametrize("bn", ["recompute", "interpolate"])
def test_both_batchnorm_modes_along_the_path_of_a_net_with_batchnorm(bn):
    """θ(α) is evaluated with its weights interpolated and its BatchNorm statistics either recomputed
    for θ(α) on training batches (recompute, at every α, ends included) or interpolated (interpolate)."""
    import dataclasses
    from types import SimpleNamespace

    from lth.models.inits import coerce
    from lth.models.vgg import VGG

    # conv-BN-ReLU, max-pool, conv-BN-ReLU, mean, dense: lth's VGG module with a short plan
    model = VGG((4, "M", 8), 10, dataclasses.replace(coerce("kaiming_normal"), conv_impl="xla"))
    stack = lambda t: jax.tree.map(lambda a: a[None], t)  # noqa: E731  (one replicate)
    init = jax.jit(model.init)
    v1, v2 = (init(jax.random.PRNGKey(i), jnp.zeros((1, 16, 16, 3))) for i in (0, 1))
    ms2 = jax.tree.map(lambda a: a + 0.5, v2["batch_stats"])

    @dataclasses.dataclass
    class St:
        params: dict
        model_state: dict

        def replace(self, **kw):
            return dataclasses.replace(self, **kw)
    seen = []

    def evaluate(st, split):
        seen.append(st)
        return jnp.zeros(1), jnp.full((1,), 0.5)
    trainer = type("T", (), {"model": model, "evaluate": staticmethod(evaluate)})()   # hashable, as a Trainer
    s = SimpleNamespace(trainer=trainer, cfg=SimpleNamespace(stability=SimpleNamespace(bn=bn)))
    a, b = (St(stack(v1["params"]), stack({"batch_stats": v1["batch_stats"]})),
            St(stack(v2["params"]), stack({"batch_stats": ms2})))
    xs = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 16, 16, 3))
    alphas = [0.0, 0.25, 1.0]
    stability.path_errors(s, a, b, {"test": None}, alphas, xs)
    assert len(seen) == len(alphas) + 2
    for alpha, st in zip(alphas, seen):
        w = jax.tree.map(lambda x, y: (1 - alpha) * x + alpha * y, v1["params"], v2["params"])
        np.testing.assert_allclose(np.asarray(st.params["conv_0"]["kernel"][0]), np.asarray(w["conv_0"]["kernel"]),
                                   rtol=1e-6, atol=1e-7)
        mean = np.asarray(st.model_state["batch_stats"]["bn_0"]["mean"][0])
        if bn == "recompute":
            np.testing.assert_allclose(mean, np.asarray(_conv0_mean(w, xs)), rtol=1e-4, atol=1e-5)
        else:
            want = (1 - alpha) * v1["batch_stats"]["bn_0"]["mean"] + alpha * ms2["bn_0"]["mean"]
            np.testing.assert_allclose(mean, np.asarray(want), rtol=1e-6, atol=1e-7)
    # the copies' own evaluations (the endpoint errors) use their own statistics
    assert seen[-2].model_state is a.model_state and seen[-1].model_state is b.model_state
    if bn == "recompute":   # statistics only come back (same compiled function: same trainer and shapes)
        new = stability.recompute_bn(s, a.params, a.model_state, xs)
        assert set(new) == {"batch_stats"}
        assert not np.allclose(np.asarray(new["batch_stats"]["bn_0"]["var"][0]),
                               np.asarray(v1["batch_stats"]["bn_0"]["var"]))


@pytest.mark.parametrize("sets, needle", [
    (["stability.rewind_points=0it,99ep"], "'99ep' = step"),
    (["stability.levels=1,x"], "bad stability.levels entry 'x'"),
    (["stability.levels=2", "prune.layer_fractions=out=0.6", "prune.of=original"], "empties that layer"),
    (["stability.alphas=1"], "stability.alphas 1 out of range"),
    (["stability.bn=average"], "'average'"),
])
def test_bad_input(tmp_path, capsys, sets, needle):
    assert main(stab_args(tmp_path, *sets)) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []
