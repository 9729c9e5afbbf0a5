"""BERT encoder with a sequence-classification head (Flax Linen), matching HF `BertModel` numerics.

Input: token ids [B, T] (any numeric dtype; cast to int32). Padding (`pad_id`) is masked out of
attention; token types are derived from the ids (segment B starts after the first [SEP]), so a
dataset is a plain id array like any other. Output: logits [B, classes] from the tanh pooler over
[CLS] (dropout, then `classifier`); features=True returns (hidden states [B, T, H], pooled [B, H]).

Gates (Michel et al. 2019; Prasanna et al. 2020): `head_mask` [L, A] multiplies each head's
attention probabilities (as HF's head_mask), `mlp_mask` [L] multiplies each layer's MLP output;
either may carry a leading batch axis ([B, L, A], [B, L]) for per-example gradients.
A gate at 0 removes that head / MLP exactly; importance scores are gradients with respect to them.

Shrunk models (lth.shrink): `layer_heads` / `layer_intermediate` give each layer its own head count
and MLP width (q/k/v kernels [H, heads_i·d], attention output [heads_i·d, H]); a layer's gates then
refer to its kept heads in order. HF's `pruned_heads` in config.json reads as `layer_heads`.
ALBERT-style sharing (Lan et al. 2020): with `share_groups` g the L layers fall in g contiguous
groups and every layer of group j runs block `layer_j` (g = 1: one block for all layers).

The masked-LM head (`head="mlm"`, for lth/training/objective.py's MaskedLM): HF BertForMaskedLM's
`cls.predictions` (transformers models/bert/modeling_bert.py, BertLMPredictionHead) — dense + GELU +
LayerNorm, then the transposed word embeddings (tied) and a bias — giving logits [B, T, vocab] (the
pooler is still built, unused, so a checkpoint's pooler loads).

Param names: {word,position,token_type}/embedding, embeddings_ln; layer_i/attention/
{query,key,value,output}, layer_i/attention_ln, layer_i/{intermediate,output}, layer_i/output_ln;
pooler; classifier, or mlm_transform, mlm_ln, mlm_bias. PRUNABLE is the Chen et al. (2020) set: the
encoder's q, k, v, attention-output, intermediate and output kernels plus the pooler.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp

from lth.errors import UserError

PRUNABLE = r"(layer_\d+/attention/(query|key|value|output)|layer_\d+/(intermediate|output)|pooler)/kernel"


@dataclasses.dataclass(frozen=True)
class BertConfig:
    layers: int = 2
    hidden: int = 128
    heads: int = 2
    intermediate: int = 512
    vocab_size: int = 30522
    max_positions: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    ln_eps: float = 1e-12
    init_range: float = 0.02
    pad_id: int = 0
    sep_id: int = 102
    layer_heads: tuple = ()          # heads in each layer of a shrunk model (lth.shrink); () = `heads` in every layer
    layer_intermediate: tuple = ()   # MLP width of each layer of a shrunk model; () = `intermediate` in every layer
    share_groups: int = 0            # ALBERT cross-layer sharing: the layers in this many contiguous groups, each
                                     # group one block's params (1 = all layers share one block); 0 = no sharing
    layerdrop: float = 0.0           # LayerDrop (Fan et al. 2020): each layer skipped with this probability in
                                     # training (one coin per layer and batch), all layers at evaluation
    fit_size: int = 0                # TinyBERT's `fit_dense`: hidden states projected to a teacher's width
                                     # (features="all"); 0 = none

    @classmethod
    def from_hf(cls, d: dict) -> "BertConfig":
        """From an HF BERT `config.json` dict (only absolute positions and GELU are supported)."""
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {d['position_embedding_type']!r}; allowed: absolute")
        if d.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {d['hidden_act']!r}; allowed: gelu")
        return cls(layers=d["num_hidden_layers"], hidden=d["hidden_size"], heads=d["num_attention_heads"],
                   intermediate=d["intermediate_size"], vocab_size=d["vocab_size"],
                   max_positions=d.get("max_position_embeddings", 512), type_vocab_size=d.get("type_vocab_size", 2),
                   dropout=d.get("hidden_dropout_prob", 0.1),
                   attention_dropout=d.get("attention_probs_dropout_prob", 0.1),
                   ln_eps=d.get("layer_norm_eps", 1e-12), init_range=d.get("initializer_range", 0.02),
                   pad_id=d.get("pad_token_id", 0) or 0, sep_id=d.get("sep_token_id", 102),
                   layer_heads=tuple(d["num_attention_heads"] - len(d.get("pruned_heads", {}).get(str(i), ()))
                                     for i in range(d["num_hidden_layers"])) if d.get("pruned_heads") else (),
                   layer_intermediate=tuple(d.get("intermediate_sizes", ())), share_groups=d.get("lth_share_groups", 0))

    def __post_init__(self):
        if self.hidden % self.heads:
            raise ValueError(f"hidden size {self.hidden} is not divisible by {self.heads} heads")
        for name in ("layer_heads", "layer_intermediate"):
            if len(getattr(self, name)) not in (0, self.layers):
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {self.layers} layers")
        if self.share_groups < 0 or (self.share_groups and self.layers % self.share_groups):
            raise ValueError(f"sharing groups {self.share_groups} do not divide the {self.layers} layers; allowed: "
                             f"0 (no sharing) or a divisor of {self.layers}")
        if self.share_groups and (self.layer_heads or self.layer_intermediate):
            raise ValueError("a shrunk model (per-layer heads or MLP widths) cannot share layers")
        if not 0.0 <= self.layerdrop < 1.0:
            raise ValueError(f"layerdrop {self.layerdrop} out of range; allowed: 0 <= rate < 1")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def heads_of(self, i: int) -> int:
        return self.layer_heads[i] if self.layer_heads else self.heads

    def intermediate_of(self, i: int) -> int:
        return self.layer_intermediate[i] if self.layer_intermediate else self.intermediate

    def block_of(self, i: int) -> int:
        """Index of the parameter block (`layer_<b>`) that layer i runs."""
        return i // (self.layers // self.share_groups) if self.share_groups else i


def _sized(layers, hidden, heads):
    return BertConfig(layers=layers, hidden=hidden, heads=heads, intermediate=4 * hidden)


# Turc et al. (2019) compact BERTs, and MiniLM-L6-H384 (all-MiniLM-L6-v2's encoder).
NAMED = {
    "bert_tiny": _sized(2, 128, 2),
    "bert_mini": _sized(4, 256, 4),
    "bert_small": _sized(4, 512, 8),
    "bert_medium": _sized(8, 512, 8),
    "minilm_l6": BertConfig(layers=6, hidden=384, heads=12, intermediate=1536),
}


def config_from_file(path: str) -> BertConfig:
    """BertConfig from an HF config.json (or a directory holding one)."""
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.exists(path):
        raise ValueError(f"no BERT config.json at {path}")
    with open(path) as f:
        try:
            return BertConfig.from_hf(json.load(f))
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{path} is not an HF BERT config ({type(e).__name__}: {e})") from None


class SelfAttention(nn.Module):
    cfg: BertConfig
    heads: int          # heads of this layer (fewer than cfg.heads in a shrunk model; 0: output bias only)

    @nn.compact
    def __call__(self, h, keep, gate, train):
        c = self.cfg
        b, t, _ = h.shape
        d = c.head_dim
        dense = lambda n, name: nn.Dense(n, kernel_init=nn.initializers.normal(c.init_range), name=name)  # noqa: E731
        q, k, v = (dense(self.heads * d, n)(h).reshape(b, t, self.heads, d) for n in ("query", "key", "value"))
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        s = jnp.where(keep[:, None, None, :], s, jnp.finfo(s.dtype).min)
        p = nn.Dropout(c.attention_dropout)(jax.nn.softmax(s, axis=-1), deterministic=not train)
        p = p * gate[:, :self.heads, None, None].astype(p.dtype)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", p, v).reshape(b, t, self.heads * d)
        return dense(c.hidden, "output")(ctx), s


class Layer(nn.Module):
    cfg: BertConfig
    index: int = 0      # which layer (its head count and MLP width in a shrunk model)

    @nn.compact
    def __call__(self, h, keep, head_gate, mlp_gate, train):
        c = self.cfg
        init = nn.initializers.normal(c.init_range)
        drop = lambda x: nn.Dropout(c.dropout)(x, deterministic=not train)  # noqa: E731
        a, scores = SelfAttention(c, c.heads_of(self.index), name="attention")(h, keep, head_gate, train)
        h = nn.LayerNorm(c.ln_eps, name="attention_ln")(h + drop(a))
        m = nn.gelu(nn.Dense(c.intermediate_of(self.index), kernel_init=init, name="intermediate")(h),
                    approximate=False)
        m = drop(nn.Dense(c.hidden, kernel_init=init, name="output")(m)) * mlp_gate[:, None, None].astype(h.dtype)
        return nn.LayerNorm(c.ln_eps, name="output_ln")(h + m), scores


def token_types(ids, sep_id):
    """0 up to and including the first [SEP], 1 after it (BERT sentence pairs; padding is masked)."""
    is_sep = (ids == sep_id).astype(jnp.int32)
    return jnp.minimum(jnp.cumsum(is_sep, axis=-1) - is_sep, 1)


class Bert(nn.Module):
    SHRINK = "bert"    # lth.compression.shrink's rule: off heads / MLPs and dead MLP neurons removed

    cfg: BertConfig
    num_classes: int
    head: str = "classifier"   # classifier (logits [B, classes]) | mlm (BertForMaskedLM's head: logits [B, T, vocab])
    mlm_predictions: int = 0   # mlm: K > 0 = the input's last K entries are the positions predicted (logits [B, K, V])

    @nn.compact
    def __call__(self, x, train=False, head_mask=None, mlp_mask=None, features=False):
        """Logits [B, classes]; with features=True, (hidden states [B, T, H], pooled [B, H]); with
        features="all", {logits, hidden: the embeddings' output and every layer's [B, T, H], scores:
        every layer's attention scores [B, A, T, T] before the softmax (padding at the dtype's minimum),
        fit: the hidden states through `fit_dense` or None}."""
        c = self.cfg
        ids = jnp.asarray(x).astype(jnp.int32)
        positions = None
        if self.head == "mlm" and self.mlm_predictions:   # [ids | K positions] (lth/training/objective.py MaskedLM)
            ids, positions = ids[:, :-self.mlm_predictions], ids[:, -self.mlm_predictions:]
        t = ids.shape[-1]
        if t > c.max_positions:
            raise ValueError(f"sequence length {t} is over the {c.max_positions} position embeddings")
        b = ids.shape[0]
        head_mask = jnp.broadcast_to(1.0 if head_mask is None else head_mask, (b, c.layers, c.heads))
        mlp_mask = jnp.broadcast_to(1.0 if mlp_mask is None else mlp_mask, (b, c.layers))
        keep = ids != c.pad_id
        init = nn.initializers.normal(c.init_range)
        drop = lambda x: nn.Dropout(c.dropout)(x, deterministic=not train)  # noqa: E731
        emb = lambda n, name: nn.Embed(n, c.hidden, embedding_init=init, name=name)  # noqa: E731
        h = (emb(c.vocab_size, "word")(ids) + emb(c.max_positions, "position")(jnp.arange(t))[None]
             + emb(c.type_vocab_size, "token_type")(token_types(ids, c.sep_id) * keep))
        h = drop(nn.LayerNorm(c.ln_eps, name="embeddings_ln")(h))
        blocks = [Layer(c, i, name=f"layer_{i}") for i in range(c.block_of(c.layers - 1) + 1)]
        run = None
        if train and c.layerdrop > 0:   # fairseq's LayerDrop: a layer runs when its coin is above the rate
            run = jax.random.uniform(self.make_rng("dropout"), (c.layers,)) >= c.layerdrop
            self.sow("intermediates", "layerdrop_run", run)
        hidden, scores = [h], []
        for i in range(c.layers):
            out, s = blocks[c.block_of(i)](h, keep, head_mask[:, i], mlp_mask[:, i], train)
            h = out if run is None else jnp.where(run[i], out, h)
            hidden.append(h)
            scores.append(s)
        pooled = jnp.tanh(nn.Dense(c.hidden, kernel_init=init, name="pooler")(h[:, 0]))
        fit = None
        if c.fit_size:   # TinyBERT's fit_dense (built at init, used by intermediate-layer distillation)
            fit_dense = nn.Dense(c.fit_size, kernel_init=init, name="fit_dense")
            fit = [fit_dense(x) for x in hidden] if features == "all" else fit_dense(h[:, :1])
        if features is True:
            return h, pooled
        if self.head == "mlm":   # HF BertLMPredictionHead: dense, GELU, LayerNorm, the word embeddings' transpose
            #                      + a bias; with positions, at those only (Google BERT's gather_indexes)
            m = h if positions is None else jnp.take_along_axis(h, positions[..., None], axis=1)
            m = nn.gelu(nn.Dense(c.hidden, kernel_init=init, name="mlm_transform")(m), approximate=False)
            m = nn.LayerNorm(c.ln_eps, name="mlm_ln")(m)
            word = self.variables["params"]["word"]["embedding"]
            logits = m @ word.T.astype(m.dtype) + self.param("mlm_bias", nn.initializers.zeros, (c.vocab_size,))
        else:
            logits = nn.Dense(self.num_classes, kernel_init=init, name="classifier")(drop(pooled))
        if features == "all":   # intermediate-layer distillation (lth/training/distill.py)
            return {"logits": logits, "hidden": tuple(hidden), "scores": tuple(scores),
                    "fit": tuple(fit) if fit is not None else None}
        return logits


def drop_layers(model, params, kept):
    """(model, params) with only the layers `kept` (indices, in order), renumbered layer_0…: Fan et
    al.'s pruning of whole layers at inference, physically (fewer layers in the arrays and in an
    exported checkpoint). A shrunk model keeps its kept layers' head counts and MLP widths."""
    c = model.cfg
    kept = list(kept)
    if not kept or len(set(kept)) != len(kept) or not all(0 <= i < c.layers for i in kept):
        raise UserError(f"layers to keep {kept}: allowed: distinct indices in 0..{c.layers - 1}, at least one")
    if c.share_groups:
        raise UserError(f"a model sharing its layers in {c.share_groups} groups cannot drop layers; allowed: "
                        f"model.share_layers=0")
    cfg = dataclasses.replace(c, layers=len(kept), layerdrop=0.0,
                              layer_heads=tuple(c.layer_heads[i] for i in kept) if c.layer_heads else (),
                              layer_intermediate=(tuple(c.layer_intermediate[i] for i in kept)
                                                  if c.layer_intermediate else ()))
    out = {k: v for k, v in params.items() if not k.startswith("layer_")}
    out.update({f"layer_{j}": params[f"layer_{i}"] for j, i in enumerate(kept)})
    return model.clone(cfg=cfg), out


