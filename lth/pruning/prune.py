"""Scores → masks: keep the top-scoring live weights, globally or per layer, with exact counts.

Selection never sorts. On CPU (`_select_groups_host`) the k-th largest live score is found by numpy
introselect, over the live entries gathered leaf by leaf or, while a large group is still mostly
live, only over those inside a bracket found from a random sample; elsewhere (jitted,
`keep_top_k`) by bisection over the bits of an order-preserving integer key (one counting pass per
bit). Ties at the threshold are broken by flat index (lower index kept); both paths agree exactly.
Already-pruned weights are never eligible, so they never come back.

With an N:M `pattern` (lth/pruning/nm.py) the rule is per group of M consecutive weights along each
prunable kernel's input axis instead: keep the N highest-scoring live weights of every group.
"""
from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np

from lth.errors import UserError
from lth.options import options, split_list
from lth.pruning import masks as M
from lth.pruning import nm as NM

# The `prune` section of the config (IMP's rule; `prune.prunable` for every study).
OPTIONS = options(
    score=("magnitude", "criterion for IMP levels (|w| of the trained weights)"),
    fraction=(0.2, "fraction of the weights removed per level (of those left, or see prune.of)"),
    structure=("weights", "weights (unstructured) | units: whole neurons / conv filters (output channels), ranked by "
                          "the score summed over the unit (magnitude: L1 norm, Li et al. 2017); the output layer is "
                          "then not prunable (its units are the classes)"),
    of=("remaining", "remaining: density (1-f)^L | original: density 1 - L·f (Chen et al. BERT)"),
    scope=("global", "global (one ranking) | layerwise (each layer at `fraction`) | a layer-density distribution "
                     "(erk, er, uniform_plus, smart_ratio: each layer at its density for level L)"),
    prunable=(r".*kernel", "regex fullmatching the param paths that may be pruned"),
    layer_fractions=("", "per-layer overrides 'LAYER=FRACTION,...' (own ranking group, own rate per level); "
                         "0 = never pruned"),
    pattern=("", "'' (unstructured) | N:M, e.g. 2:4 or 4:8: every group of M consecutive weights along a "
                 "prunable kernel's input axis keeps its N highest-scoring live weights (density N/M; "
                 "fraction, of and scope do not apply; a layer set to 0 in layer_fractions stays dense). "
                 "IMP: level 1 imposes the pattern from prune.score and later levels keep it, so "
                 "lottery.levels=1 is the natural use; lth pai: the rounds end at the pattern "
                 "(pai.compression must be M/N)"),
)


def parse_layer_fractions(spec: str) -> list[tuple[str, float]]:
    """'out=0.1,fc_0=0' → [('out', 0.1), ('fc_0', 0.0)]; a fraction of 0 excludes the layer."""
    out = []
    for item in split_list(spec):
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
        hits = [i for i, p in enumerate(paths)
                if prunable[i] and (re.fullmatch(pat, p) or re.fullmatch(pat, p.rsplit("/", 1)[0]))]
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


BRACKET_MIN_LIVE = 1 << 20   # groups with at least this many live entries (and at least 1/8 live) use the bracket


def _top_of(vals, k):
    """Bool over `vals` (1-D, index order): the k largest, NaN lowest, ties to the lower index."""
    sel = np.zeros(vals.size, bool)
    if k > 0:
        vals = vals + 0.0
        vals[np.isnan(vals)] = -np.inf
        t = np.partition(vals, vals.size - k)[vals.size - k]
        sel = vals > t
        sel[np.flatnonzero(vals == t)[: k - int(sel.sum())]] = True
    return sel


def _gather_select(scores, masks, k):
    """Top k over the live entries of leaves (lists of arrays), gathered leaf by leaf."""
    live = [np.flatnonzero(m.ravel()) for m in masks]
    sel = _top_of(np.concatenate([s.ravel()[pos] for s, pos in zip(scores, live)]), k)
    out, offset = [], 0
    for m, pos in zip(masks, live):
        new = np.zeros(m.size, bool)
        new[pos[sel[offset:offset + pos.size]]] = True
        out.append(new.reshape(m.shape))
        offset += pos.size
    return out


