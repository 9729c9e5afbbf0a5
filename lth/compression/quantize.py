"""int8 quantization of a ticket with qwix (google/qwix), and the sizes of a sparse model in bytes.

qwix's providers intercept the dot_generals, einsums and convolutions of a Flax Linen model, so lth's
models are quantized unchanged. Weights: int8, symmetric (absmax; step = absmax / 127.5), one scale
per output channel; a pruned weight is 0 and 0 / scale rounds to 0. Activations
(`compress.activations`): none, dynamic (per batch at run time) or static (calibrated beforehand).

Sizes: dense float32 = 4 bytes per parameter and per BatchNorm statistic. Each prunable leaf is
stored in whichever of three formats takes fewest bytes: dense (every entry), a bitmask (the non-zero
values plus ceil(n/8) bytes) or indices (the non-zero values plus 2 bytes each when the layer has at
most 65,536 entries, else 4) — a dense or nearly dense layer is never charged more than its dense
size. int8 values take 1 byte plus one float32 scale per output channel; leaves qwix does not
quantize (embeddings, biases, norms) and BatchNorm statistics stay float32 and dense.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from lth.errors import UserError
from lth.pruning import masks as M


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
def storage(n: int, nnz: int, value_bytes: int) -> dict:
    """Bytes of a leaf of n entries with nnz non-zeros in the cheapest format: dense (n values), a
    bitmask (nnz values + ceil(n/8)) or indices (nnz values + 2 bytes each up to 65,536 entries,
    else 4). Ties go to dense, then to the bitmask."""
    options = {"dense": n * value_bytes, "bitmask": nnz * value_bytes + math.ceil(n / 8),
               "indices": nnz * (value_bytes + (2 if n <= 65536 else 4))}
    how = min(options, key=options.get)
    return {"bytes": options[how], "how": how}


def sizes(params, masks, prunable, quantized: dict, model_state=None) -> dict:
    """Bytes of one replicate: dense f32, sparse f32, sparse int8 (quantized kernels), with per-leaf
    detail. `quantized`: {path: QArray} (their scales are counted); `model_state` (BatchNorm
    statistics) is counted at 4 bytes an entry in every column."""
    dense = sparse32 = sparse8 = 0
    leaves = []
    for path, p, m, pr in zip(M.leaf_paths(params), jax.tree.leaves(params), jax.tree.leaves(masks),
                              jax.tree.leaves(prunable)):
        n = int(np.size(p))
        nnz = int(np.count_nonzero(np.asarray(m))) if pr else n
        q = quantized.get(path)
        f32 = storage(n, nnz, 4)
        i8 = storage(n, nnz, 1) if q is not None else f32
        b8 = i8["bytes"] + (4 * int(np.size(q.scale)) if q is not None else 0)
        dense, sparse32, sparse8 = dense + 4 * n, sparse32 + f32["bytes"], sparse8 + b8
        leaves.append({"path": path, "size": n, "nonzero": nnz, "f32_bytes": f32["bytes"], "int8_bytes": b8,
                       "locate": f32["how"], "int8_locate": i8["how"], "int8": q is not None})
    for path, v in zip(M.leaf_paths(model_state or {}), jax.tree.leaves(model_state or {})):
        n = int(np.size(v))
        dense, sparse32, sparse8 = dense + 4 * n, sparse32 + 4 * n, sparse8 + 4 * n
        leaves.append({"path": path, "size": n, "nonzero": n, "f32_bytes": 4 * n, "int8_bytes": 4 * n,
                       "locate": "dense", "int8_locate": "dense", "int8": False, "statistic": True})
    return {"dense_f32": dense, "sparse_f32": sparse32, "sparse_int8": sparse8, "leaves": leaves}
