"""N:M patterns as a mask constraint of `lth.pruning.prune` (IMP levels, pruning at init): the groups
run along a kernel's input axis (-2), the N best live weights of each group are kept, pruned weights
never return, IMP keeps the pattern after level 1, the rounds at init end exactly at N:M, and bad
patterns are refused before any work."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, assert_refused, tiny_config

from lth.errors import UserError
from lth.models import zoo
from lth.pruning import at_init as pai
from lth.pruning import masks as M
from lth.pruning import nm as NM
from lth.pruning import prune as P
from lth.scores import make_scorer
from lth.surgeons import layer as L

# a Dense kernel (in, out), a convolution (kh, kw, in, out) whose out is divisible by M too (so groups
# taken along the wrong axis still run, and differ), and a layer whose input 10 no M here divides
SHAPES = {"fc": (16, 12), "conv": (3, 3, 8, 16), "out": (10, 6)}


def tree(seed, shapes=SHAPES, round_to=None):
    rng = np.random.default_rng(seed)
    out = {}
    for name, s in shapes.items():
        x = rng.standard_normal(s).astype(np.float32)
        out[name] = {"kernel": jnp.asarray(x if round_to is None else x.round(round_to)), "bias": jnp.zeros(s[-1])}
    return out


def reference(scores, alive, k, m):
    """Brute force: for every group of m along axis -2, the k best live entries by (-score, index)."""
    s, a = np.moveaxis(np.asarray(scores), -2, -1), np.moveaxis(np.asarray(alive, bool), -2, -1)
    keep = np.zeros(s.shape, bool)
    for idx in np.ndindex(s.shape[:-1]):
        for g in range(0, s.shape[-1], m):
            live = [g + j for j in range(m) if a[idx][g + j]]
            for j in sorted(live, key=lambda j: (-s[idx][j], j))[:k]:
                keep[idx][j] = True
    return np.moveaxis(keep, -1, -2)


def group_counts(mask, m):
    """Live entries of each group of m consecutive entries along axis -2 (explicit slices)."""
    mask = np.asarray(mask)
    return np.stack([mask[..., g:g + m, :].sum(-2) for g in range(0, mask.shape[-2], m)])


def test_prune_with_pattern_on_fresh_masks_is_nm_keep_along_the_input_axis():
    params = tree(0, round_to=1)   # ties: the lower index is kept
    scores = jax.tree.map(np.abs, params)
    prunable = M.prunable_tree(params, r"(fc|conv)/kernel")
    masks = P.prune(scores, M.ones_like(params), prunable, pattern="2:4")
    for name in ("fc", "conv"):
        got, s = np.asarray(masks[name]["kernel"]), scores[name]["kernel"]
        assert np.array_equal(got, np.asarray(L.nm_keep(s, 2, 4))), name
        assert np.array_equal(got, reference(s, np.ones(s.shape, bool), 2, 4)), name
        assert (group_counts(got, 4) == 2).all(), name
    # the conv's groups are along `in` (axis -2): along `out` they are not 2 of 4
    assert not (np.asarray(masks["conv"]["kernel"]).reshape(3, 3, 8, 4, 4).sum(-1) == 2).all()
    assert all(bool(np.all(masks[n]["bias"])) for n in SHAPES) and bool(np.all(masks["out"]["kernel"]))


def test_pruned_weights_never_return_and_short_groups_keep_only_their_live_ones():
    params = tree(1)
    prunable = M.prunable_tree(params, r"(fc|conv)/kernel")
    rng = np.random.default_rng(0)
    alive = jax.tree.map(lambda x: rng.random(x.shape) < 0.6, params)
    alive["fc"]["kernel"][0:4, 0] = [False, False, False, True]   # one live in a group: kept alone
    alive["fc"]["kernel"][4:8, 0] = False                          # none live: stays empty
    # pruned weights score highest: any revival would pick them
    scores = jax.tree.map(lambda x, a: np.where(a, np.abs(x), 100.0), params, alive)
    masks = P.prune(scores, alive, prunable, pattern=(2, 4))
    for name in ("fc", "conv"):
        got, a = np.asarray(masks[name]["kernel"]), alive[name]["kernel"]
        assert not (got & ~a).any(), name
        assert np.array_equal(got, reference(scores[name]["kernel"], a, 2, 4)), name
        assert np.array_equal(group_counts(got, 4), np.minimum(group_counts(a, 4), 2)), name
    assert list(np.asarray(masks["fc"]["kernel"])[0:8, 0]) == [False] * 3 + [True] + [False] * 4


def test_imp_with_a_pattern_imposes_it_at_level_1_and_keeps_it_after():
    """Two IMP levels through the library function (leading replicate axis): every group keeps
    exactly N at level 1, by the level's scores, and level 2 (other scores) leaves the mask as it is."""
    shapes = {"fc": (16, 12), "conv": (3, 3, 8, 16), "out": (12, 10)}
    params = M.stack([tree(2, shapes), tree(3, shapes)])
    prunable = M.prunable_tree(M.index(params, 0), r".*kernel")
    lf = P.parse_layer_fractions("out=0")                           # excluded: stays dense
    level1 = P.prune_replicates(jax.tree.map(np.abs, params), M.ones_like(params), prunable, pattern="4:8",
                                fraction=0.2, layer_fractions=lf)
    for r in range(2):
        for name in ("fc", "conv"):
            got = np.asarray(level1[name]["kernel"][r])
            assert (group_counts(got, 8) == 4).all(), (r, name)
            assert np.array_equal(got, np.asarray(L.nm_keep(jnp.abs(params[name]["kernel"][r]), 4, 8)))
        assert bool(np.all(level1["out"]["kernel"][r]))
    other = jax.tree.map(lambda x: -np.abs(x), params)             # level 2 would rank the other way
    level2 = P.prune_replicates(other, level1, prunable, pattern="4:8", fraction=0.2, layer_fractions=lf)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(level1), jax.tree.leaves(level2)))