def _bracket_select(scores, masks, k, n_live, rng):
    """Top k over the live entries without gathering them all: a random sample of live scores
    brackets the threshold as [lo, hi]; one pass counts the live entries below lo, keeps those above
    hi and gathers only those inside; the cut is made among those. Exact (ties to the lower index);
    None when the sample's bracket missed (the caller then gathers)."""
    sizes = np.array([m.size for m in masks])
    draws = rng.integers(0, sizes.sum(), 1 << 16)
    sample = []
    for i, (s, m) in enumerate(zip(scores, masks)):
        start = sizes[:i].sum()
        pos = draws[(draws >= start) & (draws < start + m.size)] - start
        sample.append(s.ravel()[pos][m.ravel()[pos]])
    sample = np.sort(np.concatenate(sample))
    if sample.size < 1024 or np.isnan(sample).any():
        return None
    q = n_live - k                                      # entries to drop
    p, ns = q / n_live, sample.size
    margin = 6.0 * math.sqrt(p * (1 - p) / ns) + 2.0 / ns
    lo = sample[max(int((p - margin) * ns), 0)]
    hi = sample[min(int(math.ceil((p + margin) * ns)), ns - 1)]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    below, inside, keep = 0, [], []
    for s, m in zip(scores, masks):
        s, m = s.ravel(), m.ravel()
        ge, le = s >= lo, s <= hi                       # NaN is neither: it counts below
        below += int(np.count_nonzero(m)) - int(np.count_nonzero(m & ge))
        inside.append(np.flatnonzero(m & ge & le))
        keep.append(m & ge & ~le)
    vals = np.concatenate([s.ravel()[pos] for s, pos in zip(scores, inside)])
    cut = q - below                                     # to drop among the bracketed entries
    if not 0 <= cut <= vals.size:
        return None
    sel, offset = _top_of(vals, vals.size - cut), 0
    for new, pos in zip(keep, inside):
        new[pos[sel[offset:offset + pos.size]]] = True
        offset += pos.size
    return [new.reshape(m.shape) for new, m in zip(keep, masks)]


def _select_groups_host(score_leaves, mask_leaves, keep, groups, seed=0):
    """numpy selection per group, exact and equal to `keep_top_k` (the jitted bisection) on the
    concatenation: ties go to the lower flat index. After many SynFlow rounds most entries are pruned,
    so the live ones are gathered leaf by leaf (never a full-size score vector). While a group is
    still mostly live (the first rounds), a sampled bracket around the threshold (`_bracket_select`)
    touches every entry in a few vectorized passes and gathers only the entries near the cut."""
    out = list(mask_leaves)
    rng = np.random.default_rng(seed)
    for g, idx in enumerate(groups):
        scores = [np.asarray(score_leaves[i]) for i in idx]
        masks = [np.asarray(mask_leaves[i], bool) for i in idx]
        n_live = sum(int(np.count_nonzero(m)) for m in masks)
        k = int(min(keep[g], n_live))
        new = None
        if n_live >= BRACKET_MIN_LIVE and 8 * n_live >= sum(m.size for m in masks) and 0 < k < n_live:
            new = _bracket_select(scores, masks, k, n_live, rng)
        if new is None:
            new = _gather_select(scores, masks, k)
        for i, m in zip(idx, new):
            out[i] = m
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


def unit_view(scores, masks, prunable):
    """(unit scores, unit masks) for structured pruning: a unit is one output channel
    of a kernel (last axis: a neuron of a dense layer, a filter of a convolution); its score is the
    sum of its live weights' scores (with magnitude scores: the unit's L1 norm, Li et al. 2017) and it
    is live while any of its weights is. Leaves outside `prunable` and 1-D leaves stay as they are."""
    def structured(p, m):
        return p and np.ndim(m) >= 2

    us = jax.tree.map(lambda x, m, p: _score(x, m) if structured(p, m) else x, scores, masks, prunable)
    um = jax.tree.map(lambda x, m, p: _live(x, m) if structured(p, m) else m, scores, masks, prunable)
    return us, um


def _score(x, m):
    return jnp.sum(jnp.where(m, x, 0), axis=tuple(range(np.ndim(m) - 1)))


def _live(x, m):
    return jnp.any(m, axis=tuple(range(np.ndim(m) - 1)))


def as_nm(pattern):
    """None (unstructured) or (N, M) from a pattern: None, '', 'unstructured', 'N:M' or (N, M)."""
    if pattern is None:
        return None
    if isinstance(pattern, str):
        return NM.parse_pattern(pattern)
    n, m = pattern
    NM.check_nm(n, m, m)
    return int(n), int(m)


def nm_leaves(paths, prunable, layer_fractions=()) -> list[int]:
    """Indices of the leaves an N:M pattern applies to: the prunable ones, less those that
    `layer_fractions` sets to 0 (they stay untouched)."""
    return sorted(i for idx, _ in plan_groups(paths, prunable, 0.0, True, layer_fractions) for i in idx)


def check_nm_fit(pattern, paths, shapes, prunable, layer_fractions=(), what: str = "pattern") -> None:
    """One-line UserError (naming `what`, e.g. 'prune.pattern') unless every leaf the pattern applies
    to (`nm_leaves`) is a kernel of 2+ dimensions whose input dimension (axis -2) M divides."""
    nm = as_nm(pattern)
    if nm is None:
        return
    n, m = nm
    for i in nm_leaves(paths, prunable, layer_fractions):
        shape = tuple(shapes[i])
        if len(shape) < 2:
            raise UserError(f"{what} {n}:{m} for {paths[i]} of shape {shape}: it has no input axis; allowed: "
                            f"prunable kernels of 2 or more dimensions (narrow prune.prunable)")
        NM.check_nm(n, m, shape[-2], f" ({what}) for {paths[i]}")


