"""Physically smaller models: the units a mask or a gate has switched off are removed from the arrays,
so the model computes less instead of multiplying zeros. The shrunk model's outputs equal the
masked (gated) model's to float rounding.

- MLPs (lenet_N…) and LeNet-5, after IMP or structured pruning: a hidden unit (neuron, or conv
  filter) is *dead* when all its outgoing weights are pruned (it feeds nothing: removed) or all its
  incoming weights are (its output is the constant relu(bias): removed, and the constant's
  contribution folded into the next layer's bias; exact for a next layer without padding, as
  LeNet-5's conv_1 and every dense layer). The next layer loses the matching input rows.
- BERT, after `lth heads` (gates) and / or IMP (masks): a head is removed when its gate is 0, when
  all its output-projection rows are pruned, or when all its value columns are (then its context is
  the constant value bias, folded into the output bias); an MLP is removed when its gate is 0, and an
  MLP neuron when its intermediate column (→ constant gelu(bias), folded) or its output row is pruned.
  Gates other than 0 and 1 are folded into the output projections. The result is a `Bert` whose
  config carries per-layer head counts and MLP widths (`BertConfig.layer_heads`, `layer_intermediate`).

`shrink(model, params, masks, head_gates=None, mlp_gates=None) -> Shrunk` for one replicate.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lth.errors import UserError


@dataclasses.dataclass
class Shrunk:
    model: nn.Module
    params: dict
    units: dict        # layer → (units before, units after)


def _np(tree):
    return jax.tree.map(lambda a: np.array(a, np.float64), tree)


def shrink(model, params, masks=None, head_gates=None, mlp_gates=None) -> Shrunk:
    """The physically smaller model of one replicate's masked params (see the module docstring)."""
    masks = jax.tree.map(lambda p: np.ones(np.shape(p), bool), params) if masks is None else masks
    params = jax.tree.map(lambda a, m: np.asarray(a) * np.asarray(m), params, masks)
    rule = getattr(model, "SHRINK", "")   # the model's declared shrink rule (lth/models)
    if rule == "bert":
        return _bert(model, params, masks, head_gates, mlp_gates)
    if head_gates is not None or mlp_gates is not None:
        raise UserError(f"head / MLP gates given for a {type(model).__name__}; allowed: BERT models")
    if rule == "units":
        return _chain(model, params, masks)
    raise UserError(f"shrinking a {type(model).__name__} is not supported; "
                    f"allowed: MLPs (lenet_N...), lenet5, BERT models")


# ----- MLPs and LeNet-5 ---------------------------------------------------------------------------
def _chain(model, params, masks) -> Shrunk:
    names = (sorted(n for n in params if n.startswith("conv_")) + sorted(n for n in params if n.startswith("fc_"))
             + ["out"])
    p = _np(params)
    m = {n: np.asarray(masks[n]["kernel"], bool) for n in names}
    w = {n: p[n]["kernel"] for n in names}
    b = {n: p[n]["bias"] for n in names}
    units = {}
    for n, nxt in zip(names[:-1], names[1:]):
        c = w[n].shape[-1]
        # the next layer's kernel as [..., c, out]: conv [kh, kw, c, F]; dense after a flatten [S, c, out]
        view = w[nxt].reshape(-1, c, w[nxt].shape[-1]) if w[nxt].ndim == 2 else w[nxt]
        mview = m[nxt].reshape(view.shape)
        axes = tuple(range(view.ndim - 2))
        in_dead = ~m[n].reshape(-1, c).any(0)
        out_dead = ~mview.any(axis=axes + (view.ndim - 1,))
        const = np.maximum(b[n], 0.0) * (in_dead & ~out_dead)      # relu(bias) of the constant units
        b[nxt] = b[nxt] + np.tensordot(view, const, axes=([view.ndim - 2], [0])).reshape(-1, view.shape[-1]).sum(0)
        keep = ~(in_dead | out_dead)
        if not keep.any():
            raise UserError(f"shrinking would leave layer {n} with no units (every one of its {c} units is dead); "
                            f"allowed: masks that keep at least one live unit per hidden layer")
        units[n] = (c, int(keep.sum()))
        w[n], b[n], m[n] = w[n][..., keep], b[n][keep], m[n][..., keep]
        shape = w[nxt].shape[:-2] + (-1, w[nxt].shape[-1]) if w[nxt].ndim == 4 else (-1, w[nxt].shape[-1])
        w[nxt] = view[..., keep, :].reshape(shape)
        m[nxt] = mview[..., keep, :].reshape(shape)
    out = {n: {"kernel": jnp.asarray(w[n], jnp.float32), "bias": jnp.asarray(b[n], jnp.float32)} for n in names}
    widths = tuple(units[n][1] for n in names[:-1])
    new = model.clone(hidden=widths) if hasattr(model, "hidden") else model.clone(widths=widths)
    return Shrunk(new, out, units)


