"""Low-rank factorization: a dense kernel W [in, out] replaced by U [in, r] · V [r, out] from its
truncated SVD, and ALBERT's factorized embedding (a V×H word embedding as V×E · E×H, Lan et al. 2020)
by the same rule — any model, no model code changed.

`LowRank(model, ranks)` runs `model` with the Dense layers and Embeds named in `ranks` computed as
x·U·V (+ bias) / take(U, ids)·V, through a Flax method interceptor; their params are {u, v[, bias]}
instead of {kernel[, bias]} / {embedding}. It has the model's `init` / `apply` (a fresh init draws
U, V as a fan-in normal), so it trains through the one training loop like any model.

`plan(params, pattern, rank=, energy=)` picks each matched kernel's rank: `rank` (at most min(in,
out)), or the smallest r whose singular values keep `energy` of Σσ² (0 < energy ≤ 1); a layer where
r·(in + out) ≥ in·out would not shrink and stays dense. `factorize(params, ranks)` splits each
matched kernel as U√Σ, √ΣVᵀ (balanced factors for fine-tuning).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lth.errors import UserError

LEAVES = ("kernel", "embedding")   # the factorizable param names of nn.Dense and nn.Embed


@dataclasses.dataclass(frozen=True)
class LowRank:
    """`model` with the modules of `ranks` ((module path 'a/b', rank), ...) low-rank."""

    model: Any
    ranks: tuple

    def __getattr__(self, name):   # the wrapped model's attributes (cfg, num_classes, …)
        if name in ("model", "ranks") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def _intercept(self, next_fun, args, kwargs, ctx):
        m = ctx.module
        rank = dict(self.ranks).get("/".join(m.path)) if isinstance(m, (nn.Dense, nn.Embed)) else None
        if rank is None or ctx.method_name not in ("__call__", "setup"):
            return next_fun(*args, **kwargs)
        init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
        if isinstance(m, nn.Embed):   # its params live in setup: U, V instead of the embedding
            if ctx.method_name == "setup":
                m.param("u", init, (m.num_embeddings, rank))
                m.param("v", init, (rank, m.features))
                return None
            u, v = m.get_variable("params", "u"), m.get_variable("params", "v")
            return jnp.take(u, jnp.asarray(args[0]).astype(jnp.int32), axis=0) @ v
        if ctx.method_name == "setup":
            return next_fun(*args, **kwargs)
        x = args[0]
        u = m.param("u", init, (x.shape[-1], rank))
        v = m.param("v", init, (rank, m.features))
        y = (x @ u.astype(x.dtype)) @ v.astype(x.dtype)
        return y + m.param("bias", m.bias_init, (m.features,)).astype(x.dtype) if m.use_bias else y

    def init(self, *args, **kwargs):
        with nn.intercept_methods(self._intercept):
            return self.model.init(*args, **kwargs)

    def apply(self, *args, **kwargs):
        with nn.intercept_methods(self._intercept):
            return self.model.apply(*args, **kwargs)


def check_energy(energy: float, name: str = "compress.energy") -> None:
    if not 0 < energy <= 1:
        raise UserError(f"{name} {energy} out of range; allowed: 0 < energy <= 1 (the fraction of Σσ² kept)")


def plan(params, pattern: str, rank: int = 0, energy: float = 0.0, name: str = "compress") -> dict:
    """{module path: rank} for the 2-D kernels / embeddings whose param path fullmatches `pattern`."""
    if energy:
        check_energy(energy, f"{name}.energy")
    if (rank > 0) == (energy > 0):
        raise UserError(f"{name}.rank {rank} and {name}.energy {energy}: give exactly one (a rank >= 1, or an "
                        f"energy in (0, 1])")
    flat = traverse_util.flatten_dict(params, sep="/")
    matched = {p: np.asarray(v) for p, v in flat.items()
               if p.rsplit("/", 1)[-1] in LEAVES and np.ndim(v) == 2 and re.fullmatch(pattern, p)}
    if not matched:
        raise UserError(f"{name}.factorize {pattern!r} matches no 2-D kernel or embedding; allowed: a regex of "
                        f"{', '.join(p for p, v in flat.items() if np.ndim(v) == 2)}")
    out = {}
    for p, w in matched.items():
        n_in, n_out = w.shape
        if rank > min(n_in, n_out):
            raise UserError(f"{name}.rank {rank} is above layer {p}'s size {n_in}×{n_out}; allowed: 1 to "
                            f"{min(n_in, n_out)} (or a pattern that leaves the layer out)")
        r = rank
        if energy:
            s2 = np.linalg.svd(w.astype(np.float64), compute_uv=False) ** 2
            r = int(np.searchsorted(np.cumsum(s2) / max(s2.sum(), 1e-300), energy - 1e-12) + 1)
            r = min(r, len(s2))
        if r * (n_in + n_out) < n_in * n_out:
            out[p.rsplit("/", 1)[0]] = r
    return out


def factorize(params, ranks: dict) -> dict:
    """`params` with each module of `ranks` as {u: U√Σ [in, r], v: √ΣVᵀ [r, out]} (its bias kept)."""
    flat = traverse_util.flatten_dict(params, sep="/")
    out = {}
    for p, v in flat.items():
        mod, leaf = p.rsplit("/", 1)
        if mod in ranks and leaf in LEAVES:
            u, s, vt = np.linalg.svd(np.asarray(v, np.float64), full_matrices=False)
            r = ranks[mod]
            root = np.sqrt(s[:r])
            out[f"{mod}/u"] = jnp.asarray(u[:, :r] * root, jnp.float32)
            out[f"{mod}/v"] = jnp.asarray(root[:, None] * vt[:r], jnp.float32)
        else:
            out[p] = v
    return traverse_util.unflatten_dict(out, sep="/")


def low_rank(model, ranks: dict) -> LowRank:
    return LowRank(model, tuple(sorted(ranks.items())))
