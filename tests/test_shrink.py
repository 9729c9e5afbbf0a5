"""Physically smaller models (lth.shrink), structured pruning (prune units), low-rank factorization
(lth.factorize) and ALBERT-style sharing: outputs equal the masked / gated / unfactorized model's,
counts follow the stated rules, shrunk BERTs load back through the HF path, bad input is refused."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lth
from lth.compression import factorize as F
from lth.compression import shrink
from lth.errors import UserError
from lth.models import zoo
from lth.models.inits import Init
from lth.pruning import masks as M
from lth.pruning import prune as P


def apply(model, params, x, **kw):
    """The model's eval forward pass, jit-compiled (op by op, the conv and BERT tests take seconds)."""
    return np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, x, **kw))(params, x))


def random_params(model, x, seed=0):
    """Params of the model's shapes drawn with numpy (no compiled init: these tests only compare outputs)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]
    return jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.asarray((1.0 if path[-1].key == "scale" else 0.0) + 0.3 * rng.normal(size=a.shape),
                                    jnp.float32),
        shapes)


def tiny_bert(tmp_path, layers=2, share=0):
    """A BERT of 4 heads of 8 (vocab 300) from an HF config.json, built through the zoo."""
    import json

    from lth.harness.config import base
    path = tmp_path / f"bert_{layers}"
    path.mkdir(exist_ok=True)
    json.dump({"num_hidden_layers": layers, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64,
               "vocab_size": 300, "max_position_embeddings": 32, "sep_token_id": 102}, open(path / "config.json", "w"))
    cfg = base()
    cfg.model.name, cfg.model.share_layers = f"bert:{path}", share
    model = zoo.from_config(cfg.model, 3, (16,))
    x = jnp.asarray(np.random.default_rng(0).integers(103, 300, (4, 16))).at[:, 12:].set(0).at[:, 5].set(102)
    return model, x, random_params(model, x)


def _model(name, shape, classes=5, seed=0):
    model = zoo.build(name, classes, Init("kaiming_normal"), shape)
    x = jnp.asarray(np.random.default_rng(seed).normal(size=(6, *shape)), jnp.float32)
    params = random_params(model, x, seed)
    # positive biases: a unit whose inputs are all pruned outputs relu(b) > 0, which must be folded
    return model, x, jax.tree.map(lambda a: a + 0.1 if a.ndim == 1 else a, params)


@pytest.mark.parametrize("name,shape,first,nxt", [("lenet_20_10", (12,), "fc_0", "fc_1"),
                                                  ("lenet5", (28, 28, 1), "conv_0", "conv_1")])
def test_dead_units_removed_and_constant_units_folded(name, shape, first, nxt):
    model, x, params = _model(name, shape)
    masks = jax.tree.map(lambda a: np.ones(a.shape, bool), params)
    masks[first]["kernel"][..., 1] = False       # unit 1: no inputs → constant relu(b₁), folded into the next bias
    masks[nxt]["kernel"][..., 2, :] = False      # unit 2: no outputs → dropped
    masks["fc_0" if name == "lenet5" else "fc_1"]["kernel"][:, 3] = False
    ref = apply(model, M.apply(params, masks), x)
    sh = lth.shrink.shrink(model, params, masks)   # the public API
    np.testing.assert_allclose(apply(sh.model, sh.params, x), ref, atol=2e-5, rtol=1e-5)
    width = params[first]["kernel"].shape[-1]
    assert sh.units[first] == (width, width - 2)
    assert (sh.units["fc_0" if name == "lenet5" else "fc_1"][1]
            == params["fc_0" if name == "lenet5" else "fc_1"]["kernel"].shape[-1] - 1)
    assert M.num_params(sh.params) < M.num_params(params)
    assert sh.params["out"]["kernel"].shape[-1] == 5          # the classes are never removed


def test_shrink_refuses_a_layer_left_empty():
    model, x, params = _model("lenet_20_10", (12,))
    masks = jax.tree.map(lambda a: np.ones(a.shape, bool), params)
    masks["fc_1"]["kernel"][:] = False
    with pytest.raises(UserError, match="leave layer fc_0 with no units"):
        shrink.shrink(model, params, masks)


def test_bert_heads_and_mlps_removed_equal_the_gated_model_and_load_back_through_hf(tmp_path):
    from lth.models.bert import config_from_file
    from lth.models.bert_import import load_weights, save_pretrained

    model, x, params = tiny_bert(tmp_path)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: a + 0.05 if a.ndim == 1 else a, params)
    masks = jax.tree.map(lambda a: rng.random(a.shape) < (0.7 if a.ndim > 1 else 2), params)
    d = model.cfg.head_dim
    masks["layer_0"]["attention"]["value"]["kernel"][:, :d] = False      # head 0: context = value bias, folded
    masks["layer_1"]["attention"]["output"]["kernel"][d:2 * d] = False    # head 1: feeds nothing
    masks["layer_0"]["intermediate"]["kernel"][:, 5] = False              # neuron 5: gelu(b), folded
    masks["layer_0"]["output"]["kernel"][7] = False                       # neuron 7: feeds nothing
    head_gates = np.array([[1.0, 0.5, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])     # 0.5: folded into the output rows
    mlp_gates = np.array([1.0, 0.0])
    ref = apply(model, M.apply(params, masks), x, head_mask=head_gates, mlp_mask=mlp_gates)
    sh = shrink.shrink(model, params, masks, head_gates, mlp_gates)
    assert sh.model.cfg.layer_heads == (2, 2)                # layer 0: heads 1, 2 (0 folded, 3 off); layer 1: 2, 3
    assert sh.model.cfg.layer_intermediate[1] == 0 and sh.model.cfg.layer_intermediate[0] <= 62
    np.testing.assert_allclose(apply(sh.model, sh.params, x), ref, atol=1e-5)
    # exported as an HF checkpoint (pruned_heads, per-layer MLP widths) and read back by the HF path
    tmp_path = tmp_path / "shrunk"
    save_pretrained(str(tmp_path), sh.params, sh.model.cfg)
    cfg = config_from_file(str(tmp_path))
    assert cfg == sh.model.cfg
    back = zoo.build(f"bert:{tmp_path}", 3, Init("kaiming_normal"), (16,))
    loaded = load_weights(str(tmp_path), random_params(back, x, 1), back.cfg)
    np.testing.assert_allclose(apply(back, loaded, x), ref, atol=1e-5)


def test_structured_pruning_ranks_whole_units_by_their_summed_score():
    rng = np.random.default_rng(0)
    params = {"fc_0": {"kernel": jnp.asarray(rng.normal(size=(6, 8))), "bias": jnp.zeros(8)},
              "fc_1": {"kernel": jnp.asarray(rng.normal(size=(8, 4))), "bias": jnp.zeros(4)}}
    prunable = {"fc_0": {"kernel": True, "bias": False}, "fc_1": {"kernel": True, "bias": False}}
    # unit 0 of fc_0 is small but for one large weight that is already pruned: it must not count
    params["fc_0"]["kernel"] = params["fc_0"]["kernel"].at[:, 0].multiply(0.01).at[0, 0].set(100.0)
    masks = M.ones_like(params)
    masks["fc_0"]["kernel"] = masks["fc_0"]["kernel"].at[0, 0].set(False)
    scores = jax.tree.map(jnp.abs, params)
    new = P.prune(scores, masks, prunable, fraction=0.25, layerwise=True, units=True)
    for name, n in (("fc_0", 8), ("fc_1", 4)):
        live = np.asarray(masks[name]["kernel"])
        l1 = np.sum(np.abs(np.asarray(params[name]["kernel"])) * live, 0)     # Li et al.: L1 of each filter
        kept = np.asarray(new[name]["kernel"]).any(0)
        assert kept.sum() == n - int(np.ceil(0.25 * n))                       # the unit count follows the rule
        assert set(np.flatnonzero(kept)) == set(np.argsort(-l1, kind="stable")[:kept.sum()])
        assert np.array_equal(np.asarray(new[name]["kernel"]), live & kept[None])   # whole units, old mask kept


def test_factorization_rank_energy_and_low_rank_model():
    model, x, params = _model("lenet_40_30", (12,))
    w = np.asarray(params["fc_0"]["kernel"], np.float64)   # 12 × 40
    s2 = np.linalg.svd(w, compute_uv=False) ** 2
    want = int(np.argmax(np.cumsum(s2) / s2.sum() >= 0.6)) + 1
    ranks = F.plan(params, r"fc_0/kernel", energy=0.6)
    assert ranks == {"fc_0": want} and want < 12
    assert F.plan(params, r"fc_\d/kernel", rank=12) == {"fc_1": 12}   # fc_0: 12·(12+40) ≥ 12·40, no saving: dense
    fp = F.factorize(params, {"fc_0": 12})                  # full rank: the same function
    lr = F.low_rank(model, {"fc_0": 12})
    np.testing.assert_allclose(apply(lr, fp, x), apply(model, params, x), atol=1e-4)
    fp = F.factorize(params, {"fc_0": want})
    u, v = np.asarray(fp["fc_0"]["u"], np.float64), np.asarray(fp["fc_0"]["v"], np.float64)
    err = np.linalg.norm(w - u @ v) ** 2 / np.linalg.norm(w) ** 2
    assert err == pytest.approx(1 - np.cumsum(s2)[want - 1] / s2.sum(), rel=1e-4)   # Eckart–Young
    shapes = jax.tree.map(lambda a: a.shape,
                          jax.eval_shape(F.low_rank(model, {"fc_0": 3}).init, jax.random.PRNGKey(0), x)["params"])
    assert shapes["fc_0"] == {"u": (12, 3), "v": (3, 40), "bias": (40,)}
    with pytest.raises(UserError, match="rank 13 is above layer fc_0/kernel's size 12×40"):
        F.plan(params, r"fc_0/kernel", rank=13)
    for bad in (0.0 - 0.5, 1.5):
        with pytest.raises(UserError, match="allowed: 0 < energy <= 1"):
            F.plan(params, r"fc_0/kernel", energy=bad)


def test_albert_sharing_and_factorized_embedding(tmp_path):
    from lth.models.bert_import import load_weights, save_pretrained

    shared, x, p = tiny_bert(tmp_path, share=1)            # ALBERT: both layers run one block
    assert sorted(k for k in p if k.startswith("layer_")) == ["layer_0"]
    plain, _, full = tiny_bert(tmp_path)
    np.testing.assert_allclose(apply(shared, p, x), apply(plain, dict(p, layer_1=p["layer_0"]), x), atol=1e-5)
    # from a pretrained 4-layer checkpoint in 2 groups: block j starts from HF layer 2j, layers 1 and 3 left out
    deep, _, deep_params = tiny_bert(tmp_path, layers=4)
    save_pretrained(str(tmp_path / "ckpt"), deep_params, deep.cfg)
    two = dataclasses.replace(deep.cfg, share_groups=2)
    got = load_weights(str(tmp_path / "ckpt"),
                       {k: v for k, v in deep_params.items() if k not in ("layer_2", "layer_3")}, two)
    assert np.array_equal(got["layer_1"]["intermediate"]["kernel"], deep_params["layer_2"]["intermediate"]["kernel"])
    assert np.array_equal(got["layer_0"]["output"]["bias"], deep_params["layer_0"]["output"]["bias"])
    with pytest.raises(UserError, match="sharing groups 3 do not divide the 4 layers"):
        tiny_bert(tmp_path, layers=4, share=3)
    # ALBERT's factorized embedding V×E + E×H, by the same low-rank rule (SVD of the word embedding)
    ranks = F.plan(full, r"word/embedding", rank=8)
    fp = F.factorize(full, ranks)
    assert ranks == {"word": 8} and np.shape(fp["word"]["u"]) == (300, 8) and np.shape(fp["word"]["v"]) == (8, 32)
    assert M.num_params(fp) == M.num_params(full) - 300 * 32 + 8 * (300 + 32)
    np.testing.assert_allclose(apply(F.low_rank(plain, {"word": 32}), F.factorize(full, {"word": 32}), x),
                               apply(plain, full, x), atol=1e-4)   # full rank: the same model


def test_structured_imp_prunes_whole_neurons_and_shrinks_to_them(tmp_path):
    """`lth lottery --set prune.structure=units`: level 1 keeps whole columns (neurons) of each
    hidden layer, layerwise at the level's rate, the output layer untouched; shrinking keeps exactly
    the live neurons."""
    from conftest import LOTTERY

    from lth.cli import main
    from lth.harness import checkpoint
    from lth.harness.run import setup
    from lth.studies import compress as C

    run = tmp_path / "run"
    assert main(LOTTERY + ["--run-dir", str(run), "--set", "lottery.levels=1", "--set", "lottery.controls=",
                           "--set", "prune.structure=units", "--set", "prune.scope=layerwise"]) == 0
    s = setup(C.run_config(str(run)), C.COMMAND)
    final = C.load_level(s, str(run), 1)
    masks = jax.tree.map(lambda a: np.asarray(a[0]), final.masks)
    for name, units in (("fc_0", 24), ("fc_1", 12)):
        m = masks[name]["kernel"]
        live = m.any(0)
        assert np.array_equal(m, np.broadcast_to(live, m.shape))            # whole columns
        assert live.sum() == units - int(np.ceil(0.2 * units))               # prune.fraction 0.2 of the units
    assert masks["out"]["kernel"].all()                                      # the classes are never pruned
    sh = shrink.shrink(s.trainer.model, jax.tree.map(lambda a: a[0], final.params), masks)
    assert sh.units == {"fc_0": (24, 19), "fc_1": (12, 9)}                 # 24 - ceil(0.2 · 24), 12 - ceil(0.2 · 12)
    assert checkpoint.exists(str(run / "level_1" / "final"))
