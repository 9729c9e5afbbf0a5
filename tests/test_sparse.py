"""Layer density distributions, GMP / SET / RigL mask updates (against stored rigl / jaxpruner
outputs: tests/data/make_sparse_reference.py), their training-loop invariants and `lth sparse`."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth.harness import checkpoint
from lth.pruning import masks as M
from lth.pruning import sparsity as SP
from lth.pruning.sparse_train import MaskUpdate, drop_and_grow, drop_fraction, gmp_sparsity, reset_slots

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF = np.load(os.path.join(ROOT, "tests", "data", "sparse_reference.npz"))
SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)


def model_shapes(m):
    return {n: tuple(int(x) for x in s.split("x")) for n, s in zip(REF[f"layers/{m}"], REF[f"shapes/{m}"])}


# ----- distributions -----------------------------------------------------------------------------
@pytest.mark.parametrize("m", ["lenet300", "resnet20", "vgg16"])
def test_distributions_and_counts_equal_the_references(m):
    shapes = model_shapes(m)
    names, first = list(shapes), list(shapes)[0]
    for s in SPARSITIES:
        for dist in ("erk", "er", "uniform"):
            d = SP.densities(shapes, 1 - s, dist)
            np.testing.assert_allclose([1 - d[n] for n in names], REF[f"{dist}/{m}/{s}"], rtol=0, atol=1e-12)
        d = SP.densities(shapes, 1 - s, "erk", custom={first: 1.0})   # rigl's CIFAR set: first layer unmasked
        np.testing.assert_allclose([1 - d[n] for n in names], REF[f"erk_first_dense/{m}/{s}"], rtol=0, atol=1e-12)
        for dist in ("erk", "uniform"):   # rigl get_mask_random_numpy: ⌊s·n⌋ zeros per layer
            d = SP.densities(shapes, 1 - s, dist)
            kept = [SP.kept(int(np.prod(shapes[n])), d[n]) for n in names]
            np.testing.assert_array_equal(kept, REF[f"rigl_counts/{dist}/{m}/{s}"])
        want = REF[f"uniform_plus/{m}/{s}"]
        if np.all(want < 1):
            d = SP.densities(shapes, 1 - s, "uniform_plus")
            np.testing.assert_allclose([1 - d[n] for n in names], want, rtol=0, atol=1e-12)
        else:   # the reference would empty a layer: refused, naming the lowest density allowed
            with pytest.raises(SP.UserError, match="too low for uniform_plus"):
                SP.densities(shapes, 1 - s, "uniform_plus")


def test_erk_makes_the_densest_layers_dense_and_keeps_the_budget():
    shapes = model_shapes("resnet20")
    d = SP.densities(shapes, 0.5, "erk")
    assert max(d.values()) == 1.0 and min(d.values()) < 0.5
    n = {k: int(np.prod(v)) for k, v in shapes.items()}
    # floor counts: the budget is Σ (n − ⌊s·n⌋), met within one weight per layer
    assert abs(sum(d[k] * n[k] for k in n) - sum(n[k] - np.floor(0.5 * n[k]) for k in n)) < 1e-6 * sum(n.values())


# ----- the update rules --------------------------------------------------------------------------
LAYERS = ("Dense_0", "Dense_1")


def jaxpruner_drop(n_on, size, df):
    """jaxpruner's drop count (SET._update_masks: keep round(size·density·(1 − df)) in float32)."""
    f32 = np.float32
    inter = f32(1) - f32(n_on) / f32(size) * (f32(1) - f32(df))
    return n_on - int(np.round(f32(size) * (f32(1) - inter)))