def with_head(model, head: str, predictions: int = 0):
    """`model` with the output head a dataset's objective needs: `mlm` is BERT's masked-LM head
    (`predictions` K > 0: at the K positions the input carries after its ids)."""
    if head == "classifier":
        return model
    if not isinstance(model, Bert):
        raise UserError(f"a masked-language-model dataset needs a BERT model (see `lth models`), "
                        f"not {type(model).__name__}")
    return model.clone(head=head, mlm_predictions=int(predictions))


def check_tokens(model, dataset: str, meta: dict) -> None:
    """Token ids from a dataset's tokenizer (its `meta`) must mean the same to `model`."""

    cfg = getattr(model, "cfg", None)
    if not isinstance(cfg, BertConfig):
        raise UserError(f"dataset {dataset!r} holds token ids; allowed models: BERT (see `lth models`)")
    if meta["vocab_size"] > cfg.vocab_size or meta["pad_id"] != cfg.pad_id or meta["sep_id"] != cfg.sep_id:
        raise UserError(f"tokenizer (vocab {meta['vocab_size']}, [PAD] {meta['pad_id']}, [SEP] {meta['sep_id']}) "
                        f"does not match the model (vocab {cfg.vocab_size}, pad {cfg.pad_id}, sep {cfg.sep_id}); "
                        f"allowed: the model's own vocabulary")