@pytest.mark.slow
def test_shuffle_with_a_pattern_permutes_within_each_group():
    params = tree(4)
    prunable = M.prunable_tree(params, r"(fc|conv)/kernel")
    masks = P.prune(jax.tree.map(np.abs, params), M.ones_like(params), prunable, pattern="2:4")
    shuffled = P.shuffle(masks, prunable, jax.random.PRNGKey(0), pattern="2:4")
    for name in ("fc", "conv"):
        a, b = np.asarray(masks[name]["kernel"]), np.asarray(shuffled[name]["kernel"])
        assert (group_counts(b, 4) == 2).all() and not np.array_equal(a, b), name


def lenet(widths=(16, 8), d_in=8, classes=4):
    model = zoo.build("lenet_" + "_".join(map(str, widths)), classes, "kaiming_normal", (d_in,))
    v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, d_in)))
    return v, lambda variables, x: model.apply(variables, x, train=False)


def test_snip_at_init_with_a_pattern_is_nm_keep_of_the_snip_scores():
    v, apply_fn = lenet()
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    batch = (jax.random.normal(k1, (16, 8)), jax.random.randint(k2, (16,), 0, 4))
    prunable = M.prunable_tree(v["params"], r".*kernel")
    scorer = make_scorer("snip", apply_fn, v, prunable, batch, (8,))
    scores = scorer(v, M.ones_like(v["params"]), jax.random.PRNGKey(0))
    masks = pai.prune_at_init(scorer, v, prunable, None, rounds=1, pattern="2:4", rng=jax.random.PRNGKey(0))
    for path, m, s, p in zip(M.leaf_paths(masks), jax.tree.leaves(masks), jax.tree.leaves(scores),
                             jax.tree.leaves(prunable)):
        want = L.nm_keep(s, 2, 4) if p else np.ones(np.shape(m), bool)
        assert np.array_equal(np.asarray(m), np.asarray(want)), path


def test_rounds_at_init_keep_ceil_of_the_round_density_per_group_and_end_at_n():
    """4:8 in 3 exponential rounds: after round r every group holds ceil(0.5^(r/3) · 8) = 7, 6, then
    exactly 4 (no group ever drops below N on the way, so the end is exactly N:M)."""
    v, _ = lenet()
    # one group of fc_0 scaled down: unstructured rounds would empty it before the last
    v = jax.tree.map(lambda x: x, v)
    v["params"]["fc_0"]["kernel"] = v["params"]["fc_0"]["kernel"].at[0:8, 0].multiply(1e-3)
    prunable = M.prunable_tree(v["params"], r".*kernel")
    seen = []

    class Magnitude:
        method = "magnitude"

        def __call__(self, variables, masks, rng):
            seen.append(masks)
            return jax.tree.map(np.abs, variables["params"])

    masks = pai.prune_at_init(Magnitude(), v, prunable, 0.5, rounds=3, pattern="4:8")
    for r, want in [(1, 7), (2, 6)]:
        for path, m, p in zip(M.leaf_paths(seen[r]), jax.tree.leaves(seen[r]), jax.tree.leaves(prunable)):
            if p:
                assert (group_counts(m, 8) == want).all(), (r, path)
    for path, m, w, p in zip(M.leaf_paths(masks), jax.tree.leaves(masks), jax.tree.leaves(v["params"]),
                             jax.tree.leaves(prunable)):
        if p:
            assert np.array_equal(np.asarray(m), np.asarray(L.nm_keep(jnp.abs(w), 4, 8))), path


