"""Layerwise density distributions: how a global density is shared among the prunable layers.

`densities(shapes, density, method)` → {layer: density} for {layer: kernel shape}:
  uniform       every layer at `density`.
  er            Erdős–Rényi: layer l's density ∝ (n_in + n_out) / (n_in · n_out) of its last two dims.
  erk           Erdős–Rényi-Kernel: ∝ Σ dims / Π dims over the whole kernel shape (power 1).
                ER and ERK solve ε in d_l = ε·p_l so that the kept counts add up to the global
                budget; a layer whose d_l would pass 1 is made dense (every layer tied at the largest
                p_l at once) and ε solved again over the rest: google-research/rigl
                `rigl/sparse_utils.py` get_sparsities_erdos_renyi (≡ jaxpruner
                `sparsity_distributions.get_sparsities_erdos_renyi`), budgets in floor counts.
  uniform_plus  the first layer dense; below density 0.2 the last layer at 0.2 and the others at
                (N·d − N_first − 0.2·N_last) / N, N = all prunable weights (VITA-Group/Random_Pruning
                `CIFAR/sparselearning/core.py` Masking.init 'uniform_plus', its division by N kept);
                at 0.2 or above every other layer at d.
  smart_ratio   Su et al. 2020: densities falling quadratically with depth, dense layers at 0.3
                (`smart_ratio` below; JingtongSu/sanity-checking-pruning).
A custom map {layer: density} fixes those layers and leaves them out of the budget (jaxpruner's
`custom_sparsity_map`, rigl's `custom_sparsity_map`).

Counts: a layer of n weights at density d keeps n − ⌊(1 − d)·n⌋ (rigl `get_n_zeros`:
⌊sparsity · n⌋ zeros), so at most one more than d·n.
"""
from __future__ import annotations

import math
import re

import numpy as np

from lth.errors import UserError
from lth.options import split_list
from lth.registry import DISTRIBUTIONS


def n_zeros(size: int, sparsity: float) -> int:
    """rigl `sparse_utils.get_n_zeros`: ⌊sparsity · size⌋."""
    return int(np.floor(sparsity * size))


def kept(size: int, density: float) -> int:
    """Weights a layer of `size` keeps at `density`: size − ⌊(1 − density)·size⌋."""
    return size - n_zeros(size, 1.0 - density)


def _erdos_renyi(shapes: dict, sparsity: float, kernel: bool, custom: dict) -> dict:
    """{layer: sparsity}: rigl `sparse_utils.get_sparsities_erdos_renyi` (erk_power_scale 1)."""
    dense, raw = set(), {}
    while True:
        divisor, rhs, raw = 0.0, 0.0, {}
        for name, shape in shapes.items():
            n = int(np.prod(shape))
            zeros = n_zeros(n, sparsity)
            if name in dense:
                rhs -= zeros
            elif name in custom:
                pass
            else:
                rhs += n - zeros
                if kernel:
                    raw[name] = np.sum(shape) / np.prod(shape)
                else:
                    n_in, n_out = shape[-2:]
                    raw[name] = (n_in + n_out) / (n_in * n_out)
                divisor += raw[name] * n
        if not raw:
            break
        eps = rhs / divisor
        top = max(raw.values())
        if top * eps <= 1:
            break
        dense |= {name for name, p in raw.items() if p == top}
    out = {}
    for name in shapes:
        if name in custom:
            out[name] = 1.0 - custom[name]
        elif name in dense:
            out[name] = 0.0
        else:
            out[name] = 1.0 - eps * raw[name]
    return out


def smart_ratio(shapes: dict, density: float, resnet: bool = False, linear_keep: float = 0.3) -> dict:
    """Su et al. 2020's smart ratio, JingtongSu/sanity-checking-pruning `pruner/SmartRatio.py` (its
    float32 arithmetic and int() truncations kept): layer j of n (network order) gets
    ((n−j)² + (n−j))·k, divided by (j+1)² unless `resnet` (its `--arch resnet` switch); every dense
    (2-D) layer keeps `linear_keep`; k makes the conv layers' counts meet the global budget, and
    ratios over 1 are clipped with the excess carried to the next layers."""
    f32 = np.float32
    names = list(shapes)
    n = len(names)
    num = [f32(np.prod(shapes[k])) for k in names]
    linear = [len(shapes[k]) == 2 for k in names]
    ratio = [f32((n - j) ** 2 + (n - j)) for j in range(n)]
    test, linear_num, total = 0, f32(0), f32(0)
    for j in range(n):
        if not linear[j]:
            test += int(num[j] * ratio[j] / f32((j + 1) ** 2)) if not resnet else int(num[j] * ratio[j])
        else:
            linear_num = f32(linear_num + num[j])
        total = f32(total + num[j])
    goal = int(total * f32(density)) - int(linear_num * f32(linear_keep))
    k = goal / test
    for j in range(n):
        if not linear[j]:
            ratio[j] = f32(ratio[j] * f32(k) / f32((j + 1) ** 2)) if not resnet else f32(ratio[j] * f32(k))
    extra = 0
    for j in range(n):
        if not linear[j]:
            if ratio[j] >= 1:
                extra += int((ratio[j] - f32(1)) * num[j])
                ratio[j] = f32(1)
            else:
                rest = int((f32(1) - ratio[j]) * num[j])
                if rest >= extra:
                    ratio[j] = f32(ratio[j] + f32(extra) / num[j])
                    extra = 0
                else:
                    extra -= rest
                    ratio[j] = f32(1)
        if extra == 0:
            break
    return {k_: (linear_keep if linear[j] else min(1.0, float(ratio[j]))) for j, k_ in enumerate(names)}


