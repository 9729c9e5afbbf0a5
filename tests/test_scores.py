"""Pruning-at-init scores against brute force and explicit Hessians; the iterative loop."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth import masks as M, pai
from lth.errors import UserError
from lth.scores import make_scorer
from lth.models import registry
from lth.scores import grasp as G, obd as O, snip as SN, synflow as SF


def tiny(widths=(4, 3), d_in=3, classes=2, seed=0, bias=False):
    model = registry.build("lenet_" + "_".join(map(str, widths)), classes, "kaiming_normal", (d_in,))
    v = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, d_in)))
    if bias:
        v = jax.tree.map(lambda a: a + 0.1, v)
    return model, v, lambda variables, x: model.apply(variables, x, train=False)


def data(n=12, d_in=3, classes=2, seed=1):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(k1, (n, d_in)), jax.random.randint(k2, (n,), 0, classes)


def test_synflow_equals_brute_force_path_sum():
    _, v, apply_fn = tiny()
    ws = [np.abs(np.asarray(v["params"][k]["kernel"], np.float64)) for k in ("fc_0", "fc_1", "out")]
    brute = [np.zeros_like(w) for w in ws]
    for path in itertools.product(*[range(n) for n in (3, 4, 3, 2)]):
        flow = np.prod([ws[l][path[l], path[l + 1]] for l in range(3)])
        for l in range(3):
            brute[l][path[l], path[l + 1]] += flow  # θ·∂R/∂θ = sum of the flows through θ
    masks = M.ones_like(v["params"])
    with jax.enable_x64(True):
        s = SF.synflow(apply_fn, v, masks, None, None, input_shape=(3,), precision="float64")
    for l, k in enumerate(("fc_0", "fc_1", "out")):
        np.testing.assert_allclose(np.asarray(s[k]["kernel"]), brute[l], rtol=1e-10)


def test_synflow_ignores_data_and_scaled32_ranks_like_float64():
    model, v, apply_fn = tiny((16, 8), d_in=5)
    prunable = M.prunable_tree(v["params"], r".*kernel")
    a = make_scorer("synflow", apply_fn, v, prunable, data(d_in=5, seed=1), (5,), synflow_precision="float64")
    b = make_scorer("synflow", apply_fn, v, prunable, data(d_in=5, seed=2), (5,), synflow_precision="float64")
    masks = M.ones_like(v["params"])
    for x, y in zip(jax.tree.leaves(a(v, masks, None)), jax.tree.leaves(b(v, masks, None))):
        np.testing.assert_array_equal(x, y)
    auto = make_scorer("synflow", apply_fn, v, prunable, None, (5,), synflow_precision="auto")
    assert auto.precision == "scaled32"  # an MLP at init is homogeneous per layer
    m64 = pai.prune_at_init(a, v, prunable, 0.05, rounds=20)
    m32 = pai.prune_at_init(auto, v, prunable, 0.05, rounds=20)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(m64), jax.tree.leaves(m32)))
    _, vb, fb = tiny((16, 8), d_in=5, bias=True)  # nonzero biases break homogeneity → float64
    assert make_scorer("synflow", fb, vb, prunable, None, (5,), synflow_precision="auto").precision == "float64"


def test_iterative_synflow_avoids_layer_collapse_on_narrow_vgg():
    model = registry.build("vgg11", 10, "kaiming_normal", (16, 16, 3), width=1 / 16)
    v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    apply_fn = lambda variables, x: model.apply(variables, x, train=False)  # noqa: E731
    prunable = M.prunable_tree(v["params"], r".*kernel")
    sizes = [n for _, n in M.counts(M.ones_like(v["params"]), prunable).values()]
    top = pai.max_compression(sizes)
    syn = make_scorer("synflow", apply_fn, v, prunable, None, (16, 16, 3), synflow_precision="float64")
    masks = pai.prune_at_init(syn, v, prunable, 1 / top, rounds=100)
    kept = pai.kept_per_layer(masks, prunable)
    assert min(kept.values()) >= 1 and sum(kept.values()) == round(sum(sizes) / top)
    mag = make_scorer("magnitude", apply_fn, v, prunable, None, (16, 16, 3))
    assert min(pai.kept_per_layer(pai.prune_at_init(mag, v, prunable, 1 / top), prunable).values()) == 0


def test_obd_exact_diagonal_equals_jax_hessian_and_hutchinson_converges():
    _, v, apply_fn = tiny()
    x, y = data()
    from lth.scores.common import loss_fn
    from jax.flatten_util import ravel_pytree
    loss = loss_fn(apply_fn, v)
    flat, unravel = ravel_pytree(v["params"])
    want = np.diag(np.asarray(jax.jit(jax.hessian(lambda f: loss(unravel(f), x, y)))(flat)))
    exact = np.asarray(ravel_pytree(jax.jit(lambda p: O.diag_exact(loss, p, x, y, chunk=8))(v["params"]))[0])
    np.testing.assert_allclose(exact, want, rtol=1e-4, atol=1e-6)
    err = {}
    for probes in (8, 512):
        est = np.asarray(ravel_pytree(O.diag_hutchinson(loss, v["params"], x, y, jax.random.PRNGKey(0), probes, chunk=128))[0])
        err[probes] = np.linalg.norm(est - want) / np.linalg.norm(want)
    assert err[512] < 0.35 and err[512] < err[8] / 3
    s = jax.jit(lambda v: O.obd(apply_fn, v, M.ones_like(v["params"]), (x, y), None, method="exact"))(v)
    w = v["params"]["fc_0"]["kernel"]
    np.testing.assert_allclose(s["fc_0"]["kernel"], 0.5 * unravel(jnp.asarray(want))["fc_0"]["kernel"] * w ** 2, rtol=1e-4, atol=1e-8)
    fisher = jax.jit(lambda v: O.hessian_diagonal(apply_fn, v, v["params"], (x, y), jax.random.PRNGKey(0), "fisher"))(v)
    assert all(bool(jnp.all(f >= 0)) for f in jax.tree.leaves(fisher))  # a sum of squares


def test_snip_equals_gradient_times_weight():
    _, v, apply_fn = tiny()
    x, y = data()
    from lth.scores.common import loss_fn
    g1 = jax.grad(loss_fn(apply_fn, v))(v["params"], x[:6], y[:6])
    g2 = jax.grad(loss_fn(apply_fn, v))(v["params"], x[6:], y[6:])
    s = SN.snip(apply_fn, v, M.ones_like(v["params"]), (x, y), None, batches=2)
    for k in ("fc_0", "out"):
        np.testing.assert_allclose(s[k]["kernel"], np.abs((g1[k]["kernel"] + g2[k]["kernel"]) * v["params"][k]["kernel"]), rtol=1e-5)


def test_grasp_hessian_gradient_equals_explicit_product():
    _, v, apply_fn = tiny(bias=True)
    x, y = data()
    from jax.flatten_util import ravel_pytree
    from lth.scores.common import loss_fn
    loss = loss_fn(apply_fn, v, 200.0)
    flat, unravel = ravel_pytree(v["params"])
    f = lambda z: loss(unravel(z), x, y)  # noqa: E731
    want = np.asarray(jax.jit(lambda z: jax.hessian(f)(z) @ jax.grad(f)(z))(flat))
    hg = np.asarray(ravel_pytree(G.hessian_gradient(apply_fn, v, v["params"], (x, y), 1, 200.0))[0])
    np.testing.assert_allclose(hg, want, rtol=1e-4, atol=1e-10)
    s = G.grasp(apply_fn, v, M.ones_like(v["params"]), (x, y), None)
    np.testing.assert_allclose(ravel_pytree(s)[0], want * np.asarray(flat), rtol=1e-4, atol=1e-12)


def test_inversion_keeps_the_complement_ranking_and_counts_are_exact():
    _, v, apply_fn = tiny((40, 30), d_in=20)
    prunable = M.prunable_tree(v["params"], r".*kernel")
    mag = make_scorer("magnitude", apply_fn, v, prunable, None, (20,))
    total = 20 * 40 + 40 * 30 + 30 * 2
    inv = pai.prune_at_init(mag, v, prunable, 0.1, invert=True)
    flat_w = np.concatenate([np.abs(np.asarray(v["params"][k]["kernel"])).ravel() for k in ("fc_0", "fc_1", "out")])
    flat_m = np.concatenate([np.asarray(inv[k]["kernel"]).ravel() for k in ("fc_0", "fc_1", "out")])
    assert flat_m.sum() == round(0.1 * total)
    assert flat_w[flat_m].max() <= flat_w[~flat_m].min()  # inverted: the lowest-magnitude weights are kept
    for scope in ("global", "layerwise"):
        m = pai.prune_at_init(make_scorer("snip", apply_fn, v, prunable, data(d_in=20), (20,)), v, prunable, 0.037,
                              rounds=3, schedule="linear", scope=scope)
        kept = pai.kept_per_layer(m, prunable)
        if scope == "global":
            assert sum(kept.values()) == round(0.037 * total)
        else:
            assert kept == {"fc_0/kernel": round(0.037 * 800), "fc_1/kernel": round(0.037 * 1200), "out/kernel": round(0.037 * 60)}


def test_bad_inputs():
    _, v, apply_fn = tiny()
    prunable = M.prunable_tree(v["params"], r".*kernel")
    with pytest.raises(UserError, match="'snap'"):
        make_scorer("snap", apply_fn, v, prunable, None, (3,))
    with pytest.raises(UserError, match="'snip' needs data"):
        make_scorer("snip", apply_fn, v, prunable, None, (3,))
    with pytest.raises(UserError, match="0.5"):
        pai.parse_compression("0.5")
    assert pai.parse_compression("10^2") == pytest.approx(100)
    with pytest.raises(UserError, match="beyond max compression"):
        pai.check_target(1e4, [12, 12, 6], "global")
    with pytest.raises(UserError, match="rounds 0"):
        pai.densities(0.1, 0, "exponential")
