"""FORCE, Iter-SNIP and ProsPr equal their reference code's outputs on a small MLP (stored once by
tests/data/make_pai2_reference.py with PyTorch, copying naver/force and mil-ad/prospr)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lth
from lth.pruning import masks as M

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF = np.load(os.path.join(ROOT, "tests", "data", "pai2_reference.npz"))
LAYERS = ("fc_0", "fc_1", "out")


@pytest.fixture(scope="module")
def mlp():
    model = lth.build_model("lenet_20_10", 10, (40,))
    params = {k: {"kernel": jnp.asarray(REF[f"w/{k}"].T), "bias": jnp.asarray(REF[f"b/{k}"])} for k in LAYERS}
    v = {"params": params}
    apply_fn = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
    np.testing.assert_allclose(apply_fn(v, jnp.asarray(REF["x"])), REF["logits"], rtol=1e-5, atol=1e-5)
    return apply_fn, v, (jnp.asarray(REF["x"]), jnp.asarray(REF["y"].astype(np.int32)))


def as_torch(tree):
    return {k: np.asarray(tree[k]["kernel"]).T for k in LAYERS}


def test_force_and_iter_snip_rounds_equal_the_reference(mlp):
    from lth.pruning.at_init import densities
    from lth.scores import make_scorer

    apply_fn, v, batch = mlp
    prunable = M.prunable_tree(v["params"], ".*kernel")
    np.testing.assert_allclose(densities(0.2, 3, "exponential"), REF["force/densities"], rtol=1e-12)
    for name, key in (("force", "force"), ("iter_snip", "itersnip")):
        scorer = make_scorer(name, apply_fn, v, prunable, batch, (40,))
        masks = M.ones_like(v["params"])
        for t, d in enumerate(densities(0.2, 3, "exponential"), start=1):   # each round: scores, then the mask
            scores = scorer(v, masks, jax.random.PRNGKey(0))
            got = as_torch(scores)
            for k in LAYERS:
                want = REF[f"{key}/scores_t{t}/{k}"]
                live = want > 0 if name == "iter_snip" else np.ones(want.shape, bool)   # pruned: −∞ here, 0 there
                np.testing.assert_allclose(got[k][live], want[live], rtol=2e-4, atol=1e-7 * want.max())
            masks = lth.prune.prune(scores, M.ones_like(masks) if name == "force" else masks, prunable, density=d)
            for k in LAYERS:
                np.testing.assert_array_equal(np.asarray(masks[k]["kernel"]).T,
                                              REF[f"{key}/masks_t{t}/{k}"].astype(bool))
        assert sum(int(np.sum(masks[k]["kernel"])) for k in LAYERS) == int(REF[f"{key}/kept"][-1])
    # FORCE brings weights back: some weight pruned in round 1 is kept in round 2
    back = [np.any(REF[f"force/masks_t2/{k}"] > REF[f"force/masks_t1/{k}"]) for k in LAYERS]
    assert any(back)
    # the prune-at-init loop does the same rounds (FORCE regrows; Iter-SNIP pins)
    for name, key in (("force", "force"), ("iter_snip", "itersnip")):
        m = lth.prune_at_init(name, apply_fn, v, 0.2, batch=batch, rounds=3)
        for k in LAYERS:
            np.testing.assert_array_equal(np.asarray(m[k]["kernel"]).T, REF[f"{key}/masks/{k}"].astype(bool))


def test_prospr_meta_gradient_equals_the_reference(mlp):
    from lth.scores import make_scorer

    apply_fn, v, batch = mlp
    prunable = M.prunable_tree(v["params"], ".*kernel")
    assert (int(REF["prospr/steps"]), float(REF["prospr/lr"])) == (3, 0.1)
    scorer = make_scorer("prospr", apply_fn, v, prunable, batch, (40,))
    got = as_torch(scorer(v, M.ones_like(v["params"]), jax.random.PRNGKey(0)))
    for k in LAYERS:
        want = REF[f"prospr/scores/{k}"]
        np.testing.assert_allclose(got[k], want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    # one SGD step fewer is a different score (the steps are differentiated through)
    fewer = as_torch(make_scorer("prospr", apply_fn, v, prunable, batch, (40,), prospr_steps=2)(
        v, M.ones_like(v["params"]), jax.random.PRNGKey(0)))
    assert not np.allclose(fewer["fc_0"], REF["prospr/scores/fc_0"], rtol=1e-2)
    m = lth.prune_at_init("prospr", apply_fn, v, 0.2, batch=batch)
    for k in LAYERS:
        np.testing.assert_array_equal(np.asarray(m[k]["kernel"]).T, REF[f"prospr/masks/{k}"].astype(bool))


@pytest.mark.parametrize("arch", ["vgg16", "resnet20"])
def test_smart_ratio_equals_the_reference(arch):
    from lth.models import zoo
    from lth.pruning import sparsity as SP

    model = zoo.build(arch, 10, "kaiming_normal", (32, 32, 3))
    v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    shapes = {p: tuple(x.shape) for p, x in zip(M.leaf_paths(v["params"]), jax.tree.leaves(v["params"]))
              if p.endswith("kernel")}
    order = zoo.network_order(model, (32, 32, 3), list(shapes))   # stem first, out last (not the dict's order)
    assert [p.rsplit("/", 1)[0] for p in order] == list(REF[f"smart/{arch}/layers"])
    for d in (0.1, 0.02):
        got = SP.densities({p: shapes[p] for p in order}, d, "smart_ratio", resnet=arch == "resnet20")
        np.testing.assert_array_equal(np.array(list(got.values())), REF[f"smart/{arch}/{d:g}"])
        counts = [SP.kept(int(np.prod(shapes[p])), got[p]) for p in order]   # ⌊s·n⌋ zeros; the reference truncates d·n
        assert np.abs(np.array(counts) - REF[f"smart/{arch}/{d:g}/num_keep"]).max() <= 1


def test_any_score_ranks_within_layers_at_a_distributions_densities(mlp):
    from lth.pruning import sparsity as SP
    apply_fn, v, batch = mlp
    shapes = {f"{k}/kernel": tuple(v["params"][k]["kernel"].shape) for k in LAYERS}
    want = SP.densities(shapes, 0.2, "erk")
    for name in ("random", "magnitude"):   # random ERK (Liu et al. 2022) and its "hybrid"
        m = lth.prune_at_init(name, apply_fn, v, 0.2, batch=batch, scope="erk")
        for k in LAYERS:
            n = int(np.prod(shapes[f"{k}/kernel"]))
            assert int(np.sum(m[k]["kernel"])) == round(want[f"{k}/kernel"] * n)
        if name == "magnitude":   # within each layer, the largest |w| are the ones kept
            for k in LAYERS:
                w, keep = np.abs(np.asarray(v["params"][k]["kernel"])), np.asarray(m[k]["kernel"])
                assert w[keep].min() >= w[~keep].max()


def test_prospr_options_are_checked_before_any_work():
    from lth.harness.config import base
    from lth.pruning.at_init import validate_options

    p = base().pai
    p.prospr_steps = 0
    with pytest.raises(lth.UserError, match="pai.prospr_steps 0 out of range; allowed: 1 or more"):
        validate_options(p)
    p.prospr_steps, p.scope = 3, "erx"
    with pytest.raises(lth.UserError, match="unknown pai.scope 'erx'"):
        validate_options(p)
