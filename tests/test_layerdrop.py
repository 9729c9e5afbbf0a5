"""LayerDrop (Fan et al. 2020) and the removal of whole BERT layers at inference: in training each
layer is skipped with probability p (fairseq's rule: one coin per layer and forward pass, no
rescaling), at evaluation every layer runs; `drop_layers` keeps the chosen layers physically, and a
training pass equals the evaluation of the model with exactly the layers whose coins came up;
`lth compress --set compress.layers=...` adds the stage, bad layer lists are refused."""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_bert import CONFIG, overrides, pretrained, sets  # noqa: F401  (pretrained: a module fixture)

from lth.cli import main
from lth.errors import UserError
from lth.models.bert import Bert, BertConfig, drop_layers

CFG = BertConfig(layers=4, hidden=32, heads=4, intermediate=64, vocab_size=50, max_positions=16, sep_id=3,
                 dropout=0.0, attention_dropout=0.0, layerdrop=0.5)


def setup_model():
    model = Bert(CFG, 3)
    x = jnp.asarray(np.random.default_rng(0).integers(4, 50, (3, 10))).at[:, 0].set(2).at[:, 9].set(3)
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    return model, x, params


def test_layerdrop_skips_whole_layers_in_training_only():
    model, x, params = setup_model()
    full = model.clone(cfg=dataclasses.replace(CFG, layerdrop=0.0))
    np.testing.assert_allclose(model.apply({"params": params}, x), full.apply({"params": params}, x), atol=1e-6)
    f = jax.jit(lambda k: model.apply({"params": params}, x, train=True, rngs={"dropout": k},
                                      mutable=["intermediates"]))
    runs = []
    for k in range(100):
        out, inter = f(jax.random.PRNGKey(k))
        run = np.asarray(inter["intermediates"]["layerdrop_run"][0])
        runs.append(run)
        kept = [i for i in range(CFG.layers) if run[i]]
        if k < 6 and kept:
            small, p = drop_layers(full, params, kept)
            np.testing.assert_allclose(out, small.apply({"params": p}, x), atol=1e-5)   # those layers, unscaled
    frac = np.mean(runs)
    assert abs(frac - 0.5) < 4 * np.sqrt(0.25 / (100 * CFG.layers))
    assert len({tuple(r) for r in runs}) > 8                          # a fresh draw per pass


def test_drop_layers_renumbers_and_refuses_bad_lists():
    model, x, params = setup_model()
    small, p = drop_layers(model, params, [0, 2])
    assert small.cfg.layers == 2 and sorted(k for k in p if k.startswith("layer_")) == ["layer_0", "layer_1"]
    np.testing.assert_array_equal(p["layer_1"]["intermediate"]["kernel"], params["layer_2"]["intermediate"]["kernel"])
    shrunk = model.clone(cfg=dataclasses.replace(CFG, layer_heads=(4, 3, 2, 1), layer_intermediate=(64, 48, 32, 16)))
    assert drop_layers(shrunk, params, [1, 3])[0].cfg.layer_heads == (3, 1)
    assert drop_layers(shrunk, params, [1, 3])[0].cfg.layer_intermediate == (48, 16)
    for bad in ([], [0, 0], [4], [-1]):
        with pytest.raises(UserError, match="allowed: distinct indices in 0..3"):
            drop_layers(model, params, bad)


@pytest.mark.slow
def test_compress_removes_layers_of_a_bert_ticket(pretrained, tmp_path, capsys):  # noqa: F811
    run = str(tmp_path / "run")
    assert main(["lottery", "--config", CONFIG, "--run-dir", run,
                 *sets(overrides(pretrained) + ["lottery.controls=", "replicates=1", "model.layerdrop=0.2"])]) == 0
    assert main(["compress", "--run-dir", run, "--level", "1", "--set", "compress.layers=7", "--no-progress"]) == 2
    assert "compress.layers '7': allowed: every_other, or distinct layer indices in 0..1" in capsys.readouterr().err
    assert main(["compress", "--run-dir", run, "--level", "1", "--no-progress", "--set", "compress.layers=1"]) == 0
    (res,) = [os.path.join(run, "compress", d, "results.json") for d in os.listdir(os.path.join(run, "compress"))]
    st = json.load(open(res))["physical"]
    assert st["layers_dropped"]["layers"] == [1]
    per_layer = st["ticket_f32"]["params"] - st["layers_dropped"]["params"]
    assert per_layer == 4 * 32 * 32 + 4 * 32 + 2 * 32 * 64 + 64 + 32 + 4 * 32   # one layer's q, k, v, o, MLP, 2 LNs
    cfg = json.load(open(os.path.join(os.path.dirname(res), "layers_dropped", "replicate_0", "config.json")))
    assert cfg["num_hidden_layers"] == 1
