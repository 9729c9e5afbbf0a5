"""Name → Flax module. Every family module exports PATTERNS: {regex: (builder, description)}.

Outside lth/models the code sees a model only through `init(rng, x)` and
`apply(variables, x, train, rng) -> (logits, new_model_state)` (see lth/train.py).
"""
from __future__ import annotations

import re

import jax

from lth.errors import UserError
from lth.models import bert, lenet, resnet, vgg

FAMILIES = [lenet, vgg, resnet, bert]

INITS = {
    "glorot_normal": jax.nn.initializers.glorot_normal(),
    "glorot_uniform": jax.nn.initializers.glorot_uniform(),
    "kaiming_normal": jax.nn.initializers.he_normal(),
    "kaiming_uniform": jax.nn.initializers.he_uniform(),
    "lecun_normal": jax.nn.initializers.lecun_normal(),
}


def names() -> list[str]:
    """Model name patterns with descriptions, for help and error messages."""
    return [f"{pat} ({desc})" for fam in FAMILIES for pat, (_, desc) in fam.PATTERNS.items()]


def find(name: str):
    """(builder, regex match) for `name`, or UserError naming what is allowed."""
    for fam in FAMILIES:
        for pat, (builder, _) in fam.PATTERNS.items():
            m = re.fullmatch(pat, name)
            if m:
                return builder, m
    raise UserError(f"unknown model {name!r}; allowed: {'; '.join(names())}")


def build(name: str, num_classes: int, init: str, input_shape, width: float = 1.0):
    """The Flax module called `name` for inputs of `input_shape` (no batch axis); `width` scales
    every layer's channels / units."""
    if not 0 < width <= 64:
        raise UserError(f"model.width {width} out of range; allowed: 0 < width <= 64")
    if init not in INITS:
        raise UserError(f"unknown model.init {init!r}; allowed: {', '.join(sorted(INITS))}")
    builder, m = find(name)
    try:
        return builder(m, num_classes, INITS[init], tuple(input_shape), width)
    except ValueError as e:
        raise UserError(f"model {name!r}: {e}") from None
