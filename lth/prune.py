"""Scores → masks: keep the top-scoring live weights, globally or per layer, with exact counts.

Selection never sorts: the k-th largest score is found by bisection over the bits of an
order-preserving integer key (one counting pass per bit), then ties at the threshold are broken by
flat index (lower index kept). Already-pruned weights are never eligible, so they never come back.
"""
from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np

from lth import masks as M
from lth.errors import UserError


def parse_layer_fractions(spec: str) -> list[tuple[str, float]]:
    """'out=0.1,fc_0=0' → [('out', 0.1), ('fc_0', 0.0)]; a fraction of 0 excludes the layer."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, value = item.partition("=")
        try:
            frac = float(value)
        except ValueError:
            frac = None
        if not sep or frac is None or not 0.0 <= frac < 1.0:
            raise UserError(f"bad prune.layer_fractions entry {item!r}; expected LAYER=FRACTION with 0 <= FRACTION < 1")
        try:
            re.compile(name)
        except re.error as e:
            raise UserError(f"bad layer pattern {name!r} in prune.layer_fractions: {e}") from None
        out.append((name, frac))
    return out


def plan_groups(paths, prunable, fraction, layerwise, layer_fractions):
    """Groups of leaf indices ranked together, each with its prune fraction.

    A layer named in `layer_fractions` (pattern fullmatching its path or its module path) is its own
    group at its own fraction; the other prunable leaves form one global group, or one group each
    when `layerwise`.
    """
    overrides = {}
    for pat, frac in layer_fractions:
        hits = [i for i, p in enumerate(paths) if prunable[i] and (re.fullmatch(pat, p) or re.fullmatch(pat, p.rsplit("/", 1)[0]))]
        if not hits:
            allowed = [p for i, p in enumerate(paths) if prunable[i]]
            raise UserError(f"layer pattern {pat!r} matches no prunable layer; prunable: {', '.join(allowed)}")
        for i in hits:
            overrides[i] = frac
    groups = [([i], f) for i, f in sorted(overrides.items()) if f > 0]
    rest = [i for i in range(len(paths)) if prunable[i] and i not in overrides]
    if layerwise:
        groups += [([i], fraction) for i in rest]
    elif rest:
        groups.append((rest, fraction))
    return groups


def sortable_key(x):
    """Map floats to unsigned ints with the same order (NaN ranks lowest)."""
    x = jnp.where(jnp.isnan(x), -jnp.inf, x) + 0.0  # -0.0 → +0.0, as in numpy comparisons
    bits = {4: jnp.uint32, 8: jnp.uint64}[x.dtype.itemsize]
    b = jax.lax.bitcast_convert_type(x, bits)
    sign = jnp.array(1, bits) << (8 * x.dtype.itemsize - 1)
    return jnp.where(b & sign, ~b, b | sign)


def _bisect_keep(key, eligible, k):
    """Exact top-k by bisection over the key bits: one counting pass per bit."""
    nbits = 8 * key.dtype.itemsize
    one = jnp.array(1, key.dtype)

    def bit(i, t):
        cand = t | (one << (nbits - 1 - i).astype(key.dtype))
        n = jnp.sum(eligible & (key >= cand), dtype=jnp.int32)
        return jnp.where(n >= k, cand, t)

    t = jax.lax.fori_loop(0, nbits, bit, jnp.array(0, key.dtype))
    above = eligible & (key > t)
    tied = eligible & (key == t)
    need = k - jnp.sum(above, dtype=jnp.int32)
    return above | (tied & (jnp.cumsum(tied, dtype=jnp.int32) <= need))


def keep_top_k(scores, eligible, k):
    """Bool mask of the k highest `scores` among `eligible` (1-D); ties go to the lower index.
    Jittable (any backend); `prune` uses `keep_top_k_host` instead on CPU, where it is ~15× faster."""
    key = sortable_key(scores)
    k = jnp.minimum(jnp.asarray(k, jnp.int32), jnp.sum(eligible, dtype=jnp.int32))
    return _bisect_keep(key, eligible, k)


def keep_top_k_host(scores, eligible, k):
    """numpy twin of `keep_top_k` (same result, ties to the lower index), over the eligible entries
    only; the host path of `prune` on CPU, where it is ~15× faster than the jitted bisection."""
    return _select_groups_host([np.asarray(scores)], [np.asarray(eligible)], [k], ((0,),))[0]


def _select_groups_host(score_leaves, mask_leaves, keep, groups):
    """numpy selection per group over the live entries only: each leaf's live positions are found
    and their scores gathered leaf by leaf, so neither the full score vector nor a full-size keep
    vector is ever built (after many SynFlow rounds most of millions of entries are pruned). Same
    result as `keep_top_k` (the jitted bisection) on the concatenation: ties go to the lower flat index."""
    out = list(mask_leaves)
    for g, idx in enumerate(groups):
        live = [np.flatnonzero(np.asarray(mask_leaves[i]).ravel()) for i in idx]
        vals = np.concatenate([np.asarray(score_leaves[i]).ravel()[pos] for i, pos in zip(idx, live)])
        k = int(min(keep[g], vals.size))
        sel = np.zeros(vals.size, bool)
        if k > 0:
            vals = vals + 0.0
            vals[np.isnan(vals)] = -np.inf
            t = np.partition(vals, vals.size - k)[vals.size - k]
            sel = vals > t
            sel[np.flatnonzero(vals == t)[: k - int(sel.sum())]] = True
        offset = 0
        for i, pos in zip(idx, live):
            m = np.zeros(math.prod(np.shape(mask_leaves[i])), bool)
            m[pos[sel[offset:offset + pos.size]]] = True
            out[i] = m.reshape(np.shape(mask_leaves[i]))
            offset += pos.size
    return out


def _select_groups(score_leaves, mask_leaves, keep, groups):
    """Per group under jit: flatten its leaves, keep the top `keep[g]` live scores (bisection), split
    back into leaves. The host path is `_select_groups_host`."""
    out = list(mask_leaves)
    for g, idx in enumerate(groups):
        flat_s = jnp.concatenate([score_leaves[i].ravel() for i in idx])
        flat_m = jnp.concatenate([mask_leaves[i].ravel() for i in idx])
        kept = keep_top_k(flat_s, flat_m, keep[g])
        offset = 0
        for i in idx:
            shape = jnp.shape(mask_leaves[i])
            n = math.prod(shape)
            out[i] = kept[offset:offset + n].reshape(shape)
            offset += n
    return out


_select = jax.jit(_select_groups, static_argnames=("groups",))


def _alive(mask_leaves, groups):
    return [sum(int(np.asarray(mask_leaves[i]).sum()) for i in idx) for idx in groups]


def prune(scores, masks, prunable, *, fraction=None, density=None, layerwise=False, layer_fractions=()):
    """New masks keeping the highest-scoring live prunable weights (one replicate, no leading axis).

    `fraction`: remove ceil(fraction · live) weights of each group (IMP: a fraction of what is left).
    `density`: keep round(density · size) weights of each group (one-shot to a target).
    Leaves outside `prunable` keep their masks untouched.
    """
    if (fraction is None) == (density is None):
        raise ValueError("give exactly one of fraction or density")
    paths = M.leaf_paths(masks)
    s_leaves, m_leaves = jax.tree.leaves(scores), jax.tree.leaves(masks)
    pr = jax.tree.leaves(prunable)
    rate = fraction if fraction is not None else 1.0 - density
    if not 0.0 <= rate <= 1.0:
        raise UserError(f"prune rate {rate} out of range; allowed: 0 <= fraction <= 1")
    plan = plan_groups(paths, pr, rate, layerwise, layer_fractions)
    groups = tuple(tuple(idx) for idx, _ in plan)
    if fraction is not None:
        keep = [a - math.ceil(f * a - 1e-9) for a, (_, f) in zip(_alive(m_leaves, groups), plan)]
    else:
        sizes = [sum(int(np.prod(np.shape(m_leaves[i]))) for i in idx) for idx in groups]
        keep = [round((1.0 - f) * n) for n, (_, f) in zip(sizes, plan)]
    if jax.default_backend() == "cpu":
        new = [jnp.asarray(m) for m in _select_groups_host(s_leaves, m_leaves, keep, groups)]
    else:
        new = _select(s_leaves, [jnp.asarray(m) for m in m_leaves], jnp.asarray(keep, jnp.int32), groups)
    return jax.tree.unflatten(jax.tree.structure(masks), new)


def prune_replicates(scores, masks, prunable, **kw):
    """`prune` applied to each replicate of trees carrying a leading replicate axis."""
    r = jax.tree.leaves(masks)[0].shape[0]
    return M.stack([prune(M.index(scores, i), M.index(masks, i), prunable, **kw) for i in range(r)])


def shuffle(masks, prunable, rng):
    """Permute each prunable layer's mask entries at random: same per-layer counts, new positions."""
    leaves, treedef = jax.tree.flatten(masks)
    keys = jax.random.split(rng, len(leaves))
    out = [jax.random.permutation(k, m.ravel()).reshape(m.shape) if p else m
           for k, m, p in zip(keys, leaves, jax.tree.leaves(prunable))]
    return jax.tree.unflatten(treedef, out)
