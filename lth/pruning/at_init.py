"""Pruning at initialization: schedules, compression targets and the prune-at-init loop — any score
(a Scorer), single-shot or iterative (exponential or linear schedule), global or layerwise, to a
target compression; sanity checks (shuffle, reinit, invert).

Each round is one jit-compiled scoring call followed by exact selection (lth.prune).

With an N:M pattern (N kept of every M consecutive weights along a kernel's input axis) the target
density is N/M, and every round is itself a per-group selection: round r, at the schedule's density
d_r, keeps in every group the ceil(d_r · M) highest-scoring live weights (never fewer than N), so the
rounds thin every group evenly, re-scoring in between, and the last round (d = N/M) keeps exactly N.
One round (SNIP, GraSP, …) is exactly the N:M of its scores (`nm_keep`). An unstructured schedule
with the pattern imposed only at the end could leave groups with fewer than N live weights, and so
miss the pattern's density; per-group rounds cannot. The loop over
rounds runs on the host: on XLA:CPU a convolution inside a compiled while loop runs ~16× slower
than the same convolution in a plain compiled call (measured on ResNet-20), and a round is long
enough that the host loop costs nothing measurable.
"""
from __future__ import annotations

import math
import numbers
import re
import time

import jax

from lth.errors import UserError, check_choice
from lth.options import split_list
from lth.pruning import masks as M
from lth.pruning import prune as P
from lth.pruning import sparsity as SP
from lth.registry import DISTRIBUTIONS, SCORES
from lth.scores import Scorer
from lth.scores.scorer import check_options

SCHEDULES = ("exponential", "linear")
SANITY = ("shuffle", "reinit", "invert")
# global | layerwise (each layer at the round's density) | a layer-density distribution (lth/pruning/sparsity.py):
# the score ranks weights within each layer at that distribution's densities (random at ERK densities is
# Liu et al. 2022's random ERK; magnitude at them their "hybrid"; smart_ratio is Su et al. 2020's)


def parse_compressions(text) -> list[float]:
    """'10^1,10^2,1000' → [10, 100, 1000] (a sweep); one value → a list of one."""
    out = [parse_compression(t) for t in split_list(text)]
    if not out:
        raise UserError(f"compression {text!r} is empty; allowed: a ratio >= 1 or a comma list, e.g. 10^1,10^2")
    return out


def parse_compression(text) -> float:
    """'100', '1e3' or '10^2.5' → compression ratio (≥ 1): kept = total / ratio."""
    s = str(text).strip()
    m = re.fullmatch(r"10\^(-?\d+(?:\.\d+)?)", s)
    try:
        value = 10 ** float(m.group(1)) if m else float(s)
    except ValueError:
        value = None
    if value is None or not value >= 1.0:
        raise UserError(f"compression {text!r} out of range; allowed: a ratio >= 1, e.g. 100 or 10^2")
    return value


def max_compression(prunable_sizes) -> float:
    """Total prunable weights / number of prunable layers: one weight left in every layer."""
    return sum(prunable_sizes) / len(prunable_sizes)


def check_target(compression: float, prunable_sizes, scope: str) -> None:
    top = max_compression(prunable_sizes) if scope == "global" else min(prunable_sizes)
    if compression > top * (1 + 1e-9):
        raise UserError(f"compression {compression:.4g} (10^{math.log10(compression):.3f}) is beyond max compression "
                        f"{top:.4g} (10^{math.log10(top):.3f}, one weight per layer); "
                        f"allowed: 1 <= compression <= {top:.4g}")


def default_rounds(method: str) -> int:
    """The score's own default rounds (declared next to it in lth/scores/registry.py)."""
    return SCORES.get(method).rounds


def validate_options(p) -> None:
    """Checks of the `pai` options every prune-at-init study reads: schedule, scope, rounds, the
    scores' options (lth.scores.scorer.RANGES and each score's allowed values)."""
    check_options(p)
    check_choice("pai.schedule", p.schedule, SCHEDULES)
    check_choice("pai.scope", p.scope, ("global", "layerwise", *DISTRIBUTIONS))
    if p.rounds < 0:
        raise UserError(f"pai.rounds {p.rounds} out of range; allowed: 0 (method default) or more")
    if p.prospr_steps < 1:
        raise UserError(f"pai.prospr_steps {p.prospr_steps} out of range; allowed: 1 or more inner steps")
    if not p.prospr_lr > 0:
        raise UserError(f"pai.prospr_lr {p.prospr_lr} out of range; allowed: a positive learning rate")


def densities(target: float, rounds: int, schedule: str):
    check_choice("schedule", schedule, SCHEDULES)
    if rounds < 1:
        raise UserError(f"rounds {rounds} out of range; allowed: 1 or more")
    if schedule == "exponential":
        return [target ** (r / rounds) for r in range(1, rounds + 1)]
    return [1.0 - (1.0 - target) * r / rounds for r in range(1, rounds + 1)]