def prune_nm(scores, masks, prunable, pattern, *, per_group=None, layer_fractions=()):
    """N:M masks: in every group of M along each prunable kernel's input axis (-2), keep the
    `per_group` (default N) highest scores among the live weights (`NM.nm_select`: a pruned weight is
    never eligible; a group with fewer live keeps those). Leaves outside `prunable`, and those
    `layer_fractions` sets to 0, keep their masks."""
    n, m = as_nm(pattern)
    k = n if per_group is None else int(per_group)
    if not n <= k <= m:
        raise ValueError(f"per_group={k}; allowed: {n} <= per_group <= {m}")
    paths = M.leaf_paths(masks)
    s_leaves, m_leaves = jax.tree.leaves(scores), jax.tree.leaves(masks)
    pr = jax.tree.leaves(prunable)
    check_nm_fit((n, m), paths, [np.shape(x) for x in m_leaves], pr, layer_fractions)
    out = [jnp.asarray(x) for x in m_leaves]
    for i in nm_leaves(paths, pr, layer_fractions):
        out[i] = NM.nm_select(s_leaves[i], m_leaves[i], k, m)
    return jax.tree.unflatten(jax.tree.structure(masks), out)


def prune(scores, masks, prunable, *, fraction=None, density=None, layerwise=False, layer_fractions=(),
          of="remaining", units=False, pattern=None):
    """New masks keeping the highest-scoring live prunable weights (one replicate, no leading axis).

    `fraction`: each group keeps base − ceil(fraction · base) weights, where base is its live count
    (of='remaining': IMP as OpenLTH's sparse_global, a fraction of what is left) or its size
    (of='original': a fraction of the original weights, never more than are live).
    `density`: keep round(density · size) weights of each group (one-shot to a target).
    Leaves outside `prunable` keep their masks untouched.
    `units`: structured — the same rule counts and ranks whole units (`unit_view`) instead of
    weights, and a removed unit loses every weight.
    `pattern`: N:M ('2:4' or (2, 4); None / '' = unstructured) — `prune_nm`: every group of M along a
    prunable kernel's input axis keeps its N best live weights; `fraction`, `density`, `of` and
    `layerwise` do not apply (give them or not) and `layer_fractions` only excludes (its 0 entries).
    """
    nm = as_nm(pattern)
    if nm is not None:
        if units:
            raise UserError(f"N:M pattern {nm[0]}:{nm[1]} with structure units; allowed: one of them")
        return prune_nm(scores, masks, prunable, nm, layer_fractions=layer_fractions)
    if (fraction is None) == (density is None):
        raise ValueError("give exactly one of fraction or density")
    if units:
        us, um = unit_view(scores, masks, prunable)
        kept = prune(us, um, prunable, fraction=fraction, density=density, layerwise=layerwise,
                     layer_fractions=layer_fractions, of=of)
        return jax.tree.map(lambda m, k, p: jnp.logical_and(m, k) if p and np.ndim(m) >= 2 else k, masks, kept,
                            prunable)
    paths = M.leaf_paths(masks)
    s_leaves, m_leaves = jax.tree.leaves(scores), jax.tree.leaves(masks)
    pr = jax.tree.leaves(prunable)
    rate = fraction if fraction is not None else 1.0 - density
    if not 0.0 <= rate <= 1.0:
        raise UserError(f"prune rate {rate} out of range; allowed: 0 <= fraction <= 1")
    plan = plan_groups(paths, pr, rate, layerwise, layer_fractions)
    groups = tuple(tuple(idx) for idx, _ in plan)
    sizes = [sum(int(np.prod(np.shape(m_leaves[i]))) for i in idx) for idx in groups]
    if fraction is not None:
        if of not in ("remaining", "original"):
            raise ValueError(f"of={of!r}; allowed: remaining, original")
        alive = _alive(m_leaves, groups)
        base = alive if of == "remaining" else sizes
        keep = [min(a, b - math.ceil(f * b - 1e-9)) for a, b, (_, f) in zip(alive, base, plan)]
    else:
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


def shuffle(masks, prunable, rng, pattern=None):
    """Permute each prunable layer's mask entries at random: same per-layer counts, new positions.
    With an N:M `pattern`, each group of M along the input axis is permuted on its own (the same count
    in every group: an N:M mask stays N:M); a leaf the groups do not fit is permuted whole."""
    nm = as_nm(pattern)
    leaves, treedef = jax.tree.flatten(masks)
    keys = jax.random.split(rng, len(leaves))

    def one(k, m):
        if nm is not None and m.ndim >= 2 and m.shape[-2] % nm[1] == 0:
            return NM.group_shuffle(m, nm[1], k)
        return jax.random.permutation(k, m.ravel()).reshape(m.shape)

    out = [one(k, m) if p else m for k, m, p in zip(keys, leaves, jax.tree.leaves(prunable))]
    return jax.tree.unflatten(treedef, out)
