"""N:M sparsity patterns (NVIDIA's 2:4, 4:8): in every group of M consecutive weights along a kernel's
input axis, keep N. Kernels are in Flax layout — Dense (in, out), Conv (kh, kw, in, out) — so the
groups run along axis -2, one set of groups per output (and per spatial tap of a convolution).

  * `parse_pattern` / `check_nm`: the pattern string and its fit to a layer (one-line UserErrors).
  * `nm_keep(scores, n, m)`: the n highest scores of every group (ties: the lower index).
  * `nm_select(scores, alive, k, m)`: the same among the live weights only (already-pruned weights are
    never eligible; a group with fewer than k live keeps those), as `lth.pruning.prune` uses it.
  * `group_shuffle(mask, m, rng)`: each group's entries permuted at random (the random control of an
    N:M mask: the same count in every group, new positions).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lth.errors import UserError


def check_nm(n: int, m: int, fan_in: int, where: str = "") -> None:
    """UserError unless 0 < n < m and m divides `fan_in` (the input dimension the groups run along)."""
    if not (isinstance(n, int) and isinstance(m, int) and 0 < n < m):
        raise UserError(f"N:M pattern {n}:{m}{where}: allowed: integers 0 < N < M (e.g. 2:4, 4:8)")
    if fan_in % m:
        raise UserError(f"N:M pattern {n}:{m}{where}: M={m} does not divide the input dimension {fan_in}; "
                        f"allowed: an M dividing every pruned layer's input dimension")


def parse_pattern(spec, what: str = "pattern"):
    """'' / 'unstructured' → None; 'N:M' → (N, M). UserError (naming `what`, e.g. the config key)
    otherwise."""
    spec = str(spec).strip()
    if spec in ("", "unstructured"):
        return None
    try:
        n, m = (int(v) for v in spec.split(":"))
    except ValueError:
        raise UserError(f"{what} {spec!r}: allowed: 'unstructured' or N:M such as 2:4 or 4:8") from None
    if not 0 < n < m:
        raise UserError(f"{what} {spec!r}: allowed: integers 0 < N < M (e.g. 2:4, 4:8)")
    return n, m


def _groups(x, m):
    """x (..., in, out) → (..., out, in/m, m): the groups of m along the input axis, last."""
    s = jnp.moveaxis(x, -2, -1)
    return s.reshape(*s.shape[:-1], s.shape[-1] // m, m)


def _ungroup(g, shape):
    """Inverse of `_groups` for an array of the original `shape`."""
    s = g.reshape(*shape[:-2], shape[-1], shape[-2])
    return jnp.moveaxis(s, -1, -2)


def nm_keep(scores, n: int, m: int):
    """Keep-mask with the n highest scores of every group of m consecutive entries along axis -2
    (the input axis of a Dense kernel (in, out) or a convolution's (kh, kw, in, out))."""
    s = jnp.moveaxis(scores, -2, -1)
    g = s.reshape(*s.shape[:-1], s.shape[-1] // m, m)
    rank = jnp.argsort(jnp.argsort(-g, axis=-1, stable=True), axis=-1, stable=True)   # 0 = the highest
    keep = (rank < n).reshape(s.shape)
    return jnp.moveaxis(keep, -1, -2)


@functools.partial(jax.jit, static_argnames=("k", "m"))
def nm_select(scores, alive, k: int, m: int):
    """Keep-mask with the k highest scores among the `alive` entries of every group of m along axis
    -2; a group with fewer than k alive keeps exactly its alive ones (a pruned weight never returns).
    Ranked as `nm_keep` (stable: ties and NaN as there), with every live entry ahead of every dead one,
    so on an all-alive mask it equals `nm_keep(scores, k, m)`."""
    shape = jnp.shape(scores)
    g, a = _groups(jnp.asarray(scores), m), _groups(jnp.asarray(alive, bool), m)
    order = jnp.argsort(-g, axis=-1, stable=True)                        # nm_keep's order, the highest first
    dead_in_order = ~jnp.take_along_axis(a, order, axis=-1)
    order = jnp.take_along_axis(order, jnp.argsort(dead_in_order, axis=-1, stable=True), axis=-1)   # live first
    rank = jnp.argsort(order, axis=-1, stable=True)
    return _ungroup((rank < k) & a, shape)


@functools.partial(jax.jit, static_argnames=("m",))
def group_shuffle(mask, m: int, rng):
    """`mask` with the entries of each group of m along axis -2 permuted at random (independently per
    group): every group keeps its count, so an N:M mask stays N:M."""
    shape = jnp.shape(mask)
    g = _groups(jnp.asarray(mask, bool), m)
    perm = jnp.argsort(jax.random.uniform(rng, g.shape), axis=-1)
    return _ungroup(jnp.take_along_axis(g, perm, axis=-1), shape)