def test_library_refuses_a_bad_pattern_or_an_m_that_does_not_divide():
    params = tree(5)
    prunable = M.prunable_tree(params, r".*kernel")
    ones, scores = M.ones_like(params), jax.tree.map(np.abs, params)
    for bad, needle in [("2-4", "N:M such as 2:4"), ("4:4", "0 < N < M"), ("2:4", "out/kernel: M=4 does not divide "
                                                                              "the input dimension 10")]:
        with pytest.raises(UserError, match=needle) as e:
            P.prune(scores, ones, prunable, pattern=bad)
        assert "\n" not in str(e.value)
    # the same layer set to 0 in layer_fractions is left alone, so the pattern fits
    P.prune(scores, ones, prunable, pattern="2:4", layer_fractions=[("out", 0.0)])
    with pytest.raises(UserError, match="density 0.1 with N:M pattern 2:4"):
        pai.prune_at_init(None, {"params": params}, prunable, 0.1, pattern="2:4")


def test_studies_refuse_bad_patterns_before_any_work(capsys, tmp_path):
    """One line, exit 2, nothing written: the string, N >= M, units, a distribution (validate), an M
    that does not divide a kernel's input dimension (the model's shapes: 40 → 24 → 12 → 10)."""
    assert_refused(capsys, "lottery", TINY, [
        ("prune.pattern=2-4", "prune.pattern '2-4': allowed: 'unstructured' or N:M"),
        ("prune.pattern=4:2", "prune.pattern '4:2': allowed: integers 0 < N < M"),
        (["prune.pattern=2:4", "prune.structure=units"], "prune.pattern '2:4' with prune.structure 'units'"),
        (["prune.pattern=2:4", "prune.scope=erk"], "prune.scope 'erk' with prune.pattern '2:4'"),
        ("prune.pattern=2:8", "(prune.pattern) for out/kernel: M=8 does not divide the input dimension 12"),
    ], tmp_path)
    assert_refused(capsys, "pai", TINY + ["pai.methods=snip"], [
        ("prune.pattern=2:4", "pai.compression '10^1' with prune.pattern '2:4'"),
        (["prune.pattern=2:8", "pai.compression=4"], "M=8 does not divide the input dimension 12"),
    ], tmp_path)


@pytest.mark.slow
def test_lottery_with_a_pattern_end_to_end(tmp_path):
    """`lth lottery` with prune.pattern=2:4: level 1 is nm_keep of level 0's trained magnitudes, level 2
    keeps it, and the random_prune control is 2:4 at other positions."""
    from lth.harness import checkpoint
    from lth.harness.rundir import open_run_dir
    from lth.studies import lottery

    cfg = tiny_config("prune.pattern=2:4", "lottery.controls=random_prune", "train.duration=20it",
                      "train.eval_every=20it")
    s = lottery.setup(cfg)
    open_run_dir(str(tmp_path), cfg, lottery.COMMAND)
    lottery.run(s, str(tmp_path), log=lambda *_: None)
    p, ms = lottery.init_variables(s, lottery.keys(s, "init"))
    like = s.trainer.new_state(p, ms, M.ones_like(p), 0, lottery.keys(s, "train"), lottery.keys(s, "data"))

    def final(level, arm=None):
        return checkpoint.load(os.path.join(tmp_path, *(("controls", arm) if arm else ()), f"level_{level}", "final"),
                               like)
    f0, f1, f2, rp = final(0), final(1), final(2), final(1, "random_prune")
    for path, w, m1, m2, mr, pr in zip(M.leaf_paths(p), jax.tree.leaves(f0.params), jax.tree.leaves(f1.masks),
                                       jax.tree.leaves(f2.masks), jax.tree.leaves(rp.masks),
                                       jax.tree.leaves(s.prunable)):
        if pr:
            assert np.array_equal(np.asarray(m1[0]), np.asarray(L.nm_keep(jnp.abs(w[0]), 2, 4))), path
            assert np.array_equal(np.asarray(m2), np.asarray(m1)), path
            assert (group_counts(mr[0], 4) == 2).all() and not np.array_equal(np.asarray(mr), np.asarray(m1)), path


def test_nm_select_on_all_alive_equals_nm_keep():
    """nm_select ranks as nm_keep (ties to the lower index) when nothing is pruned yet."""
    s = jnp.asarray(np.random.default_rng(1).integers(0, 3, (2, 3, 16, 5)).astype(np.float32))
    for n, m in [(1, 4), (2, 4), (4, 8), (3, 8)]:
        assert np.array_equal(np.asarray(NM.nm_select(s, np.ones(s.shape, bool), n, m)),
                              np.asarray(L.nm_keep(s, n, m)))
