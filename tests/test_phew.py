"""PHEW (lth/scores/phew.py) equals ShreyasMalakarjunPatil/PHEW's `phew_masks` on stored outputs
(tests/data/make_phew_reference.py): the same seeds give the same masks on an MLP and on a conv chain
(one weight per traversed kernel, or whole kernels), lth's (H, W, C) flatten mapped to torch's; the
registered score keeps the walks' weights in order and refuses residual networks."""
import os
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from lth.errors import UserError
from lth.scores import make_scorer
from lth.scores import phew as PH

REF = np.load(os.path.join(ROOT, "tests", "data", "phew_reference.npz"))


def kernels(name):
    return [REF[k] for k in sorted((k for k in REF.files if k.startswith(f"{name}:w")), key=lambda k: int(k[-1]))]


@pytest.mark.parametrize("case", sorted({k.rsplit(":", 1)[0] for k in REF.files if ":m" in k}))
def test_masks_equal_the_reference_with_the_same_seeds(case):
    name, perc, seed, conserved = case.split(":")
    ws = kernels(name)
    ref, undo = PH.to_reference(ws)
    target = int((1 - float(perc) / 100.0) * sum(w.size for w in ws))
    masks, first = PH.Walker(ref).run(target, np.random.RandomState(int(seed)), random.Random(int(seed)),
                                      conserved == "1")
    for i, (m, u) in enumerate(zip(masks, undo)):
        np.testing.assert_array_equal(u(m), REF[f"{case}:m{i}"], err_msg=f"{case} layer {i}")
    kept = sum(int(m.sum()) for m in masks)
    assert target <= kept <= target + (len(ws) * 9 if conserved == "1" else len(ws))   # the last walk's overshoot
    assert all(((f >= 0) == m).all() for f, m in zip(first, masks))


def test_the_score_keeps_the_walks_in_order_at_the_density():
    """Through a Scorer: the top-k at the density is a prefix of the walks (every kept weight was
    first kept no later than every pruned one); a dense layer's kept rows follow lth's flatten."""
    ws = kernels("conv")
    names = ["a", "b", "c", "d"]
    params = {n: {"kernel": jnp.asarray(w), "bias": jnp.zeros(w.shape[-1])} for n, w in zip(names, ws)}
    prunable = {n: {"kernel": True, "bias": False} for n in names}
    sc = make_scorer("phew", None, {"params": params}, prunable, None, (8, 8, 3), order=[f"{n}/kernel" for n in names])
    from lth.pruning.at_init import prune_at_init
    masks = prune_at_init(sc, {"params": params}, prunable, 0.3, rng=jax.random.PRNGKey(3))
    ones = jax.tree.map(lambda x: jnp.ones(x.shape, bool), params)
    scores = sc({"params": params}, ones, jax.random.fold_in(jax.random.PRNGKey(3), 0), density=0.3)   # round 0
    kept = np.concatenate([np.asarray(scores[n]["kernel"])[np.asarray(masks[n]["kernel"])].ravel() for n in names])
    pruned = np.concatenate([np.asarray(scores[n]["kernel"])[~np.asarray(masks[n]["kernel"])].ravel() for n in names])
    total = sum(w.size for w in ws)
    assert len(kept) == round(0.3 * total) and np.isfinite(kept).all() and kept.min() >= pruned.max()
    assert all(np.asarray(masks[n]["bias"]).all() for n in names)


def test_residual_networks_are_refused():
    shortcut = np.ones((1, 1, 4, 8), np.float32)
    with pytest.raises(UserError, match="residual"):
        PH.to_reference([np.ones((3, 3, 3, 4), np.float32), shortcut])