@pytest.mark.parametrize("alg", ["rigl", "set", "rigl_ties"])
def test_drop_and_grow_equals_jaxpruner(alg):
    df = float(REF["rigl/drop_fraction"])
    for layer in LAYERS:
        src = "rigl_ties" if alg == "rigl_ties" else "mlp"
        w, g = REF[f"{src}/params/{layer}"], REF[f"{src}/grads/{layer}"]
        m = REF[f"mlp/masks/{layer}"].astype(bool)
        score = REF[f"set/grow_scores/{layer}"] if alg == "set" else np.abs(g)
        new = drop_and_grow(jnp.asarray(w), jnp.asarray(m), jnp.asarray(score),
                            jaxpruner_drop(int(m.sum()), m.size, df))
        np.testing.assert_array_equal(np.asarray(new), REF[f"{alg}/new_masks/{layer}"].astype(bool))
        assert int(np.sum(new)) == int(m.sum())
        if alg != "rigl_ties":   # the drop keeps the largest |w| of the active weights (jaxpruner's intermediate mask)
            n_keep = int(m.sum()) - jaxpruner_drop(int(m.sum()), m.size, df)
            top = np.zeros(m.size, bool)
            top[np.argsort(-np.where(m, np.abs(w), -1).ravel(), kind="stable")[:n_keep]] = True
            np.testing.assert_array_equal(top.reshape(m.shape), REF[f"{alg}/dropped_mask/{layer}"].astype(bool))
            assert np.all(np.asarray(new)[top.reshape(m.shape)])


def test_drop_count_is_rigls_floor_and_cosine_and_gmp_schedules_equal_jaxpruner():
    # rigl sparse_optimizers_base: n_prune = int(n_ones · drop_fraction); f(t) = α/2 (1 + cos(π t / T_end))
    np.testing.assert_allclose(np.asarray(jax.vmap(lambda t: drop_fraction(t, 0.3, 100))(REF["cosine/steps"])),
                               REF["cosine/drop_fraction"], atol=1e-7)
    mu = MaskUpdate("rigl", (0.5, 0.5), 0, 100, 10)
    m = jax.tree.map(lambda k: jnp.asarray(REF[f"mlp/masks/{k}"].astype(bool)), dict(zip(LAYERS, LAYERS)))
    w = {k: jnp.asarray(REF[f"mlp/params/{k}"]) for k in LAYERS}
    g = {k: jnp.asarray(REF[f"mlp/grads/{k}"]) for k in LAYERS}
    new = mu.new_masks(30, w, m, g, jax.random.PRNGKey(0))
    for k in LAYERS:
        n_on = int(np.sum(m[k]))
        dropped = n_on - int(np.sum(new[k] & m[k]))
        regrown = REF["rigl/new_masks/" + k].astype(bool)   # jaxpruner drops one more (round, not floor)
        assert dropped <= int(np.floor(n_on * float(REF["rigl/drop_fraction"])))
        assert int(np.sum(new[k])) == n_on and int(np.sum(regrown)) == n_on
    # jaxpruner's PolynomialSchedule at count t is s(t + 1): the sparsity once that step is taken
    steps = REF["poly/steps"]
    np.testing.assert_allclose([float(gmp_sparsity(t + 1, 0.9, 10, 110)) for t in steps], REF["poly/sparsity"],
                               atol=1e-6)
    gmp = MaskUpdate("gmp", (0.1,), 10, 110, 10)
    assert [gmp.is_update(int(t)) for t in steps] == REF["poly/is_update"].tolist()
    # GMP's count from that sparsity is rigl's ⌊s·n⌋ zeros (jaxpruner rounds: at most one apart)
    w1 = jnp.asarray(np.random.default_rng(0).permutation(1000).astype(np.float32) + 1)
    mask = jnp.ones(1000, bool)
    for t in steps:
        if gmp.is_update(int(t)):
            mask = gmp.new_masks(int(t), (w1,), (mask,), (w1,), None)[0]
            s_t = float(REF["poly/sparsity"][t])
            want = SP.kept(1000, 0.1) if t + 1 >= 110 else 1000 - int(np.floor(np.float32(s_t) * 1000))
            assert int(mask.sum()) == want, t
            assert abs(int(mask.sum()) - 1000 * REF["gmp/density"][t]) <= 1


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_grown_weights_slots_are_zeroed_as_jaxpruner(opt):
    import optax
    tx = optax.sgd(0.1, momentum=0.9) if opt == "sgd" else optax.adam(1e-3)
    params = {k: jnp.asarray(REF[f"mlp/params/{k}"]) for k in LAYERS}
    state = tx.init(params)
    if opt == "sgd":
        state = (optax.TraceState(trace={k: jnp.asarray(REF[f"mlp/trace/{k}"]) for k in LAYERS}),) + state[1:]
    else:
        state = (state[0]._replace(mu={k: jnp.asarray(REF[f"mlp/mu/{k}"]) for k in LAYERS},
                                   nu={k: jnp.asarray(REF[f"mlp/nu/{k}"]) for k in LAYERS}),) + state[1:]
    alg = "rigl" if opt == "sgd" else "rigl_adam"
    old = {k: REF[f"mlp/masks/{k}"].astype(bool) for k in LAYERS}
    activated = {k: jnp.asarray(REF[f"{alg}/new_masks/{k}"].astype(bool) & ~old[k]) for k in LAYERS}
    out = reset_slots(tx, state, activated)
    for k in LAYERS:
        if opt == "sgd":
            np.testing.assert_array_equal(out[0].trace[k], REF[f"rigl/trace_after/{k}"])
        else:
            np.testing.assert_array_equal(out[0].mu[k], REF[f"rigl_adam/mu_after/{k}"])
            np.testing.assert_array_equal(out[0].nu[k], REF[f"rigl_adam/nu_after/{k}"])


