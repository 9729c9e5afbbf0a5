"""Selection by score: exact counts, tie-breaking, no revival, global vs layerwise, overrides."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth.errors import UserError
from lth.pruning import masks as M
from lth.pruning import prune as P


def tree(rng, shapes):
    keys = jax.random.split(jax.random.PRNGKey(rng), len(shapes))
    return {name: {"kernel": jax.random.normal(k, s), "bias": jnp.zeros(s[-1])}
            for k, (name, s) in zip(keys, shapes.items())}


SHAPES = {"fc_0": (40, 30), "fc_1": (30, 20), "out": (20, 10)}


def setup():
    params = tree(0, SHAPES)
    prunable = M.prunable_tree(params, r".*kernel")
    return params, prunable, M.ones_like(params)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_keep_top_k_matches_stable_sort(dtype):
    with jax.enable_x64(dtype == jnp.float64):
        rng = np.random.default_rng(0)
        s = rng.normal(size=5000).round(1)  # many ties, negatives
        elig = rng.random(5000) < 0.7
        for k in (0, 1, 17, 1234, int(elig.sum())):
            got = np.asarray(P.keep_top_k(jnp.asarray(s, dtype), jnp.asarray(elig), k))
            order = sorted(np.flatnonzero(elig), key=lambda i: (-s[i], i))[:k]
            want = np.zeros(5000, bool)
            want[order] = True
            np.testing.assert_array_equal(got, want)


def test_global_and_layerwise_hit_exact_counts():
    params, prunable, ones = setup()
    scores = jax.tree.map(jnp.abs, params)
    g = P.prune(scores, ones, prunable, fraction=0.3)
    total = 40 * 30 + 30 * 20 + 20 * 10
    kept_g = sum(int(k) for k, _ in M.counts(g, prunable).values())
    assert kept_g == total - int(np.ceil(0.3 * total))
    lw = P.prune(scores, ones, prunable, fraction=0.3, layerwise=True)
    for path, (k, n) in M.counts(lw, prunable).items():
        assert int(k) == n - int(np.ceil(0.3 * n)), path
    # global keeps the top scores overall: every kept score >= every pruned one
    flat_s = np.concatenate([np.abs(np.asarray(params[n]["kernel"])).ravel() for n in SHAPES])
    flat_m = np.concatenate([np.asarray(g[n]["kernel"]).ravel() for n in SHAPES])
    assert flat_s[flat_m].min() >= flat_s[~flat_m].max()
    # biases untouched
    assert all(bool(np.all(g[n]["bias"])) for n in SHAPES)


def _kept(masks, prunable):
    return {path: int(k) for path, (k, _) in M.counts(masks, prunable).items()}


@pytest.mark.parametrize("of", ["remaining", "original"])
def test_imp_counts_ceil_per_group_per_level_with_overrides(of):
    """IMP's rounding rule with f·n never an integer: each group removes ceil(f · base) weights per
    level, base = its live count (OpenLTH's sparse_global) or, of='original', its size times the
    level; an override group (out=0.312) counts on its own. round() or floor() would keep one more."""
    params, prunable, masks = setup()
    f, fo = 0.1234, 0.312
    rest, out = 40 * 30 + 30 * 20, 20 * 10
    want_rest, want_out = rest, out
    for level in (1, 2):
        mult = 1 if of == "remaining" else level
        scores = jax.tree.map(lambda p, k=level: jnp.abs(p) + 0.01 * k, params)
        masks = P.prune(scores, masks, prunable, fraction=mult * f, of=of,
                        layer_fractions=P.parse_layer_fractions(f"out={mult * fo}"))
        if of == "remaining":   # 1800·0.1234 = 222.12 → 223; 1577·0.1234 = 194.6 → 195;
            #                     out: 62.4 → 63, 137·0.312 = 42.7 → 43
            want_rest -= int(np.ceil(f * want_rest))
            want_out -= int(np.ceil(fo * want_out))
        else:                   # 222.12 → 223, 444.24 → 445; out: 62.4 → 63, 124.8 → 125
            want_rest, want_out = rest - int(np.ceil(level * f * rest)), out - int(np.ceil(level * fo * out))
        k = _kept(masks, prunable)
        assert (k["fc_0/kernel"] + k["fc_1/kernel"], k["out/kernel"]) == (want_rest, want_out), (level, k)
    assert (want_rest, want_out) == ({"remaining": (1382, 94), "original": (1355, 75)}[of])
    # layerwise: every layer its own group (1200·0.1234 = 148.08 → 149, 600 → 74.04 → 75, 200 → 24.68 → 25)
    lw = P.prune(jax.tree.map(jnp.abs, params), M.ones_like(params), prunable, fraction=f, layerwise=True)
    assert _kept(lw, prunable) == {"fc_0/kernel": 1051, "fc_1/kernel": 525, "out/kernel": 175}


def test_ties_are_deterministic_and_lower_index_kept():
    params, prunable, ones = setup()
    scores = jax.tree.map(jnp.ones_like, params)
    a = P.prune(scores, ones, prunable, fraction=0.5, layerwise=True)
    b = P.prune(scores, ones, prunable, fraction=0.5, layerwise=True)
    for n in SHAPES:
        m = np.asarray(a[n]["kernel"]).ravel()
        np.testing.assert_array_equal(m, np.asarray(b[n]["kernel"]).ravel())
        assert m[: m.sum()].all() and not m[m.sum():].any()


def test_pruned_weights_never_revive():
    params, prunable, ones = setup()
    first = P.prune(jax.tree.map(jnp.abs, params), ones, prunable, fraction=0.5)
    # give the pruned weights the highest scores: they must still stay pruned
    scores = jax.tree.map(lambda m, p: jnp.where(m, jnp.abs(p), 1e9), first, params)
    second = P.prune(scores, first, prunable, fraction=0.5)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
        assert not np.any(np.asarray(b) & ~np.asarray(a))


def test_density_after_levels_is_geometric():
    params, prunable, masks = setup()
    total = sum(n for _, n in M.counts(masks, prunable).values())
    for level in range(1, 8):
        scores = jax.tree.map(lambda p, k=level: jnp.abs(p) + 0.01 * k, params)
        masks = P.prune(scores, masks, prunable, fraction=0.2)
        kept = sum(int(k) for k, _ in M.counts(masks, prunable).values())
        assert abs(kept - total * 0.8 ** level) <= level  # ceil per level: off by at most one per level


def test_layer_overrides_rate_and_exclusion():
    params, prunable, ones = setup()
    scores = jax.tree.map(jnp.abs, params)
    m = P.prune(scores, ones, prunable, fraction=0.2, layer_fractions=P.parse_layer_fractions("out=0.1,fc_0=0"))
    c = M.counts(m, prunable)
    assert int(c["out/kernel"][0]) == 200 - 20
    assert int(c["fc_0/kernel"][0]) == 1200
    assert int(c["fc_1/kernel"][0]) == 600 - 120


def test_bad_layer_pattern_and_fraction():
    params, prunable, ones = setup()
    with pytest.raises(UserError, match="nosuch"):
        P.prune(params, ones, prunable, fraction=0.2, layer_fractions=[("nosuch", 0.1)])
    with pytest.raises(UserError, match="out=2"):
        P.parse_layer_fractions("out=2")


def test_shuffle_keeps_per_layer_counts_and_moves_positions():
    params, prunable, ones = setup()
    m = P.prune(jax.tree.map(jnp.abs, params), ones, prunable, fraction=0.6, layerwise=True)
    sh = P.shuffle(m, prunable, jax.random.PRNGKey(3))
    for path in M.counts(m, prunable):
        assert M.counts(m, prunable)[path][0] == M.counts(sh, prunable)[path][0]
    assert not np.array_equal(np.asarray(m["fc_0"]["kernel"]), np.asarray(sh["fc_0"]["kernel"]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_host_selection_equals_jitted_selection(dtype):
    rng = np.random.default_rng(1)
    s = rng.normal(size=20000).round(1).astype(dtype)
    s[:50] = -0.0
    s[50:100] = 0.0
    s[100:120] = np.nan
    elig = rng.random(20000) < 0.8
    with jax.enable_x64(dtype == np.float64):
        for k in (0, 3, 999, 10000, int(elig.sum())):
            want = np.asarray(P.keep_top_k(jnp.asarray(s), jnp.asarray(elig), k))
            np.testing.assert_array_equal(P.keep_top_k_host(s, elig, k), want)


def test_host_group_selection_over_live_entries_equals_jitted_groups():
    """The CPU path of `prune` (per-leaf gathers of live entries) equals the jitted one on several
    leaves with ties, pruned entries and per-layer groups."""
    rng = np.random.default_rng(2)
    shapes = [(30, 20), (20,), (20, 10), (5, 5, 3, 4)]
    scores = [rng.normal(size=sh).round(1).astype(np.float32) for sh in shapes]
    masks = [rng.random(sh) < 0.7 for sh in shapes]
    groups = ((0, 2), (3,))
    keep = [250, 40]
    host = P._select_groups_host(scores, masks, keep, groups)
    jit = P._select([jnp.asarray(s) for s in scores], [jnp.asarray(m) for m in masks], jnp.asarray(keep, jnp.int32),
                    groups)
    for h, j, m in zip(host, jit, masks):
        np.testing.assert_array_equal(h, np.asarray(j))
        assert not np.any(h & ~m)          # never revived
    assert sum(int(host[i].sum()) for i in (0, 2)) == 250 and int(host[3].sum()) == 40
    assert np.array_equal(host[1], masks[1])   # not in any group: untouched


@pytest.mark.parametrize("nan", [False, True])
def test_bracket_selection_equals_jitted_selection(nan, monkeypatch):
    """The sampled-bracket path (used while a large group is mostly live) is exact: same masks as the
    jitted bisection, ties at the threshold to the lower index, across leaves; with NaN scores it
    defers to the gathering path and is still exact."""
    rng = np.random.default_rng(3)
    shapes = [(300, 200), (100,), (200, 100)]
    scores = [rng.normal(size=sh).round(2) for sh in shapes]
    if nan:
        scores[0][0, :50] = np.nan
    masks = [rng.random(sh) < 0.9 for sh in shapes]
    n_live = sum(int(m.sum()) for m in masks)
    taken = 0
    with jax.enable_x64(True):
        for k in (1, 500, n_live // 3, n_live - 700, n_live - 1):
            got = P._bracket_select([s for s in scores], masks, k, n_live, np.random.default_rng(k))
            taken += got is not None
            monkeypatch.setattr(P, "BRACKET_MIN_LIVE", 1000)
            host = P._select_groups_host(scores, masks, [k], ((0, 1, 2),))
            want = P._select([jnp.asarray(s) for s in scores], [jnp.asarray(m) for m in masks],
                             jnp.asarray([k], jnp.int32), ((0, 1, 2),))
            for i in range(3):
                np.testing.assert_array_equal(host[i], np.asarray(want[i]))
                if got is not None:
                    np.testing.assert_array_equal(got[i], np.asarray(want[i]))
    assert (taken == 0) if nan else (taken >= 4)