def layer_plan(variables, prunable, density: float, scope: str, order=None, resnet: bool = False):
    """The `layer_fractions` of `P.prune` that keep each prunable layer at the densities
    `scope` (a distribution) gives for `density`; `order`: the prunable paths in network order
    (uniform_plus and smart_ratio read it; default: the params' leaf order)."""
    import re

    params = variables["params"]
    shapes = {p: tuple(x.shape) for p, x, pr in zip(M.leaf_paths(params), jax.tree.leaves(params),
                                                     jax.tree.leaves(prunable)) if pr}
    shapes = {p: shapes[p] for p in (order or shapes)}
    dens = SP.densities(shapes, density, scope, resnet=resnet)
    return [(re.escape(p), 1.0 - d) for p, d in dens.items()]


def nm_per_group(density: float, n: int, m: int) -> int:
    """Weights a round at `density` keeps in each group of m under an n:m pattern: ceil(density · m),
    at least n and at most m (the final round, at n/m, keeps n)."""
    return min(m, max(n, math.ceil(density * m - 1e-9)))


def prune_at_init(scorer: Scorer, variables, prunable, density: float | None, *, rounds=1, schedule="exponential",
                  scope="global", rng=None, invert=False, timings: dict | None = None, order=None,
                  resnet: bool = False, units: bool = False, pattern=None):
    """Masks keeping `density` of the prunable weights after `rounds` rounds of score-and-prune;
    `scope`: global | layerwise | a registered distribution (a distribution: each round ranks within layers at its
    densities; `order` and
    `resnet` as `layer_plan`); `units`: whole neurons / filters (lth.prune.prune).
    `pattern`: N:M ('2:4'; None / '' = unstructured): the masks end at exactly N of every M along each
    prunable kernel's input axis, density N/M (`density` None or N/M; `scope` global or layerwise,
    which are then the same). Round r keeps ceil(d_r · M) per group (`nm_per_group`), the last N."""
    nm = P.as_nm(pattern)
    if nm is not None:
        n, m = nm
        if density is None:
            density = n / m
        if units:
            raise UserError(f"N:M pattern {n}:{m} with structure units; allowed: one of them")
        if scope not in ("global", "layerwise"):
            raise UserError(f"scope {scope!r} with N:M pattern {n}:{m}: the pattern sets every layer's density "
                            f"to N/M; allowed: global or layerwise")
        if isinstance(density, numbers.Real) and abs(density - n / m) > 1e-6:
            raise UserError(f"density {density!r} with N:M pattern {n}:{m}: the pattern keeps N/M = {n / m:.6g}; "
                            f"allowed: density {n / m:.6g} (or None)")
    if isinstance(density, bool) or not isinstance(density, numbers.Real) or not 0.0 < density <= 1.0:
        raise UserError(f"density {density!r} out of range; allowed: a number with 0 < density <= 1")
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise UserError(f"rounds {rounds!r} out of range; allowed: an integer, 1 or more")
    check_choice("scope", scope, ("global", "layerwise", *DISTRIBUTIONS))
    rng = jax.random.PRNGKey(0) if rng is None else rng
    masks = M.ones_like(variables["params"])
    regrow = SCORES.get(scorer.method).regrow   # FORCE: every round selects among all the weights
    t_score = t_select = 0.0
    for r, d in enumerate(densities(density, rounds, schedule)):
        t0 = time.perf_counter()
        key = jax.random.fold_in(rng, r)
        scores = (scorer(variables, masks, key, density=d) if getattr(scorer, "takes_density", False)   # PHEW
                  else scorer(variables, masks, key))
        if invert:
            scores = jax.tree.map(lambda s: -s, scores)
        t1 = time.perf_counter()
        if nm is not None:
            masks = P.prune_nm(scores, M.ones_like(masks) if regrow else masks, prunable, nm,
                               per_group=nm_per_group(d, *nm))
        else:
            plan = layer_plan(variables, prunable, d, scope, order, resnet) if scope in DISTRIBUTIONS else ()
            masks = P.prune(scores, M.ones_like(masks) if regrow else masks, prunable, density=d,
                            layerwise=scope == "layerwise", layer_fractions=plan, units=units)
        jax.block_until_ready(masks)
        t_score, t_select = t_score + t1 - t0, t_select + time.perf_counter() - t1
    if timings is not None:
        timings.update(score_s=t_score, select_s=t_select, rounds=rounds)
    return masks


def kept_per_layer(masks, prunable) -> dict[str, int]:
    return {path: int(k) for path, (k, _) in M.counts(masks, prunable).items()}
