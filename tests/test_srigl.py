"""SRigL (lth/pruning/srigl.py) equals calgaryml/condensed-sparsity's RigLConstFanScheduler._rigl_step
on stored outputs (tests/data/make_srigl_reference.py): the same masks, ablated neurons and constant
fan-in, dense and conv layers, with and without ablation; the starting mask has a constant fan-in;
`lth sparse` trains it."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from lth.pruning import srigl as SR

REF = np.load(os.path.join(ROOT, "tests", "data", "srigl_reference.npz"))
CASES = sorted({k.split(":")[0] for k in REF.files})


@pytest.mark.parametrize("case", CASES)
def test_an_update_equals_the_reference(case):
    r = {k.split(":")[1]: REF[k] for k in REF.files if k.startswith(case + ":")}
    s = round(float(r["sparsity"]), 6)
    new, ablated = jax.jit(SR.update, static_argnums=(4, 5, 6))(
        jnp.asarray(r["w"]), jnp.asarray(r["mask"]), jnp.asarray(r["grad"]), jnp.float32(r["f"]), 1 - s, 0.3,
        bool(r["protected"]))
    np.testing.assert_array_equal(np.asarray(ablated), r["ablated"])
    np.testing.assert_array_equal(np.asarray(new), r["new_mask"])
    fan = np.asarray(new).reshape(-1, new.shape[-1]).sum(0)
    live = fan[~r["ablated"]]
    assert (live == live[0]).all() and (fan[r["ablated"]] == 0).all()      # a constant fan-in, ablated rows empty
    np.testing.assert_array_equal(r["new_w"], np.where(np.asarray(new) & np.asarray(r["mask"]), r["w"], 0))


def test_the_starting_mask_has_a_constant_fan_in():
    m = np.asarray(SR.const_fan_mask(jax.random.PRNGKey(0), (3, 3, 8, 16), 0.1))
    fan = m.reshape(-1, 16).sum(0)
    assert (fan == SR.budget(m.size, 0.1) // 16).all()
    other = np.asarray(SR.const_fan_mask(jax.random.PRNGKey(1), (3, 3, 8, 16), 0.1))
    assert not np.array_equal(m, other)


def test_lth_sparse_trains_srigl_at_a_constant_fan_in(tmp_path, capsys):
    """`lth sparse --set sparse.methods=srigl`: every sparse layer ends with one fan-in for its live
    neurons; the output layer (sparse.no_ablation) has no empty neuron; bad options are refused."""
    from conftest import DEMO, TINY

    import lth
    from lth.cli import main
    from lth.harness import checkpoint, paths
    from lth.harness.run import init_variables, keys
    from lth.pruning import masks as M
    res = lth.sparse(DEMO, TINY + ["sparse.methods=srigl", "sparse.densities=0.3", "sparse.distributions=uniform",
                                   "sparse.every=4it", "train.duration=20it"], run_dir=str(tmp_path / "run"))
    (arm,) = res.summary["arms"]
    assert abs(arm["density"] - 0.3) < 0.05
    from lth.harness.config import load_config
    from lth.harness.run import setup
    from lth.studies import sparse as S
    s = setup(load_config(DEMO, TINY + ["sparse.methods=srigl", "sparse.densities=0.3",
                                        "sparse.distributions=uniform", "sparse.every=4it", "train.duration=20it"]),
              S.COMMAND)
    p, ms = init_variables(s, keys(s, "init"))
    like = s.trainer.new_state(p, ms, M.ones_like(p), 0, keys(s, "train"), keys(s, "data"))
    final = checkpoint.load_final(paths.named_arm(str(tmp_path / "run"), arm["arm"]), like, own=False)
    for path, m in zip(M.leaf_paths(final.masks), jax.tree.leaves(final.masks)):
        m = np.asarray(m)[0]
        if m.ndim < 2 or m.all():
            continue
        fan = m.reshape(-1, m.shape[-1]).sum(0)
        assert len(set(fan[fan > 0])) == 1, path
        if path.startswith("out/"):
            assert (fan > 0).all()
    for bad, key in (("sparse.gamma_sal=-1", "sparse.gamma_sal"), ("sparse.no_ablation=(", "sparse.no_ablation")):
        assert main(["sparse", "--config", DEMO, "--out", str(tmp_path / "x")] + [
            a for x in TINY + ["sparse.methods=srigl", bad] for a in ("--set", x)]) == 2
        assert key in capsys.readouterr().err