# ----- in the training loop ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def sparse_setup():
    from conftest import tiny_config

    from lth.harness import run as harness
    from lth.studies import sparse

    cfg = tiny_config("sparse.every=4it", "sparse.end=40it", "sparse.densities=0.2", "replicates=2",
                      "sparse.custom=out=1")
    s = harness.setup(cfg, sparse.COMMAND)
    return s, sparse.check(s)


def slot_trees(tx, opt_state, n_leaves):
    """The optimizer state's param-shaped trees (momentum, Adam's moments), each as its leaf list."""
    import optax
    out = []
    optax.tree_map_params(tx, lambda v: out.append(v) or v, opt_state)
    return [out[i:i + n_leaves] for i in range(0, len(out), n_leaves)]


def _trainer(s, method, dens):
    import dataclasses

    from lth.studies import sparse
    mu = sparse.mask_update(s, method, dens, "layerwise")
    return dataclasses.replace(s.trainer, sparse=mu), mu


@pytest.mark.parametrize("method", ["rigl", "gmp"])   # SET: the study test and the reference update
def test_every_step_keeps_counts_zeros_and_zeroed_slots(sparse_setup, method):
    from lth.harness.run import init_variables, keys
    from lth.training.loop import device_data

    s, layer_dens = sparse_setup
    t, mu = _trainer(s, method, layer_dens["rigl-erk@0.2"])
    params, ms = init_variables(s, keys(s, "init"))
    masks0 = jax.vmap(mu.initial_masks)(params, keys(s, "sparse_mask"))
    state = t.new_state(params, ms, masks0, 0, keys(s, "train"), keys(s, "data"))
    data = device_data(t, s.dataset)
    perm = t.epoch_perm(state.data_rng, 0)
    want = {p: SP.kept(int(np.prod(x.shape[1:])), d) for p, x, d in
            zip(M.leaf_paths(params), jax.tree.leaves(params), mu.density) if d is not None}
    moved = 0
    for step in range(13):
        prev = state
        state, _ = t.run_steps(state, perm, data.x_train, data.y_train, 1)
        for path, w, m, p in zip(M.leaf_paths(state.params), jax.tree.leaves(state.params),
                                 jax.tree.leaves(state.masks), jax.tree.leaves(prev.masks)):
            w, m, p = map(np.asarray, (w, m, p))
            assert np.all(w[~m] == 0), (step, path)               # pruned weights exactly 0 after every step
            if path in want and method != "gmp":
                assert (m.reshape(2, -1).sum(1) == want[path]).all(), (step, path)   # counts never change
            if method == "gmp":
                assert not np.any(m & ~p)                          # pruned weights never return
        if mu.is_update(step) and method != "gmp":
            slots = slot_trees(t.tx, state.opt_state, len(jax.tree.leaves(state.params)))
            assert slots   # SGD's momentum
            for i, (w, m, p) in enumerate(zip(jax.tree.leaves(state.params), jax.tree.leaves(state.masks),
                                              jax.tree.leaves(prev.masks))):
                grown = np.asarray(m) & ~np.asarray(p)
                moved += int(grown.sum())
                assert np.all(np.asarray(w)[grown] == 0)
                assert all(np.all(np.asarray(tr[i])[grown] == 0) for tr in slots)
            # no optimizer step on an update step: every weight kept is unchanged
            for w, wp, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(prev.params),
                                jax.tree.leaves(state.masks)):
                np.testing.assert_array_equal(np.asarray(w)[np.asarray(m)], np.asarray(wp)[np.asarray(m)])
    if method == "gmp":   # steps 0, 4, 8, 12 pruned toward ERK densities: s(13) of the final sparsity
        for path, m in zip(M.leaf_paths(state.masks), jax.tree.leaves(state.masks)):
            if path in want:
                d = layer_dens["rigl-erk@0.2"][path]
                n = int(np.prod(m.shape[1:]))
                s13 = float(gmp_sparsity(13, 1.0 - d, 0, 40))
                assert (np.asarray(m).reshape(2, -1).sum(1) == n - int(np.floor(np.float32(s13) * n))).all()
    else:
        assert moved > 0