def _build(m, num_classes, init, input_shape, width):
    if (init.bias, init.bn) != ("zeros", "ones") or init.out:
        raise ValueError("draws its weights as HF BERT does (N(0, 0.02), zero biases, LayerNorm 1/0); allowed: "
                         "model.bias_init=zeros, model.bn_init=ones, model.out_init='' (model.init is not used)")
    if width != 1.0:
        raise ValueError(f"model.width {width} is not supported for BERT; allowed: 1.0 (pick a named size)")
    cfg = NAMED[m.group(0)] if m.group(0) in NAMED else config_from_file(m.group(1))
    if len(input_shape) != 1:
        raise ValueError(f"BERT takes token ids of shape (length,), got inputs of shape {tuple(input_shape)}")
    if input_shape[0] > cfg.max_positions:
        raise ValueError(f"sequence length {input_shape[0]} is over the {cfg.max_positions} position embeddings; "
                         f"allowed: data.max_length <= {cfg.max_positions}")
    return Bert(cfg, num_classes)


PATTERNS = {
    "|".join(NAMED): (_build, "BERT encoders: bert_tiny 2/128/2, bert_mini 4/256/4, bert_small 4/512/8, "
                              "bert_medium 8/512/8, minilm_l6 6/384/12 (layers/hidden/heads); init N(0, 0.02)"),
    r"bert:(.+)": (_build, "BERT from an HF config.json (path to the file or its directory)"),
}