def densities(shapes: dict, density: float, method: str = "erk", custom: dict | None = None,
              resnet: bool = False) -> dict:
    """{layer: density} sharing the global `density` among the layers of `shapes` ({layer: kernel
    shape}, in network order: uniform_plus and smart_ratio read it) by `method` (DISTRIBUTIONS);
    `resnet` selects smart_ratio's ResNet formula."""
    custom = dict(custom or {})
    if not 0.0 < density < 1.0:
        raise UserError(f"density {density} out of range; allowed: 0 < density < 1")
    DISTRIBUTIONS.get(method)   # a UserError naming the registered ones
    for name, d in custom.items():
        if name not in shapes:
            raise UserError(f"custom density for {name!r}: not a prunable layer; allowed: {', '.join(shapes)}")
        if not 0.0 < d <= 1.0:
            raise UserError(f"custom density {name}={d} out of range; allowed: 0 < density <= 1")
    return DISTRIBUTIONS.get(method)(shapes, density, custom, resnet)


# Each distribution: (shapes {layer: kernel shape} in network order, density, custom {layer: density},
# resnet) → {layer: density}; registered in lth.registry.DISTRIBUTIONS (their order numbers the random
# masks of `lth sparse`: append, never reorder).
@DISTRIBUTIONS.add("uniform")
def uniform(shapes, density, custom, resnet=False):
    return {name: custom.get(name, density) for name in shapes}


@DISTRIBUTIONS.add("uniform_plus")
def uniform_plus(shapes, density, custom, resnet=False):
    """Gale et al. 2019: the first layer dense, the last at 0.2 at most, the rest uniform."""
    names = list(shapes)
    sizes = {name: int(np.prod(shape)) for name, shape in shapes.items()}
    total = sum(sizes.values())
    first, last = names[0], names[-1]
    out = {name: density for name in names}
    out[first] = 1.0
    if density < 0.2:
        rest = (total * density - sizes[first] - 0.2 * sizes[last]) / total
        if rest <= 0 and len(names) > 2:
            floor = (sizes[first] + 0.2 * sizes[last]) / total
            raise UserError(f"density {density:g} is too low for uniform_plus on these layers: the dense first layer "
                            f"({sizes[first]} of {total} weights) and the last at 0.2 leave nothing for the others; "
                            f"allowed: density " + (f"> {floor:.4g}" if floor < 0.2 else ">= 0.2"))
        out = {name: rest for name in names}
        out[first], out[last] = 1.0, 0.2
    out.update(custom)
    return out


@DISTRIBUTIONS.add("er")
def er(shapes, density, custom, resnet=False):
    return {name: 1.0 - s for name, s in _erdos_renyi(shapes, 1.0 - density, False, custom).items()}


@DISTRIBUTIONS.add("erk")
def erk(shapes, density, custom, resnet=False):
    return {name: 1.0 - s for name, s in _erdos_renyi(shapes, 1.0 - density, True, custom).items()}


@DISTRIBUTIONS.add("smart_ratio")
def smart_ratio_distribution(shapes, density, custom, resnet=False):
    out = smart_ratio(shapes, density, resnet)
    out.update(custom)
    return out


def parse_custom(spec: str) -> dict:
    """'fc_0=0.5,out=1' → {'fc_0': 0.5, 'out': 1.0} (layer names as in `lth models` paths)."""
    out = {}
    for item in split_list(spec):
        name, sep, value = item.partition("=")
        try:
            d = float(value)
        except ValueError:
            d = math.nan
        if not sep or not 0.0 < d <= 1.0:
            raise UserError(f"bad custom density {item!r}; expected LAYER=DENSITY with 0 < DENSITY <= 1")
        try:
            re.compile(name.strip())
        except re.error as e:
            raise UserError(f"bad layer pattern {name.strip()!r} in custom density {item!r}: {e}") from None
        out[name.strip()] = d
    return out
