"""N:M sparsity in storage and execution: in every group of M consecutive weights along a kernel's
input axis (axis -2: Dense (in, out), Conv (kh, kw, in, out)) at most N are non-zero (NVIDIA's 2:4).

Storage (NVIDIA's compressed format): the kept values, n·N/M of an n-entry leaf (a group with fewer
than N non-zeros stores zeros in its free slots), plus ceil(log2 M) bits of metadata per kept value —
its position inside its group (2 bits for 2:4, 3 for 4:8) — rounded up to whole bytes for the leaf:

    nm_bytes = n·N/M · value_bytes + ceil(n·N/M · ceil(log2 M) / 8)

Execution: `compress_nm` turns a Dense kernel into values [in·N/M, out] and uint8 indices of the
same shape (row g·N + j holds the j-th kept weight of group g, indices ascending inside a group);
`nm_matmul` computes x @ kernel from them in JAX without the dense kernel ("gather": x's columns
gathered per output and contracted) or by rebuilding it first ("densify"). There is no N:M kernel on
a CPU: see `lth bench --sparse` for what these cost against the dense matmul.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

# The patterns `nm_pattern_of` looks for by default: NVIDIA's 2:4, and the other N:M of M = 4 and 8
# used in the N:M literature (4:8, 1:4, 1:8, 2:8).
PATTERNS = ((2, 4), (4, 8), (1, 4), (1, 8), (2, 8))


def index_bits(m: int) -> int:
    """Bits of one kept value's position inside a group of m: ceil(log2 m) (2 for M = 4, 3 for M = 8)."""
    return max(1, (int(m) - 1).bit_length())


def nm_bytes(size: int, n: int, m: int, value_bytes: float) -> int:
    """Bytes of a leaf of `size` entries stored N:M: size·n/m values of `value_bytes` each (0.5 for
    int4) plus ceil(log2 m) bits of index per kept value, rounded up to whole bytes for the leaf."""
    kept = int(size) * int(n) // int(m)
    return math.ceil(kept * value_bytes + kept * index_bits(m) / 8)


def _groups(kernel, m: int) -> np.ndarray:
    """Non-zero flags of `kernel` as [..., groups, m]: groups of m consecutive entries along axis -2."""
    nz = np.moveaxis(np.asarray(kernel) != 0, -2, -1)
    return nz.reshape(*nz.shape[:-1], nz.shape[-1] // m, m)


def group_max(kernel, m: int) -> int | None:
    """The most non-zeros in any group of m consecutive entries along axis -2, or None when the leaf
    has fewer than 2 axes or m does not divide its axis -2."""
    shape = np.shape(kernel)
    if len(shape) < 2 or m < 2 or shape[-2] % m or not np.size(kernel):
        return None
    return int(_groups(kernel, m).sum(-1).max())


def is_nm(kernel, n: int, m: int) -> bool:
    """True when every group of m consecutive entries along axis -2 has at most n non-zeros (0 < n < m)."""
    g = group_max(kernel, m) if 0 < n < m else None
    return g is not None and g <= n


def nm_pattern_of(kernel, patterns=PATTERNS) -> tuple[int, int] | None:
    """The N:M pattern (n, m) of `kernel` (its non-zeros; a boolean mask works too) among `patterns`,
    or None when it satisfies none. Of several satisfied (a 1:4 kernel is 2:4 and 2:8 too), the one
    stored in fewest bytes: the lowest n/m, then the fewest index bits (1:4 before 2:8)."""
    maxima, size = {}, int(np.size(kernel))
    nnz = int(np.count_nonzero(np.asarray(kernel)))
    for n, m in sorted(patterns, key=lambda p: (p[0] / p[1], index_bits(p[1]), p[1])):
        if not 0 < n < m or nnz * m > size * n:      # more non-zeros than n:m can hold
            continue
        if m not in maxima:
            maxima[m] = group_max(kernel, m)
        if maxima[m] is not None and maxima[m] <= n:
            return int(n), int(m)
    return None


def compress_nm(kernel, n: int, m: int, mask=None):
    """(values, indices) of a Dense kernel [in, out] (⊙ `mask` when given) that is n:m along its input
    axis: values [in·n/m, out] (float, the kernel's dtype), indices [in·n/m, out] uint8 in 0..m-1, the
    position inside its group of each kept value (ascending; a group with fewer than n non-zeros keeps
    zeros in its free slots). ValueError when the kernel is not 2-D, m does not divide `in`, or a
    group has more than n non-zeros."""
    w = jnp.asarray(kernel)
    if mask is not None:
        w = jnp.where(jnp.asarray(mask), w, jnp.zeros((), w.dtype))
    if w.ndim != 2 or not 0 < n < m or w.shape[0] % m:
        raise ValueError(f"compress_nm: a 2-D kernel [in, out] with m dividing in and 0 < n < m; "
                         f"got shape {tuple(w.shape)}, pattern {n}:{m}")
    worst = group_max(w, m)
    if worst > n:
        raise ValueError(f"compress_nm: kernel is not {n}:{m} along its input axis "
                         f"(a group of {m} has {worst} non-zeros)")
    d_in, d_out = w.shape
    g = w.reshape(d_in // m, m, d_out)
    # non-zeros first (stable: in input order), then zeros fill the free slots; indices ascending
    order = jnp.argsort(g == 0, axis=1, stable=True)[:, :n, :]
    idx = jnp.sort(order, axis=1)
    values = jnp.take_along_axis(g, idx, axis=1).reshape(d_in * n // m, d_out)
    return values, idx.reshape(d_in * n // m, d_out).astype(jnp.uint8)


def nm_columns(indices, n: int, m: int):
    """Input index of each kept value: (row // n)·m + indices[row, out], int32 [in·n/m, out]."""
    base = (jnp.arange(indices.shape[0], dtype=jnp.int32) // n * m)[:, None]
    return base + indices.astype(jnp.int32)


def nm_densify(values, indices, n: int, m: int):
    """The dense kernel [in, out] of (values, indices): each kept value put back at its position
    (one-hot over the m positions of its group, summed over the n slots; no scatter)."""
    k, d_out = values.shape
    onehot = indices.astype(jnp.int32)[..., None] == jnp.arange(m, dtype=jnp.int32)     # [k, out, m]
    w = jnp.where(onehot, values[..., None], jnp.zeros((), values.dtype))
    w = w.reshape(k // n, n, d_out, m).sum(1)                                             # [groups, out, m]
    return jnp.moveaxis(w, -1, 1).reshape(k // n * m, d_out)


def nm_matmul(x, values, indices, n: int, m: int, form: str = "gather"):
    """x @ kernel for x [..., in] from the N:M form (values, indices) of `compress_nm`.
    "gather": y[..., o] = Σ_r x[..., (r // n)·m + indices[r, o]] · values[r, o], never building the
    kernel (it reads in·n/m·out products, n/m of the dense matmul's, but through a gather);
    "densify": the kernel rebuilt by `nm_densify`, then a dense matmul."""
    if form == "densify":
        return x @ nm_densify(values, indices, n, m)
    if form != "gather":
        raise ValueError(f"nm_matmul form {form!r}; allowed: gather, densify")
    xg = jnp.take(x, nm_columns(indices, n, m), axis=-1)                                 # [..., k, out]
    return jnp.sum(xg * values, axis=-2)
