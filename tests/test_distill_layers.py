"""Intermediate-layer distillation (lth/training/distill.py): Patient KD and TinyBERT's losses equal
their references' code on stored tensors (tests/data/make_distill_reference.py), BERT's
features="all" is the forward pass's own states, and a student distils from another run's BERT
through the one training loop (bad pairings refused before anything is written)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT
from test_bert import CONFIG, SMALL, overrides, pretrained, sets  # noqa: F401  (pretrained: a module fixture)

from lth.cli import main
from lth.errors import UserError
from lth.models.bert import Bert, BertConfig
from lth.training import distill as D

REF = np.load(os.path.join(ROOT, "tests", "data", "distill_reference.npz"))


def nets():
    s = {"logits": jnp.asarray(REF["s_logits"]), "hidden": tuple(jnp.asarray(REF["s_hidden"])),
         "scores": tuple(jnp.asarray(REF["s_scores"])), "fit": tuple(jnp.asarray(REF["s_fit"]))}
    t = {"logits": jnp.asarray(REF["t_logits"]), "hidden": tuple(jnp.asarray(REF["t_hidden"])),
         "scores": tuple(jnp.asarray(REF["t_scores"])), "fit": None}
    return s, t


@pytest.mark.parametrize("normalize", [True, False])
def test_patient_kd_equals_the_pkd_code(normalize):
    s, t = nets()
    # PKD's alpha = 0.7 weighs its KD term: lth's train.distill.alpha weighs CE (0.3)
    got = D.loss_of("patient", s, t, jnp.asarray(REF["labels"]), 0.3, 4.0, 100.0, normalize)
    assert float(got) == pytest.approx(float(REF[f"pkd_{normalize}"]), rel=1e-5)


def test_tinybert_losses_equal_the_tinybert_code():
    s, t = nets()
    assert float(D.loss_of("tinybert_layers", s, t, None, 0.0, 1.0)) == pytest.approx(float(REF["tinybert_layers"]),
                                                                                     rel=1e-5)
    got = D.loss_of("tinybert_pred", s["logits"], t["logits"], None, 0.0, 2.0)
    assert float(got) == pytest.approx(float(REF["tinybert_pred"]), rel=1e-5)


def test_layer_maps_and_pairings():
    assert D.layers_per_block(3, 6) == 2 and D.layers_per_block(6, 6) == 1
    with pytest.raises(UserError, match="a student of 4 layers cannot distil from a teacher of 6 layers"):
        D.layers_per_block(4, 6)
    student = Bert(BertConfig(layers=1, hidden=16, heads=4, intermediate=32, vocab_size=40), 3)
    teacher = Bert(BertConfig(layers=2, hidden=32, heads=4, intermediate=64, vocab_size=40), 3)
    with pytest.raises(UserError, match="allowed: a student as wide as its teacher"):
        D.check_models("patient", student, teacher)
    with pytest.raises(UserError, match="allowed: model.fit_size=32"):
        D.check_models("tinybert_layers", student, teacher)
    fitted = Bert(BertConfig(layers=1, hidden=16, heads=4, intermediate=32, vocab_size=40, fit_size=32), 3)
    D.check_models("tinybert_layers", fitted, teacher)


def test_features_all_are_the_forward_passes_own_states():
    cfg = BertConfig(layers=2, hidden=16, heads=4, intermediate=32, vocab_size=40, max_positions=16, sep_id=3,
                     fit_size=24)
    model = Bert(cfg, 3)
    x = jnp.asarray([[2, 9, 10, 11, 3, 0, 0], [2, 12, 13, 3, 14, 15, 3]])
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    out = model.apply({"params": params}, x, features="all")
    np.testing.assert_allclose(out["logits"], model.apply({"params": params}, x), atol=1e-6)
    h, _ = model.apply({"params": params}, x, features=True)
    np.testing.assert_allclose(out["hidden"][-1], h, atol=1e-6)
    assert len(out["hidden"]) == 3 and len(out["scores"]) == 2 and out["scores"][0].shape == (2, 4, 7, 7)
    assert out["fit"][0].shape == (2, 7, 24)
    assert float(out["scores"][0][0, 0, 0, 6]) < -1e30     # padding: masked before the softmax


@pytest.mark.slow
def test_a_student_distils_the_layers_of_another_runs_bert(pretrained, tmp_path, capsys):  # noqa: F811
    teacher = str(tmp_path / "teacher")
    assert main(["lottery", "--config", CONFIG, "--run-dir", teacher,
                 *sets(overrides(pretrained) + ["lottery.levels=0", "lottery.controls="])]) == 0
    small = tmp_path / "student"
    small.mkdir()
    json.dump({"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 32,
               "vocab_size": SMALL.vocab_size, "max_position_embeddings": 32, "sep_token_id": 3},
              open(small / "config.json", "w"))   # as deep as the teacher (a patience term), a narrower MLP
    base = overrides(pretrained) + [f"model.name=bert:{small}", "model.pretrained=", "lottery.levels=0",
                                    "lottery.controls=", f"train.distill.teacher={teacher}/level_0"]
    for kind in ("patient", "tinybert_layers"):
        run = str(tmp_path / kind)
        assert main(["lottery", "--config", CONFIG, "--run-dir", run,
                     *sets(base + [f"train.distill.kind={kind}"])]) == 0, capsys.readouterr()
        rows = json.load(open(os.path.join(run, "summary.json")))["levels"][0]["replicates"]
        assert all(np.isfinite(r["best_val_loss"]) for r in rows)
    # bad pairings: one line, exit 2, nothing written
    json.dump({"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 4, "intermediate_size": 32,
               "vocab_size": SMALL.vocab_size, "max_position_embeddings": 32, "sep_token_id": 3},
              open(small / "config.json", "w"))
    out = tmp_path / "bad"
    for extra, needle in ((["train.distill.kind=patient"], "allowed: a student as wide as its teacher"),
                          (["train.distill.kind=tinybert_layers"], "allowed: model.fit_size=32")):
        assert main(["lottery", "--config", CONFIG, "--out", str(out), *sets(base + extra)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert not out.exists() or not os.listdir(out)


def test_a_shallower_student_reads_chosen_layers_of_a_checkpoint(tmp_path):
    """model.pretrained_layers: student layer i is the checkpoint's layer kept[i]; the others are
    left out; a list of the wrong length or an index past the checkpoint is refused."""
    from lth.models.bert_import import load_weights, save_pretrained
    deep = BertConfig(layers=4, hidden=16, heads=4, intermediate=32, vocab_size=40, max_positions=16, sep_id=3)
    x = jnp.zeros((1, 8), jnp.int32)
    params = Bert(deep, 3).init(jax.random.PRNGKey(1), x)["params"]
    save_pretrained(str(tmp_path), params, deep)
    student = Bert(BertConfig(layers=2, hidden=16, heads=4, intermediate=32, vocab_size=40, max_positions=16,
                              sep_id=3), 3)
    fresh = student.init(jax.random.PRNGKey(2), x)["params"]
    got = load_weights(str(tmp_path), fresh, student.cfg, [1, 3])
    for i, j in ((0, 1), (1, 3)):
        for a, b in zip(jax.tree.leaves(got[f"layer_{i}"]), jax.tree.leaves(params[f"layer_{j}"])):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got["word"]["embedding"], params["word"]["embedding"])
    for bad in ([0], [0, 4]):
        with pytest.raises(UserError, match="model.pretrained_layers .*allowed: 2 layer indices .* 4 layers 0..3"):
            load_weights(str(tmp_path), fresh, student.cfg, bad)
    with pytest.raises(UserError, match="unknown keys"):   # without the list, layers 2 and 3 are unknown
        load_weights(str(tmp_path), fresh, student.cfg)
