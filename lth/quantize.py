"""int8 quantization of a ticket with qwix (google/qwix), and the sizes of a sparse model in bytes.

qwix's providers intercept the dot_generals, einsums and convolutions of a Flax Linen model, so lth's
models are quantized unchanged. Weights: int8, symmetric (absmax; step = absmax / 127.5), one scale
per output channel; a pruned weight is 0 and 0 / scale rounds to 0. Activations
(`compress.activations`): none, dynamic (per batch at run time) or static (calibrated beforehand).

Sizes: dense float32 = 4 bytes per parameter. A sparse leaf stores its non-zero values plus, per
layer, whichever locates them in fewer bytes: a bitmask (ceil(n/8)) or indices (2 bytes each when the
layer has at most 65,536 entries, else 4). int8 values take 1 byte plus one float32 scale per output
channel; leaves qwix does not quantize (embeddings, biases, norms) stay float32.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from lth import masks as M
from lth.errors import UserError


def rules(cfg, for_qat: bool = False):
    """qwix rules for every module: int8 weights; int8 activations unless 'none'. QAT fine-tunes
    with dynamic activation scales (static ones are calibrated afterwards, as for the ticket)."""
    import qwix

    act = cfg.compress.activations
    kw = {}
    if act != "none":
        kw = dict(act_qtype=jnp.int8, act_calibration_method=cfg.compress.act_calibration,
                  act_static_scale=act == "static" and not for_qat)
    return [qwix.QtRule(module_path=".*", weight_qtype=jnp.int8, **kw)]


def check_supported(model, cfg, input_shape, dtype):
    """UserError for a combination qwix does not quantize: convolutions need int8 activations too."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *input_shape), dtype)))
    if cfg.compress.activations == "none" and any(np.ndim(x) == 4 for x in jax.tree.leaves(shapes["params"])):
        raise UserError(f"compress.activations 'none' (weight-only) with model {cfg.model.name!r}: qwix quantizes "
                        f"convolutions only with int8 activations; allowed: dynamic, static")


def _is_q(a):
    return hasattr(a, "qvalue") and hasattr(a, "scale")


class Quantizer:
    """qwix's PTQ model of `model` under `cfg`'s rules, built once (with its abstract parameters and,
    for static activations, the calibrating QAT model); `predict` is compiled once for all replicates."""

    def __init__(self, model, cfg, x0):
        import qwix

        self.static = cfg.compress.activations == "static"
        self.ptq = qwix.quantize_model(model, qwix.PtqProvider(rules(cfg)))
        self.abstract = jax.eval_shape(lambda: self.ptq.init(jax.random.PRNGKey(0), x0))["params"]
        if self.static:
            self.qt = qwix.quantize_model(model, qwix.QtProvider(rules(cfg)))
            init = jax.eval_shape(lambda: self.qt.init(jax.random.PRNGKey(0), x0))
            self.stats0 = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), init.get("quant_stats", {}))
        self.predict = jax.jit(lambda v, xb: jnp.argmax(self.ptq.apply(v, xb, train=False), -1))

    def __call__(self, params, model_state, calib):
        """Quantized params of one replicate; `calib` [n, B, ...] calibrates static activation scales."""
        import qwix

        stats = {}
        if self.static:
            stats = self.stats0
            # not under jax.jit: qwix's conv statistics leak tracers there; a few eager batches cost little
            for xb in calib:
                stats = self.qt.apply({"params": params, **model_state, "quant_stats": stats}, xb, train=False,
                                      mutable=["quant_stats"])[1]["quant_stats"]
        return qwix.quantize_params(params, self.abstract, stats, allow_extra_params=True)

    def accuracy(self, qparams, model_state, split) -> float:
        """Test accuracy of one replicate's quantized params over a chunked split (trainer.chunked)."""
        xs, ys, ws = split
        v = {"params": qparams, **model_state}
        correct = sum(float(jnp.sum((self.predict(v, xs[i]) == ys[i]) * ws[i])) for i in range(xs.shape[0]))
        return correct / float(jnp.sum(ws))


def quantize(model, cfg, params, model_state, calib):
    """(PTQ model, quantized params of one replicate): a Quantizer used once."""
    q = Quantizer(model, cfg, calib[0])
    return q.ptq, q(params, model_state, calib)


def quantized_leaves(qparams) -> dict:
    """{path: QArray} of the quantized kernels."""
    flat = jax.tree_util.tree_flatten_with_path(qparams, is_leaf=_is_q)[0]
    return {"/".join(str(k.key) for k in path if hasattr(k, "key")): leaf for path, leaf in flat if _is_q(leaf)}


def dequantize(q):
    """float32 weights of a QArray (per-channel scale broadcast over the kernel)."""
    return np.asarray(q.qvalue, np.float32) * np.asarray(q.scale, np.float32)


# ----- sizes ---------------------------------------------------------------------------------------
def sparse_bytes(n: int, nnz: int, value_bytes: int) -> dict:
    """Bytes of a sparse leaf of n entries with nnz non-zeros: values + the cheaper of a bitmask
    (ceil(n/8)) and indices (2 bytes each up to 65,536 entries, else 4)."""
    bitmask = math.ceil(n / 8)
    indices = nnz * (2 if n <= 65536 else 4)
    return {"values": nnz * value_bytes, "locate": min(bitmask, indices),
            "how": "bitmask" if bitmask <= indices else "indices"}


def sizes(params, masks, prunable, quantized: dict) -> dict:
    """Bytes of one replicate: dense f32, sparse f32, sparse int8 (quantized kernels), with per-leaf
    detail. `quantized`: {path: QArray} (their scales are counted)."""
    paths = M.leaf_paths(params)
    dense = sparse32 = sparse8 = 0
    leaves = []
    for path, p, m, pr in zip(paths, jax.tree.leaves(params), jax.tree.leaves(masks), jax.tree.leaves(prunable)):
        n = int(np.size(p))
        dense += 4 * n
        q = quantized.get(path)
        if pr:
            nnz = int(np.count_nonzero(np.asarray(m)))
            s32 = sparse_bytes(n, nnz, 4)
            b32 = s32["values"] + s32["locate"]
        else:
            nnz, s32, b32 = n, None, 4 * n
        if q is not None:
            scales = 4 * int(np.size(q.scale))
            b8 = (sparse_bytes(n, nnz, 1)["values"] + s32["locate"] if pr else n) + scales
        else:
            b8 = b32
        sparse32 += b32
        sparse8 += b8
        leaves.append({"path": path, "size": n, "nonzero": nnz, "f32_bytes": b32, "int8_bytes": b8,
                       "locate": s32["how"] if s32 else "dense", "int8": q is not None})
    return {"dense_f32": dense, "sparse_f32": sparse32, "sparse_int8": sparse8, "leaves": leaves}
