"""Low-bit and mixed-precision weights: int4 / int2 kernels with per-group scales through qwix (its
subchannel `tile_size`: one float32 scale per output channel and group of `group` consecutive
inputs), and Q-BERT's Hessian-aware bit allocation (Shen et al. 2020, "Q-BERT: Hessian Based Ultra
Low Precision Quantization of BERT").

Q-BERT ranks layers by the top eigenvalue of their Hessian block: for each quantized kernel W_i,
λ_i is found by power iteration on the Hessian of the loss with respect to W_i alone (Hessian-vector
products by forward-over-reverse differentiation), as PyHessian's `hessian.eigenvalues`
(amirgholami/PyHessian, pyhessian/hessian.py: random normalized v, v ← Hv/‖Hv‖, λ = vᵀHv, stop when
the relative change is under `tol`); over several calibration batches the layer's sensitivity is
Ω_i = |mean λ_i| + std λ_i (Q-BERT §3.2). The kernels sorted by Ω (largest first) are split into as
many equal groups as bit widths are given (the first kernels one more when they do not divide),
and the group with the largest Ω gets the most bits.
"""
from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lth.errors import UserError

QTYPES = {8: jnp.int8, 4: jnp.int4, 2: jnp.int2}


def parse_bits(text: str, what: str) -> list[int]:
    """Comma list of weight bit widths, each one of QTYPES."""
    out = []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        try:
            b = int(item)
        except ValueError:
            b = -1
        if b not in QTYPES:
            raise UserError(f"{what} entry {item!r}: allowed: {', '.join(map(str, sorted(QTYPES, reverse=True)))} "
                            f"(bits of the weights)")
        out.append(b)
    return out


def qtype(bits: int):
    return QTYPES[bits]


def bits_of(dtype) -> int:
    """Bits of a quantized value type (int8 → 8, int4 → 4, int2 → 2)."""
    return int(jnp.iinfo(dtype).bits)


def top_eigenvalue(loss_fn, w, key, iters: int = 100, tol: float = 1e-3) -> float:
    """The top eigenvalue of the Hessian of `loss_fn` at `w` by power iteration (PyHessian's rule)."""
    grad = jax.grad(loss_fn)
    hvp = jax.jit(lambda v: jax.jvp(grad, (w,), (v,))[1])
    v = jax.random.normal(key, w.shape, w.dtype)
    v = v / jnp.linalg.norm(v)
    lam = None
    for _ in range(iters):
        hv = hvp(v)
        new = float(jnp.vdot(hv, v))
        v = hv / (jnp.linalg.norm(hv) + 1e-6)   # PyHessian's normalization adds 1e-6
        if lam is not None and abs(lam - new) / (abs(lam) + 1e-6) < tol:
            return new
        lam = new
    return lam


def sensitivities(apply_fn, params, paths: list[str], batches, loss, key, iters: int = 100,
                  tol: float = 1e-3) -> dict:
    """{path: {"eigenvalues": [λ per batch], "omega": |mean λ| + std λ}} of each kernel in `paths`
    (its Hessian block, the other params fixed), over `batches` [(x, y)]; `loss(logits, y)`."""
    flat = traverse_util.flatten_dict(params, sep="/")
    out = {}
    for i, path in enumerate(paths):
        lams = []
        for j, (x, y) in enumerate(batches):
            def f(w, x=x, y=y, path=path):
                return loss(apply_fn(traverse_util.unflatten_dict({**flat, path: w}, sep="/"), x), y)
            lams.append(top_eigenvalue(f, jnp.asarray(flat[path]), jax.random.fold_in(key, i * 1000 + j), iters, tol))
        out[path] = {"eigenvalues": lams, "omega": abs(float(np.mean(lams))) + float(np.std(lams))}
    return out


def allocate(omegas: dict, bits: list[int]) -> dict:
    """{path: bits}: the kernels by Ω, largest first, split into len(bits) equal groups (the first
    groups one larger when they do not divide); the group of the largest Ω gets the most bits."""
    order = sorted(omegas, key=lambda p: (-omegas[p], p))
    widths = sorted(bits, reverse=True)
    n, g = len(order), len(widths)
    out, start = {}, 0
    for k, b in enumerate(widths):
        size = n // g + (1 if k < n % g else 0)
        for p in order[start:start + size]:
            out[p] = b
        start += size
    return out


def module_rule_path(path: str) -> str:
    """qwix's module path (an exact regex) of a kernel's param path: 'layer_0/intermediate/kernel' →
    'layer_0/intermediate'."""
    return re.escape(path.rsplit("/", 1)[0])


def mean_bits(per_layer: dict, sizes: dict) -> float:
    """The weights' mean bits, each kernel weighed by its size."""
    total = sum(sizes[p] for p in per_layer)
    return sum(per_layer[p] * sizes[p] for p in per_layer) / total if total else math.nan

