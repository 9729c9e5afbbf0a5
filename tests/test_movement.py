"""Movement pruning (lth.pruning.movement; `lth sparse --set sparse.methods=movement_hard,movement_soft`)
against the transformers research project movement-pruning (emmental binarizers, MaskedLinear,
masked_run_glue.py schedule_threshold / regularization) on stored outputs
(tests/data/srste_movement_reference.npz, made by tests/data/make_srste_movement_reference.py)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth.pruning import movement as MV

REF = np.load(os.path.join(os.path.dirname(__file__), "data", "srste_movement_reference.npz"))
S, W, G = (jnp.asarray(REF[f"mp/{k}"]) for k in ("scores", "weight", "upstream"))


@pytest.mark.parametrize("keep", ["0.3", "0.5", "0.33"])
def test_topk_binarizer_equals_emmental_off_ties(keep):
    """int(keep · numel) kept (0.33 · 60 = 19.8 → 19); torch's sort orders ties arbitrarily, so tied
    entries across the cut are not compared (lth keeps the lower index)."""
    got = np.asarray(MV.topk_mask(S, float(keep)))
    ref, tied = REF[f"mp/topk/{keep}/mask"] > 0, REF[f"mp/topk/{keep}/tied"]
    assert got.sum() == ref.sum() == int(float(keep) * S.size)
    np.testing.assert_array_equal(got[~tied], ref[~tied])


@pytest.mark.parametrize("case,t,sig", [("sig_0.5", 0.5, True), ("nosig_0.1", 0.1, False), ("nosig_5.0", 5.0, False),
                                        ("sig_0.999", 0.999, True)])
def test_threshold_binarizer_equals_emmental_with_its_fallback(case, t, sig):
    """Strict σ(S) > τ; with fewer than int(0.005·numel)+1 left (the last two cases) the raw S above its
    (numel − nb_min)-th smallest value are kept."""
    np.testing.assert_array_equal(np.asarray(MV.threshold_mask(S, np.float32(t), sig)),
                                  REF[f"mp/threshold/{case}/mask"] > 0)


@pytest.mark.parametrize("case", ["topK_0.3", "topK_0.5", "sigmoied_threshold_0.5"])
def test_straight_through_gradients_equal_masked_linear(case):
    """The forward sees W ⊙ Bin(S); ∂L/∂W = G ⊙ Bin(S) and ∂L/∂S = G ⊙ W (no σ' for sigmoied_threshold)."""
    soft, tau = case.startswith("sig"), float(case.rsplit("_", 1)[1])
    rule = MV.Movement((True,), soft, tau, tau, 0, 0)
    mask = rule.binarize(S, 0)
    out, vjp = jax.vjp(lambda w: MV.ste_mask(w, mask.astype(w.dtype)), W)
    ref = f"mp/masked_linear/{case}"
    tied = REF["mp/topk/0.3/tied"] | REF["mp/topk/0.5/tied"] if not soft else np.zeros(S.shape, bool)
    np.testing.assert_array_equal(np.asarray(out)[~tied], REF[f"{ref}/masked_weight"][~tied])
    (g_w,), (g_s,) = rule.split([vjp(G)[0]], [W], [S], 0)
    np.testing.assert_allclose(np.asarray(g_w)[~tied], REF[f"{ref}/grad_weight"][~tied], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g_s), REF[f"{ref}/grad_scores"], rtol=1e-6)


@pytest.mark.parametrize("name", ["topk", "soft"])
def test_cubic_threshold_schedule_and_penalty_weight_equal_schedule_threshold(name):
    ini, fin, iw, fw, total, ws, lam = REF[f"mp/sched/{name}/params"]
    t0, t1 = int(iw * ws), int(total - fw * ws)
    steps = REF[f"mp/sched/{name}/step"]
    tau = np.asarray(jax.vmap(lambda s: MV.threshold_schedule(s, float(ini), float(fin), t0, t1))(steps))
    np.testing.assert_allclose(tau, REF[f"mp/sched/{name}/threshold"], rtol=1e-6, atol=1e-7)
    if lam:
        np.testing.assert_allclose(lam * tau / fin, REF[f"mp/sched/{name}/regu_lambda"], rtol=1e-5)


def test_l1_penalty_and_its_gradient_equal_regularization():
    """mean over the layers of mean(σ(S)) (two layers of different sizes: not one mean over all scores)."""
    s2 = jnp.asarray(REF["mp/scores2"])
    val, (g1, g2) = jax.value_and_grad(MV.l1_regularization)([S, s2])
    np.testing.assert_allclose(float(val), float(REF["mp/regu/l1/value"]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g1), REF["mp/regu/l1/grad_scores"], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(g2), REF["mp/regu/l1/grad_scores2"], rtol=1e-5)