def test_set_resumes_mid_schedule_bit_identically_and_replicates_are_independent(sparse_setup, tmp_path):
    """SET's random grow comes from the checkpointed step key: a resumed run (stopped at step 11, between
    the updates at 8 and 12) draws the same."""
    from lth.harness.run import init_variables, keys
    from lth.training.loop import device_data, fit

    s, layer_dens = sparse_setup
    t, mu = _trainer(s, "set", layer_dens["rigl-erk@0.2"])
    params, ms = init_variables(s, keys(s, "init"))
    masks0 = jax.vmap(mu.initial_masks)(params, keys(s, "sparse_mask"))
    data = device_data(t, s.dataset)
    new = lambda: t.new_state(params, ms, masks0, 0, keys(s, "train"), keys(s, "data"))  # noqa: E731
    full, _ = fit(t, new(), data, 22, eval_every=0, history=[])
    part, _ = fit(t, new(), data, 11, eval_every=0, history=[])
    checkpoint.save(str(tmp_path / "mid"), part)
    resumed, _ = fit(t, checkpoint.load(str(tmp_path / "mid"), new()), data, 22, eval_every=0, history=[])
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(full.masks), jax.tree.leaves(masks0)))
    # each replicate ends where it ends whatever runs beside it: the replicates swapped end swapped
    swapped, _ = fit(t, jax.tree.map(lambda a: a[::-1], new()), data, 22, eval_every=0, history=[])
    for a, b in zip(jax.tree.leaves(swapped.masks), jax.tree.leaves(full.masks)):
        np.testing.assert_array_equal(np.asarray(a)[::-1], np.asarray(b))
    for a, b in zip(jax.tree.leaves(swapped.params), jax.tree.leaves(full.params)):
        np.testing.assert_allclose(np.asarray(a)[::-1], np.asarray(b), atol=1e-6)


