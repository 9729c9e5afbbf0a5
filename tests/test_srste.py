"""SR-STE (lth.pruning.sparse_train.srste; `lth sparse --set sparse.methods=srste`) against
aojunzz/NM-sparsity devkit/sparse_ops/sparse_ops.py on stored outputs
(tests/data/srste_movement_reference.npz, made by tests/data/make_srste_movement_reference.py)."""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth.pruning import masks as M
from lth.pruning.sparse_train import srste, srste_mask

REF = np.load(os.path.join(os.path.dirname(__file__), "data", "srste_movement_reference.npz"))


def flax(x):
    """PyTorch layout → lth's: Linear (out, in) → (in, out); Conv (out, in, kh, kw) → (kh, kw, in, out)."""
    return x.T if x.ndim == 2 else np.transpose(x, (2, 3, 1, 0))


@pytest.mark.parametrize("case,nm", [("linear", "2of4"), ("linear", "4of8"), ("conv", "2of4"), ("conv", "4of8"),
                                     ("linear_ties", "2of4"), ("linear_ties", "4of8")])
def test_mask_forward_and_backward_equal_nm_sparsity(case, nm):
    n, m = map(int, nm.split("of"))
    lam = float(REF["srste/decay"])
    w, g = jnp.asarray(flax(REF[f"srste/{case}/w"])), jnp.asarray(flax(REF[f"srste/{case}/g"]))
    np.testing.assert_array_equal(np.asarray(srste_mask(w, n, m)), flax(REF[f"srste/{case}/{nm}/mask"]) > 0)
    out, vjp = jax.vjp(lambda x: srste(x, n, m, lam), w)
    np.testing.assert_array_equal(np.asarray(out), flax(REF[f"srste/{case}/{nm}/w_sparse"]))
    np.testing.assert_array_equal(np.asarray(vjp(g)[0]), flax(REF[f"srste/{case}/{nm}/grad"]))


@pytest.fixture(scope="module")
def srste_trainer():
    from conftest import tiny_config

    from lth.harness import run as harness
    from lth.studies import sparse

    cfg = tiny_config("sparse.methods=srste", "sparse.pattern=2:4", "train.duration=12it", "replicates=1")
    s = harness.setup(cfg, sparse.COMMAND)
    dens = sparse.check(s)["srste-2of4"]
    mu = sparse.mask_update(s, "srste", dens, "layerwise")
    return s, dataclasses.replace(s.trainer, sparse=mu), mu


@pytest.mark.slow
def test_weights_stay_dense_until_the_last_step_which_fixes_an_nm_mask(srste_trainer):
    from lth.harness.run import init_variables, keys
    from lth.training.loop import device_data

    s, t, mu = srste_trainer
    params, ms = init_variables(s, keys(s, "init"))
    state = t.new_state(params, ms, M.ones_like(params), 0, keys(s, "train"), keys(s, "data"))
    data = device_data(t, s.dataset)
    perm = t.epoch_perm(state.data_rng, 0)
    prunable = [d is not None for d in mu.density]
    outside_moved = False
    for step in range(12):
        prev = state
        state, _ = t.run_steps(state, perm, data.x_train, data.y_train, 1)
        for on, w, wp, m in zip(prunable, jax.tree.leaves(state.params), jax.tree.leaves(prev.params),
                                jax.tree.leaves(state.masks)):
            if not on:
                continue
            w, wp, m = np.asarray(w)[0], np.asarray(wp)[0], np.asarray(m)[0]
            if step < 11:   # dense weights: those outside the forward's N:M keep learning (G + λW there)
                assert m.all()
                out = ~np.asarray(srste_mask(jnp.asarray(wp), 2, 4))
                outside_moved |= bool(np.any(w[out] != wp[out]))
            else:           # the last step: exactly 2 of every 4 inputs kept, the rest exactly 0
                groups = np.moveaxis(m, -2, -1).reshape(-1, 4)
                assert (groups.sum(1) == 2).all()
                assert np.all(w[~m] == 0)
    assert outside_moved


@pytest.mark.slow
def test_evaluation_sees_the_nm_projection_of_the_dense_weights(srste_trainer):
    """The forward (training and evaluation) uses W ⊙ m(W): evaluating the dense state with the SR-STE
    trainer equals evaluating its projection with the plain trainer."""
    from lth.harness.run import init_variables, keys
    from lth.training.loop import device_data

    s, t, mu = srste_trainer
    params, ms = init_variables(s, keys(s, "init"))
    state = t.new_state(params, ms, M.ones_like(params), 0, keys(s, "train"), keys(s, "data"))
    data = device_data(t, s.dataset)
    state, _ = t.run_steps(state, t.epoch_perm(state.data_rng, 0), data.x_train, data.y_train, 3)
    proj = jax.vmap(mu.transform)(state.params)
    a = np.asarray(t.evaluate(state, data.test)[0])
    b = np.asarray(s.trainer.evaluate(state.replace(params=proj), data.test)[0])
    c = np.asarray(s.trainer.evaluate(state, data.test)[0])
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.allclose(a, c)


def test_sparse_refuses_bad_srste_and_movement_settings_in_one_line(capsys, tmp_path):
    from conftest import TINY, assert_refused

    assert_refused(capsys, "sparse", TINY, [
        (("sparse.methods=srste", "sparse.pattern=4:4"), "sparse.pattern '4:4': allowed: integers 0 < N < M"),
        (("sparse.methods=srste", "sparse.pattern=3:7"), "M=7 does not divide the input dimension"),
        (("sparse.methods=srste", "sparse.pattern="), "srste trains an N:M pattern"),
        (("sparse.methods=movement_soft", "sparse.soft_lambdas=-1"), "sparse.soft_lambdas entry '-1'"),
        (("sparse.methods=movement_hard", "sparse.mask_lr=0"), "sparse.mask_lr 0.0 out of range"),
        ("sparse.decay=-1", "sparse.decay -1.0 out of range"),
        ("prune.pattern=2:4", "allowed in lth sparse: ''"),
    ], tmp_path)
