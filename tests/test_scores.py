"""Pruning-at-init scores against brute force and explicit Hessians; the iterative loop."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth.errors import UserError
from lth.models import zoo
from lth.pruning import at_init as pai
from lth.pruning import masks as M
from lth.scores import grasp as G
from lth.scores import make_scorer
from lth.scores import obd as O
from lth.scores import snip as SN
from lth.scores import synflow as SF


def tiny(widths=(4, 3), d_in=3, classes=2, seed=0, bias=False):
    model = zoo.build("lenet_" + "_".join(map(str, widths)), classes, "kaiming_normal", (d_in,))
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


@pytest.mark.slow
def test_iterative_synflow_avoids_layer_collapse_on_narrow_vgg():
    model = zoo.build("vgg11", 10, "kaiming_normal", (16, 16, 3), width=1 / 16)
    v = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
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


@pytest.mark.slow
def test_obd_exact_diagonal_equals_jax_hessian_and_hutchinson_converges():
    _, v, apply_fn = tiny()
    x, y = data()
    from jax.flatten_util import ravel_pytree

    from lth.scores.common import loss_fn
    loss = loss_fn(apply_fn, v)
    flat, unravel = ravel_pytree(v["params"])
    want = np.diag(np.asarray(jax.jit(jax.hessian(lambda f: loss(unravel(f), x, y)))(flat)))
    exact = np.asarray(ravel_pytree(jax.jit(lambda p: O.diag_exact(loss, p, x, y, chunk=8))(v["params"]))[0])
    np.testing.assert_allclose(exact, want, rtol=1e-4, atol=1e-6)
    err = {}
    for probes in (8, 512):
        hutch = jax.jit(lambda p, n=probes: O.diag_hutchinson(loss, p, x, y, jax.random.PRNGKey(0), n, chunk=128))
        est = np.asarray(ravel_pytree(hutch(v["params"]))[0])
        err[probes] = np.linalg.norm(est - want) / np.linalg.norm(want)
    assert err[512] < 0.35 and err[512] < err[8] / 3
    s = jax.jit(lambda v: O.obd(apply_fn, v, M.ones_like(v["params"]), (x, y), None, method="exact"))(v)
    w = v["params"]["fc_0"]["kernel"]
    np.testing.assert_allclose(s["fc_0"]["kernel"], 0.5 * unravel(jnp.asarray(want))["fc_0"]["kernel"] * w ** 2,
                               rtol=1e-4, atol=1e-8)
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
        np.testing.assert_allclose(s[k]["kernel"],
                                   np.abs((g1[k]["kernel"] + g2[k]["kernel"]) * v["params"][k]["kernel"]), rtol=1e-5)


def test_grasp_hessian_gradient_equals_explicit_product():
    """Hg = H g w.r.t. the prunable weights only (kernels; biases held fixed), the mask inside the
    network, gradient and Hessian summed over the batches: F(w) = Σ_b L_b(w ⊙ m), Hg = ∇²F ∇F."""
    _, v, apply_fn = tiny(bias=True)
    x, y = data()
    from jax.flatten_util import ravel_pytree

    from lth.scores.common import chunks, loss_fn
    params = v["params"]
    prunable = M.prunable_tree(params, r".*kernel")
    masks = jax.tree.map(np.asarray, M.ones_like(params))
    masks["fc_1"]["kernel"] = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(3), 0.6, (4, 3)))
    assert not masks["fc_1"]["kernel"].all()
    flat, unravel = ravel_pytree({k: params[k]["kernel"] for k in params})
    mflat = ravel_pytree({k: masks[k]["kernel"] for k in params})[0]
    loss = loss_fn(apply_fn, v, 200.0)

    def f(z, xb, yb):
        k = unravel(z * mflat)
        return loss({n: {**params[n], "kernel": k[n]} for n in params}, xb, yb)
    for batches in (1, 2):
        xs, ys = chunks((x, y), batches)
        F = lambda z: sum(f(z, xs[b], ys[b]) for b in range(batches))  # noqa: E731
        want = np.asarray(jax.jit(lambda z: jax.hessian(F)(z) @ jax.grad(F)(z))(flat))
        hg, s = jax.jit(lambda m: (G.hessian_gradient(apply_fn, v, m, prunable, (x, y), batches, 200.0)[0],
                                   G.grasp(apply_fn, v, m, (x, y), None, prunable=prunable, batches=batches)))(masks)
        got = np.asarray(ravel_pytree({k: hg[k]["kernel"] for k in params})[0])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-10)
        assert all(not np.any(np.asarray(hg[k]["bias"])) for k in params)
        sk = np.asarray(ravel_pytree({k: s[k]["kernel"] for k in params})[0])
        keep = np.asarray(mflat)
        np.testing.assert_allclose(sk[keep], (want * np.asarray(flat))[keep], rtol=1e-4, atol=1e-12)
        assert np.isneginf(sk[~keep]).all() and all(not np.any(np.asarray(s[k]["bias"])) for k in params)


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
            assert kept == {"fc_0/kernel": round(0.037 * 800), "fc_1/kernel": round(0.037 * 1200),
                            "out/kernel": round(0.037 * 60)}


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


def test_synflow_with_batchnorm_equals_finite_differences_of_the_linearized_net():
    """SynFlow on a net with BatchNorm: every variable |·|'d (running mean/var included), BN in eval
    mode, all-ones input, R = Σ logits, score = |∂R/∂θ · θ| — against central differences of R."""
    import dataclasses
    import functools
    import types

    from lth.harness.run import Setup
    from lth.models.inits import coerce
    from lth.models.vgg import VGG

    # conv-BN-ReLU, max-pool, conv-BN-ReLU, mean, dense: the lth VGG module with a short plan
    model = VGG((4, "M", 8), 3, dataclasses.replace(coerce("kaiming_normal"), conv_impl="xla"))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 3)))
    rng = np.random.default_rng(0)   # signed γ, β and running means; positive running variances
    v = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
    v["batch_stats"] = {k: {"mean": rng.normal(0, 2, s["mean"].shape).astype(np.float32),
                            "var": rng.uniform(0.2, 3.0, s["var"].shape).astype(np.float32)}
                        for k, s in shapes["batch_stats"].items()}
    prunable = M.prunable_tree(v["params"], r".*kernel")
    masks = jax.tree.map(lambda a, pr: rng.random(a.shape) < 0.7 if pr else np.ones(a.shape, bool), v["params"],
                         prunable)
    # the apply every run's scores see (lth.run.Setup.apply_fn); masks from an earlier round
    apply_fn = functools.partial(Setup.apply_fn, types.SimpleNamespace(trainer=types.SimpleNamespace(model=model)))
    scores = make_scorer("synflow", apply_fn, v, prunable, None, (4, 4, 3), synflow_precision="float64")(v, masks, None)
    assert all(s.dtype == np.float64 for s in jax.tree.leaves(scores))
    flat = lambda tree: np.concatenate([np.asarray(a).ravel() for a in jax.tree.leaves(tree)])  # noqa: E731
    got = flat(scores)
    leaves, treedef = jax.tree.flatten(v["params"])
    cuts = np.cumsum([a.size for a in leaves])[:-1]
    lin = jax.tree.map(lambda a: np.abs(a.astype(np.float64)), v)
    w = flat(jax.tree.map(lambda a, m: a * m, lin["params"], masks))
    live = flat(jax.tree.map(lambda m, pr: m & pr, masks, prunable))
    dead = flat(jax.tree.map(lambda m, pr: ~m & pr, masks, prunable))
    with jax.enable_x64(True):
        def R(f):
            params = jax.tree.unflatten(treedef, [p.reshape(a.shape) for p, a in zip(jnp.split(f, cuts), leaves)])
            return jnp.sum(model.apply({**lin, "params": params}, jnp.ones((1, 4, 4, 3), jnp.float64), train=False))
        R = jax.jit(R)
        pick = rng.choice(np.flatnonzero(live), 150, replace=False)
        brute = []
        for i in pick:   # R is piecewise linear in one weight: central differences are exact but for rounding
            e = np.zeros_like(w)
            e[i] = 1e-4 * w[i]
            brute.append(abs((float(R(w + e)) - float(R(w - e))) / (2 * e[i]) * w[i]))
    assert np.all(np.isneginf(got[dead]))   # pruned weights stay pruned
    np.testing.assert_allclose(got[pick], brute, rtol=1e-5)


def test_obd_fisher_is_half_the_mean_squared_sampled_label_gradient_times_w2():
    """obd_method='fisher': ½·F_ii·w_i², F_ii = (1/N) Σ_n (∂ log p(ŷ_n|x_n)/∂θ_i)² with one label ŷ_n drawn
    from the model's own predictive distribution per example (the true Fisher, = the GGN of the
    cross-entropy in expectation; not the empirical Fisher of the data labels) — recomputed here one
    example at a time."""
    model = zoo.build("lenet_5", 3, "kaiming_normal", (4,))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    rng = np.random.default_rng(0)
    v = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
    apply_fn = lambda variables, x: model.apply(variables, x, train=False)  # noqa: E731
    n = 20   # not a multiple of the estimator's chunk of 16
    x, y = rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n)
    masks = jax.tree.map(lambda a: rng.random(a.shape) < 0.8, v["params"])
    key = jax.random.PRNGKey(7)
    got = jax.jit(lambda v, k: O.obd(apply_fn, v, masks, (x, y), k, method="fisher"))(v, key)
    params = jax.tree.map(lambda w, m: np.where(m, w, np.float32(0)), v["params"], masks)
    yhat = np.asarray(jax.jit(lambda k: jax.random.categorical(k, apply_fn({**v, "params": params}, x)))(key))
    assert not np.array_equal(yhat, y)   # ŷ_n ~ softmax(logits(x_n)), drawn as the estimator draws it
    grad_logp = jax.jit(jax.grad(lambda p, xi, yi: jax.nn.log_softmax(apply_fn({**v, "params": p}, xi[None])[0])[yi]))
    fisher = jax.tree.map(np.zeros_like, params)
    for i in range(n):
        fisher = jax.tree.map(lambda f, g: f + np.asarray(g, np.float64) ** 2, fisher, grad_logp(params, x[i], yhat[i]))
    want = jax.tree.map(lambda f, w, m: np.where(m, 0.5 * (f / n) * np.asarray(w, np.float64) ** 2, -np.inf),
                        fisher, params, masks)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12)