# ----- the study ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_sparse_study_runs_reuses_its_arms_and_refuses_bad_input(tmp_path, capsys):
    from conftest import DEMO, TINY, assert_refused

    import lth

    sets = TINY + ["sparse.every=5it", "sparse.end=40it", "sparse.densities=0.1", "sparse.distributions=erk",
                   "sparse.gmp_scope=global", "sparse.methods=gmp,rigl"]
    res = lth.sparse(DEMO, sets, out=str(tmp_path))
    names = [e["arm"] for e in res.summary["arms"]]
    assert names == ["gmp-global@0.1", "rigl-erk@0.1"]
    gmp_layers = res.summary["arms"][0]["replicates"][0]["density_per_layer"]
    assert len(set(round(v, 2) for v in gmp_layers.values())) > 1   # one global |θ| ranking, not per layer
    for e in res.summary["arms"]:
        assert abs(e["density"] - 0.1) < 0.002 and e["seconds"] > 0 and 0 <= e["test_accuracy"] <= 1
    assert "rigl-erk" in res.table() and os.path.exists(res.plot())
    before = os.stat(os.path.join(res.run_dir, "arms", "rigl-erk@0.1", "metrics.json")).st_mtime_ns
    # same directory, one new arm
    more = lth.sparse(DEMO, sets[:-1] + ["sparse.methods=rigl,static"], out=str(tmp_path))
    assert more.run_dir == res.run_dir and [e["arm"] for e in more.summary["arms"]] == ["rigl-erk@0.1",
                                                                                        "static-erk@0.1"]
    assert os.stat(os.path.join(res.run_dir, "arms", "rigl-erk@0.1", "metrics.json")).st_mtime_ns == before
    assert_refused(capsys, "sparse", sets, [
        ("sparse.densities=0.1,1.5", "sparse.densities entry '1.5' out of range"),
        ("sparse.end=60it", "sparse.end '60it' = step 60 is not before the end of training"),
        ("sparse.distributions=erx", "unknown sparse.distributions entry 'erx'"),
        ("sparse.custom=fc_9=0.5", "sparse.custom layer 'fc_9' is not a prunable layer")], tmp_path)
    assert json.load(open(os.path.join(res.run_dir, "summary.json")))["arms"][0]["arm"] == "rigl-erk@0.1"


@pytest.mark.slow
def test_rigl_on_a_batchnorm_net_one_replicate_at_a_time():
    """RigL on a conv-BN net, replicates run one after another ('sequential', what CPU conv nets
    use beyond 2 replicates): counts kept, the mask moved, BatchNorm statistics trained, pruned
    weights 0."""
    import dataclasses

    import optax

    from lth.models.inits import coerce
    from lth.models.vgg import VGG
    from lth.training.step import Trainer

    model = VGG((4, "M", 8), 10, dataclasses.replace(coerce("kaiming_normal"), conv_impl="xla"))
    x = jax.random.normal(jax.random.PRNGKey(0), (40, 8, 8, 3))
    y = jnp.arange(40) % 10
    t = Trainer(model, optax.sgd(1.0, momentum=0.9), lambda s: 0.05, 10, 40, 40, replicate_mode="sequential")
    params, ms = t.init_replicates(jax.random.split(jax.random.PRNGKey(1), 2), (8, 8, 3))
    dens = tuple(0.5 if p.ndim == 5 else None for p in jax.tree.leaves(params))   # conv kernels [R, h, w, i, o]
    mu = MaskUpdate("rigl", dens, 0, 6, 2)
    t = dataclasses.replace(t, sparse=mu)
    masks = jax.vmap(mu.initial_masks)(params, jax.random.split(jax.random.PRNGKey(2), 2))
    st = t.new_state(params, ms, masks, 0, jax.random.split(jax.random.PRNGKey(3), 2),
                     jax.random.split(jax.random.PRNGKey(4), 2))
    st, _ = t.run_steps(st, t.epoch_perm(st.data_rng, 0), x, y, 3)
    for w, a, m0 in zip(jax.tree.leaves(st.params), jax.tree.leaves(st.masks), jax.tree.leaves(masks)):
        a, m0 = np.asarray(a), np.asarray(m0)
        np.testing.assert_array_equal(a.reshape(2, -1).sum(1), m0.reshape(2, -1).sum(1))
        assert np.all(np.asarray(w)[~a] == 0)
    moved = [not np.array_equal(a[r], b[r]) for a, b in zip(jax.tree.leaves(st.masks), jax.tree.leaves(masks))
             for r in range(2) if a.ndim == 5]
    assert all(moved)   # both replicates, every conv layer
    assert not np.allclose(st.model_state["batch_stats"]["bn_0"]["mean"], ms["batch_stats"]["bn_0"]["mean"])
