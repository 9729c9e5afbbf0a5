"""OBS / WoodFisher / oBERT (lth.surgeons.obs) against neuralmagic/sparseml's OBSPruningParamsScorer and
EmpiricalBlockFisherInverse on stored inputs (tests/data/obs_reference.npz, made by
tests/data/make_obs_reference.py: the reference's own classes, torch.equal-checked)."""
import jax
import numpy as np
import pytest

from lth.errors import UserError
from lth.surgeons import obs as O

jax.config.update("jax_enable_x64", False)
REF = np.load(__import__("os").path.join(__import__("os").path.dirname(__file__), "data", "obs_reference.npz"))
CASES = {"A": 1, "B": 2, "C": 1}   # C: 35 weights in blocks of 8 (a zero-padded last block)


def _names(case):
    return [f"w{i}" for i in range(CASES[case])]


def _grad_fn(case):
    """grads of the stored batch j, in lth's layout (kernel = W.T)."""
    def fn(params, j):
        return {f"w{i}": {"kernel": REF[f"{case}/grads{i}"][j].T} for i in range(CASES[case])}
    return fn


def _network(case):
    params = {f"w{i}": {"kernel": REF[f"{case}/w{i}"].T} for i in range(CASES[case])}
    masks = {f"w{i}": {"kernel": REF[f"{case}/prior_mask{i}"].T} for i in range(CASES[case])}
    return params, masks


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("damp", ["1e-07", pytest.param("0.001", marks=pytest.mark.slow)])
def test_fisher_inverse_scores_masks_and_update_equal_sparseml(case, damp):
    m, block = int(REF[f"{case}/m"]), int(REF[f"{case}/B"])
    params, masks = _network(case)
    prunable = {k: {"kernel": True} for k in params}
    key = f"{case}/damp{damp}/f32"
    finvs = O.fisher_inverses(_grad_fn(case), params, masks, range(m), [f"{k}/kernel" for k in params],
                              block, float(damp))
    for i, name in enumerate(_names(case)):
        f = np.asarray(finvs[f"{name}/kernel"])
        ref = REF[f"{key}/finv{i}"]
        assert f.shape == ref.shape
        np.testing.assert_allclose(f, ref, rtol=2e-4, atol=2e-4 * np.abs(ref).max())
        w = O.to_torch_flat(params[name]["kernel"])
        alive = O.to_torch_flat(masks[name]["kernel"])
        np.testing.assert_allclose(np.asarray(O.scores(w, finvs[f"{name}/kernel"], alive)),
                                   REF[f"{key}/scores{i}"].ravel(), rtol=2e-4)
    for sp in ("0.50", "0.75"):
        new_p, new_m = O.prune_obs(_grad_fn(case), params, masks, range(m), sparsity=float(sp), prunable=prunable,
                                   block=block, damp=float(damp))
        for i, name in enumerate(_names(case)):
            np.testing.assert_array_equal(np.asarray(new_m[name]["kernel"]).T, REF[f"{key}/s{sp}/mask{i}"])
            ref_w = REF[f"{key}/s{sp}/w{i}"]
            np.testing.assert_allclose(np.asarray(new_p[name]["kernel"]).T, ref_w, rtol=1e-4,
                                       atol=1e-4 * np.abs(ref_w).max())


def test_update_moves_kept_weights_and_noupdate_does_not():
    """The OBS update is what changes the kept weights (without it they equal the input)."""
    case, m, block = "A", int(REF["A/m"]), int(REF["A/B"])
    params, masks = _network(case)
    prunable = {"w0": {"kernel": True}}
    p1, m1 = O.prune_obs(_grad_fn(case), params, masks, range(m), sparsity=0.5, prunable=prunable, block=block,
                         damp=1e-3)
    p0, m0 = O.prune_obs(_grad_fn(case), params, masks, range(m), sparsity=0.5, prunable=prunable, block=block,
                         damp=1e-3, update_weights=False)
    np.testing.assert_array_equal(np.asarray(m0["w0"]["kernel"]), np.asarray(m1["w0"]["kernel"]))
    kept = np.asarray(m0["w0"]["kernel"])
    np.testing.assert_array_equal(np.asarray(p0["w0"]["kernel"])[kept], params["w0"]["kernel"][kept])
    assert np.abs(np.asarray(p1["w0"]["kernel"])[kept] - params["w0"]["kernel"][kept]).max() > 1e-3


def test_block_larger_than_a_layer_is_refused_in_one_line():
    with pytest.raises(UserError, match=r"block 64 is larger than w0/kernel \(48 weights\)") as e:
        O.check_block(64, {"w0/kernel": 48})
    assert "\n" not in str(e.value)
    O.check_block(8, {"w0/kernel": 35})   # a padded last block is fine (sparseml pads)


def test_conv_layout_round_trips_to_the_reference_order():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)   # (kh, kw, in, out)
    flat = np.asarray(O.to_torch_flat(x))
    np.testing.assert_array_equal(flat, np.transpose(x, (3, 2, 0, 1)).ravel())
    np.testing.assert_array_equal(np.asarray(O.from_torch_flat(flat, x.shape)), x)
