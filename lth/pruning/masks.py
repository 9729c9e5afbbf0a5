"""Masks: bool pytrees shaped like params (all-True on leaves never pruned), and their densities."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from lth.errors import UserError


def path_str(path) -> str:
    """'fc_0/kernel' for a tree path of dict keys (Flax params)."""
    parts = []
    for p in path:
        parts.append(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))))
    return "/".join(parts)


def leaf_paths(tree) -> list[str]:
    """Path strings of the leaves of `tree`, in jax.tree.leaves order."""
    return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def check_pattern(what: str, pattern) -> re.Pattern:
    """`pattern` compiled; a UserError naming `what` (the config key) when it is not a regular expression."""
    if not isinstance(pattern, str):
        raise UserError(f"bad {what} {pattern!r}; allowed: a regular expression of param paths, e.g. '.*kernel'")
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as e:
        raise UserError(f"bad {what} regex {pattern!r} ({e}); allowed: a regular expression of param paths, "
                        f"e.g. '.*kernel'") from None


def prunable_tree(params, pattern: str, what: str = "prunable"):
    """Pytree of Python bools: True where the leaf path matches `pattern` (re.fullmatch)."""
    rx = check_pattern(what, pattern)
    return jax.tree_util.tree_map_with_path(lambda p, _: bool(rx.fullmatch(path_str(p))), params)


def ones_like(params):
    """All-True mask with the structure and shapes of `params` (leading axes included)."""
    return jax.tree.map(lambda x: jnp.ones(jnp.shape(x), bool), params)


def apply(params, masks):
    """params ⊙ masks: pruned entries become exactly 0."""
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros((), p.dtype)), params, masks)


def counts(masks, prunable, axis=None) -> dict[str, tuple[np.ndarray, int]]:
    """{path: (kept, total)} for each prunable leaf. `axis=0` keeps a leading replicate axis."""
    out = {}
    for path, m, pr in zip(leaf_paths(masks), jax.tree.leaves(masks), jax.tree.leaves(prunable)):
        if not pr:
            continue
        m = np.asarray(m)
        if axis is None:
            out[path] = (np.asarray(m.sum()), m.size)
        else:
            out[path] = (m.reshape(m.shape[0], -1).sum(1), m[0].size)
    return out


def density(masks, prunable, axis=None):
    """(global density over prunable leaves, {path: per-layer density}); arrays if axis=0."""
    c = counts(masks, prunable, axis)
    kept = sum(k for k, _ in c.values())
    total = sum(t for _, t in c.values())
    return kept / total, {p: k / t for p, (k, t) in c.items()}


def num_params(tree) -> int:
    """Total number of scalars in a pytree."""
    return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(tree)))


def index(tree, r: int):
    """Replicate r of a tree whose leaves carry a leading replicate axis."""
    return jax.tree.map(lambda x: x[r], tree)


def stack(trees):
    """Stack trees along a new leading replicate axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
