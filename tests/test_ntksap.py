"""NTK-SAP (lth/scores/ntksap.py) equals YiteWang/NTK-SAP's `NTKSAP.score` on stored outputs
(tests/data/make_ntksap_reference.py): the same draws give the same scores on a VGG with BatchNorm;
the prune set's batches follow the reference's loader; the registered score runs in `lth pai`."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT
from flax import traverse_util

from lth.models import zoo
from lth.pruning import masks as M
from lth.scores import ntksap as N

REF = os.path.join(ROOT, "tests", "data", "ntksap_reference.npz")


def tiny_vgg():
    model = zoo.build("vgg11", 10, "kaiming_normal", (32, 32, 3), 1 / 16)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    return model, jax.tree.map(np.asarray, variables)


def test_scores_equal_the_reference_on_the_same_draws():
    ref = np.load(REF)
    model, variables = tiny_vgg()
    names = sorted({k.split(":")[1] for k in ref.files if k.startswith("mask:")})
    flat = traverse_util.flatten_dict(variables["params"], sep="/")
    for n in names:
        flat[f"{n}/bias"] = ref[f"bias:{n}"]
    params = traverse_util.unflatten_dict(flat, sep="/")
    variables = {**variables, "params": params}
    prunable = jax.tree.map(lambda _: False, params)
    masks = M.ones_like(params)
    for n in names:
        prunable[n]["kernel"] = True
        masks[n]["kernel"] = jnp.asarray(ref[f"mask:{n}"])

    def apply_fn(v, x):
        return model.apply(v, x, train=False)

    def stats_fn(v, x):
        return model.apply(v, x, train=True, mutable=["batch_stats"])[1]["batch_stats"]

    eps = float(ref["epsilon"])

    def draw(key, s):
        f = dict(flat)
        for n in names:
            f[f"{n}/kernel"] = ref[f"{key}:{s}:{n}"]
        return traverse_util.unflatten_dict(f, sep="/")
    draws = []
    for s in range(int(ref["samples"])):
        theta, z = draw("theta", s), draw("z", s)
        theta_p = jax.tree.map(lambda t, zz, on: t + eps * zz if on else t, theta, z, prunable)
        draws.append((theta, theta_p, jnp.asarray(ref[f"x:{s}"])))
    scores = jax.jit(lambda m, d: N.from_draws(apply_fn, stats_fn, variables, m, d))(masks, draws)
    for n in names:
        got, want, keep = np.asarray(scores[n]["kernel"]), ref[f"score:{n}"], ref[f"mask:{n}"]
        np.testing.assert_array_equal(want[~keep], 0)
        assert np.isneginf(got[~keep]).all()
        assert np.abs(got[keep] - want[keep]).max() <= 2e-4 * np.abs(want).max(), n


def test_noise_batches_follow_the_reference_prune_loader():
    """--prune-dataset-ratio 10 × classes inputs in batches of --prune-batch-size, ntksap_R passes:
    CIFAR-10 with run.sh's R = 5 is five batches of 100; CIFAR-100 with R = 1 is 256, 256, 256, 232."""
    assert N.batch_sizes(10, 256, 5) == [100] * 5
    assert N.batch_sizes(100, 256, 1) == [256, 256, 256, 232]


@pytest.mark.slow
def test_the_registered_score_redraws_and_calibrates(tmp_path):
    """Through a Scorer with BatchNorm: finite, pruned weights at -inf, a new key gives new scores, the
    model's own weights are not read (its kernels scaled by 10: the same scores)."""
    from lth.scores import make_scorer

    model, variables = tiny_vgg()
    prunable = jax.tree.map(lambda x: x.ndim >= 2, variables["params"])
    sc = make_scorer("ntksap", lambda v, x: model.apply(v, x, train=False), variables, prunable, None, (32, 32, 3),
                     stats_fn=lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[1]["batch_stats"],
                     batch_size=50)
    masks = M.ones_like(variables["params"])
    masks["conv_0"]["kernel"] = masks["conv_0"]["kernel"].at[0].set(False)
    a = sc(variables, masks, jax.random.PRNGKey(1))
    assert np.isneginf(np.asarray(a["conv_0"]["kernel"][0])).all()
    assert all(np.isfinite(np.asarray(x)[np.asarray(m)]).all() for x, m in zip(jax.tree.leaves(a),
                                                                               jax.tree.leaves(masks)))
    scaled = {**variables, "params": jax.tree.map(lambda p, on: p * 10 if on else p, variables["params"], prunable)}
    b = sc(scaled, masks, jax.random.PRNGKey(1))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5)
    c = sc(variables, masks, jax.random.PRNGKey(2))
    assert not np.allclose(np.asarray(a["out"]["kernel"]), np.asarray(c["out"]["kernel"]))