# ----- BERT ---------------------------------------------------------------------------------------
def _bert(model, params, masks, head_gates, mlp_gates) -> Shrunk:
    c = model.cfg
    if c.share_groups or c.layer_heads or c.layer_intermediate:
        raise UserError("shrinking a BERT that shares layers or is already shrunk is not supported; "
                        "allowed: a plain BERT")
    p = _np(params)
    hg = np.ones((c.layers, c.heads)) if head_gates is None else np.asarray(head_gates, np.float64)
    mg = np.ones(c.layers) if mlp_gates is None else np.asarray(mlp_gates, np.float64)
    if hg.shape != (c.layers, c.heads) or mg.shape != (c.layers,):
        raise UserError(f"gates of shapes {hg.shape} and {mg.shape}; "
                        f"allowed: ({c.layers}, {c.heads}) and ({c.layers},)")
    d, heads, widths, units = c.head_dim, [], [], {}
    for i in range(c.layers):
        lp, lm = p[f"layer_{i}"], masks[f"layer_{i}"]
        att, am = lp["attention"], lm["attention"]
        keep = []
        for a in range(c.heads):
            cols = slice(a * d, (a + 1) * d)
            g = hg[i, a]
            wo = att["output"]["kernel"][cols]
            if g == 0 or not np.asarray(am["output"]["kernel"], bool)[cols].any():
                continue
            if not np.asarray(am["value"]["kernel"], bool)[:, cols].any():   # context = g · value bias, constant
                att["output"]["bias"] = att["output"]["bias"] + g * att["value"]["bias"][cols] @ wo
                continue
            att["output"]["kernel"][cols] = g * wo
            keep.append(a)
        idx = np.concatenate([np.arange(a * d, (a + 1) * d) for a in keep]) if keep else np.zeros(0, int)
        for k in ("query", "key", "value"):
            att[k]["kernel"], att[k]["bias"] = att[k]["kernel"][:, idx], att[k]["bias"][idx]
        att["output"]["kernel"] = att["output"]["kernel"][idx]
        heads.append(len(keep))
        # the MLP: output = g · (gelu(h W_i + b_i) W_o + b_o)
        wi, wo = lp["intermediate"]["kernel"], lp["output"]["kernel"] * mg[i]
        bi, bo = lp["intermediate"]["bias"], lp["output"]["bias"] * mg[i]
        in_dead = ~np.asarray(lm["intermediate"]["kernel"], bool).any(0)
        out_dead = ~np.asarray(lm["output"]["kernel"], bool).any(1) | (mg[i] == 0)
        bo = bo + (np.asarray(jax.nn.gelu(bi, approximate=False)) * (in_dead & ~out_dead)) @ wo
        keep_n = ~(in_dead | out_dead)
        lp["intermediate"]["kernel"], lp["intermediate"]["bias"] = wi[:, keep_n], bi[keep_n]
        lp["output"]["kernel"], lp["output"]["bias"] = wo[keep_n], bo
        widths.append(int(keep_n.sum()))
        units[f"layer_{i}/attention"] = (c.heads, len(keep))
        units[f"layer_{i}/intermediate"] = (c.intermediate, widths[-1])
    out = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)
    cfg = dataclasses.replace(c, layer_heads=tuple(heads), layer_intermediate=tuple(widths))
    return Shrunk(model.clone(cfg=cfg), out, units)
