"""int8 quantization of a ticket with qwix (google/qwix), and the sizes of a sparse model in bytes.

qwix's providers intercept the dot_generals, einsums and convolutions of a Flax Linen model, so lth's
models are quantized unchanged. Weights: int8, symmetric (absmax; step = absmax / 127.5), one scale
per output channel; a pruned weight is 0 and 0 / scale rounds to 0. Activations
(`compress.activations`): none, dynamic (per batch at run time) or static (calibrated beforehand).

Sizes: dense float32 = 4 bytes per parameter and per BatchNorm statistic. Each prunable leaf is
stored in whichever format takes fewest bytes: dense (every entry), a bitmask (the non-zero values
plus ceil(n/8) bytes), indices (the non-zero values plus 2 bytes each when the layer has at most
65,536 entries, else 4) or, for a leaf whose non-zeros are N:M along axis -2 (lth.compression.nm),
N:M (n·N/M values plus ceil(log2 M) bits each) — a dense or nearly dense layer is never charged more
than its dense size. int8 values take 1 byte plus one float32 scale per output channel; int4 / int2
values (lth/compression/lowbit.py) half / a quarter of a byte plus one scale per output channel and
group of inputs, each leaf rounded up to whole bytes; leaves qwix does not quantize (embeddings,
biases, norms) and BatchNorm statistics stay float32 and dense.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from lth.compression import lowbit as LB
from lth.compression import nm as NM
from lth.errors import UserError
from lth.models.layers import input_shape as model_input_shape
from lth.pruning import masks as M


def rules(cfg, for_qat: bool = False, bits: int = 8, group: int = 0, per_layer: dict | None = None):
    """qwix rules for every module: int8 weights (or `bits`: 4, 2; `group` > 0: one scale per group
    of that many inputs, qwix's tile_size); `per_layer` {kernel path: bits} first, one rule each
    (Q-BERT's mixed precision); int8 activations unless 'none'. QAT fine-tunes with dynamic
    activation scales (static ones are calibrated afterwards, as for the ticket)."""
    import qwix

    act = cfg.compress.activations
    kw = {}
    if act != "none":
        kw = dict(act_qtype=jnp.int8, act_calibration_method=cfg.compress.act_calibration,
                  act_static_scale=act == "static" and not for_qat)
    tile = group or None
    out = [qwix.QtRule(module_path=LB.module_rule_path(p), weight_qtype=LB.qtype(b), tile_size=tile, **kw)
           for p, b in (per_layer or {}).items()]
    return out + [qwix.QtRule(module_path=".*", weight_qtype=LB.qtype(bits),
                              tile_size=tile if bits != 8 or per_layer else None, **kw)]


def check_supported(model, cfg, input_shape, dtype):
    """UserError for a combination qwix does not quantize: convolutions need int8 activations too."""
    x = jnp.zeros((1, *model_input_shape(model, input_shape)), dtype)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    if cfg.compress.activations == "none" and any(np.ndim(x) == 4 for x in jax.tree.leaves(shapes["params"])):
        raise UserError(f"compress.activations 'none' (weight-only) with model {cfg.model.name!r}: qwix quantizes "
                        f"convolutions only with int8 activations; allowed: dynamic, static")


def _is_q(a):
    return hasattr(a, "qvalue") and hasattr(a, "scale")


class Quantizer:
    """qwix's PTQ model of `model` under `cfg`'s rules, built once (with its abstract parameters and,
    for static activations, the calibrating QAT model); `predict` is compiled once for all replicates."""

    def __init__(self, model, cfg, x0, bits: int = 8, group: int = 0, per_layer: dict | None = None):
        import qwix

        self.static = cfg.compress.activations == "static"
        self.ptq = qwix.quantize_model(model, qwix.PtqProvider(rules(cfg, False, bits, group, per_layer)))
        self.abstract = jax.eval_shape(lambda: self.ptq.init(jax.random.PRNGKey(0), x0))["params"]
        if self.static:
            self.qt = qwix.quantize_model(model, qwix.QtProvider(rules(cfg, False, bits, group, per_layer)))
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


def _unwrap(a):
    """The QArray of a leaf, also when qwix wraps it (a subchannel kernel's WithAux)."""
    return a if _is_q(a) else getattr(a, "array", a)


def quantized_leaves(qparams) -> dict:
    """{path: QArray} of the quantized kernels."""
    flat = jax.tree_util.tree_flatten_with_path(qparams, is_leaf=lambda a: _is_q(_unwrap(a)))[0]
    return {"/".join(str(k.key) for k in path if hasattr(k, "key")): _unwrap(leaf) for path, leaf in flat
            if _is_q(_unwrap(leaf))}


def dequantize(q):
    """float32 weights of a QArray (per-channel scale broadcast over the kernel)."""
    return np.asarray(q.qvalue, np.float32) * np.asarray(q.scale, np.float32)


# ----- sizes ---------------------------------------------------------------------------------------
def storage(n: int, nnz: int, value_bytes: float, nm: tuple[int, int] | None = None) -> dict:
    """Bytes of a leaf of n entries with nnz non-zeros in the cheapest format: dense (n values), a
    bitmask (nnz values + ceil(n/8)), indices (nnz values + 2 bytes each up to 65,536 entries, else 4)
    or, when `nm` = (N, M) gives the leaf's N:M pattern (lth.compression.nm.nm_pattern_of), N:M
    (n·N/M values + ceil(log2 M) bits each, lth.compression.nm.nm_bytes). Ties go to dense, then to
    N:M (the format sparse hardware executes; 2:4 at exactly half density ties with the bitmask),
    then to the bitmask. {"bytes", "how"} with how one of dense, n:m, bitmask, indices; "pattern"
    ("2:4") when how is n:m."""
    options = {"dense": math.ceil(n * value_bytes)}
    if nm is not None:
        options["n:m"] = NM.nm_bytes(n, nm[0], nm[1], value_bytes)
    options.update({"bitmask": math.ceil(nnz * value_bytes) + math.ceil(n / 8),
                    "indices": math.ceil(nnz * (value_bytes + (2 if n <= 65536 else 4)))})
    how = min(options, key=options.get)
    out = {"bytes": options[how], "how": how}
    if how == "n:m":
        out["pattern"] = f"{nm[0]}:{nm[1]}"
    return out


def _pattern(mask, nm):
    """The N:M pattern `storage` may use for a prunable leaf: detected ("auto"), checked (a given
    (N, M): the leaf's when it satisfies it) or none (None)."""
    if nm is None:
        return None
    if nm == "auto":
        return NM.nm_pattern_of(mask)
    n, m = nm
    return (int(n), int(m)) if NM.is_nm(mask, n, m) else None


def _sizes(params, masks, prunable, scales: dict, model_state=None, nm="auto", bits: dict | None = None) -> dict:
    """sizes() with the quantized leaves given as {path: number of float32 scales} and their value
    bits {path: bits} (8 where not given)."""
    dense = sparse32 = sparse8 = 0
    leaves = []
    for path, p, m, pr in zip(M.leaf_paths(params), jax.tree.leaves(params), jax.tree.leaves(masks),
                              jax.tree.leaves(prunable)):
        n = int(np.size(p))
        mk = np.asarray(m)
        nnz = int(np.count_nonzero(mk)) if pr else n
        pattern = _pattern(np.broadcast_to(mk, np.shape(p)), nm) if pr else None
        q = scales.get(path)
        f32 = storage(n, nnz, 4, pattern)
        i8 = storage(n, nnz, (bits or {}).get(path, 8) / 8, pattern) if q is not None else f32
        b8 = i8["bytes"] + (4 * q if q is not None else 0)
        dense, sparse32, sparse8 = dense + 4 * n, sparse32 + f32["bytes"], sparse8 + b8
        leaves.append({"path": path, "size": n, "nonzero": nnz, "f32_bytes": f32["bytes"], "int8_bytes": b8,
                       "locate": f32["how"], "int8_locate": i8["how"], "int8": q is not None,
                       "nm": None if pattern is None else f"{pattern[0]}:{pattern[1]}"})
    for path, v in zip(M.leaf_paths(model_state or {}), jax.tree.leaves(model_state or {})):
        n = int(np.size(v))
        dense, sparse32, sparse8 = dense + 4 * n, sparse32 + 4 * n, sparse8 + 4 * n
        leaves.append({"path": path, "size": n, "nonzero": n, "f32_bytes": 4 * n, "int8_bytes": 4 * n,
                       "locate": "dense", "int8_locate": "dense", "int8": False, "statistic": True, "nm": None})
    return {"dense_f32": dense, "sparse_f32": sparse32, "sparse_int8": sparse8, "leaves": leaves}


def sizes(params, masks, prunable, quantized: dict, model_state=None, nm="auto") -> dict:
    """Bytes of one replicate: dense f32, sparse f32, sparse int8 (quantized kernels), with per-leaf
    detail. `quantized`: {path: QArray} (their scales are counted); `model_state` (BatchNorm
    statistics) is counted at 4 bytes an entry in every column. `nm`: "auto" (a prunable leaf whose
    mask is N:M along axis -2 for one of lth.compression.nm.PATTERNS may be stored N:M), a pattern
    (N, M) (only that one) or None (no N:M format). Each leaf's row names its pattern ("nm": "2:4")
    whether or not N:M was its cheapest format."""
    scales = {path: int(np.size(q.scale)) for path, q in quantized.items()}
    return _sizes(params, masks, prunable, scales, model_state, nm,
                  {path: LB.bits_of(q.qvalue.dtype) for path, q in quantized.items()})


def model_bytes(params, masks=None, prunable=r".*kernel", model_state=None, quantized=None, nm="auto") -> dict:
    """{dense_f32, sparse_f32, sparse_int8, leaves} of a pruned network, as `sizes` counts them.
    `masks`: None → each prunable leaf's non-zeros (physically pruned params). `prunable`: a regex of
    param paths (re.fullmatch) or a pytree of bools. `quantized`: {path: QArray} from qwix
    (quantized_leaves) for exact int8 scales; None → every prunable leaf of 2 or more axes counted as
    qwix quantizes lth's Dense and Conv kernels: int8 values plus one float32 scale per output channel
    (its last axis). `nm` as in `sizes`."""
    pr = M.prunable_tree(params, prunable) if isinstance(prunable, str) else prunable
    if masks is None:
        masks = jax.tree.map(lambda x, p: np.asarray(x) != 0 if p else np.ones(np.shape(x), bool), params, pr)
    if quantized is not None:
        scales = {path: int(np.size(q.scale)) for path, q in quantized.items()}
    else:
        scales = {path: int(np.shape(x)[-1]) for path, x, p in
                  zip(M.leaf_paths(params), jax.tree.leaves(params), jax.tree.leaves(pr)) if p and np.ndim(x) >= 2}
    return _sizes(params, masks, pr, scales, model_state, nm)
