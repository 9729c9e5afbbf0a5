"""Name → Flax module. Every family module exports PATTERNS: {regex: (builder, description)}.

Outside lth/models the code sees a model only through `init(rng, x)` and
`apply(variables, x, train, rng) -> (logits, new_model_state)` (see lth/train.py).
"""
from __future__ import annotations

import re

from lth.errors import UserError
from lth.models import bert, lenet, resnet, vgg
from lth.models.inits import Init, coerce

FAMILIES = [lenet, vgg, resnet, bert]


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


def build(name: str, num_classes: int, init: Init | str, input_shape, width: float = 1.0):
    """The Flax module called `name` for inputs of `input_shape` (no batch axis); `init` (an Init, or
    a kernel-init name with zero biases and BatchNorm γ = 1) says how parameters are drawn; `width`
    scales every layer's channels / units."""
    if not 0 < width <= 64:
        raise UserError(f"model.width {width} out of range; allowed: 0 < width <= 64")
    init = coerce(init)
    builder, m = find(name)
    try:
        return builder(m, num_classes, init, tuple(input_shape), width)
    except ValueError as e:
        raise UserError(f"model {name!r}: {e}") from None


def from_config(m, num_classes: int, input_shape):
    """The model of a config's `model` section: `build` plus the BERT options (model.share_layers)."""
    model = build(m.name, num_classes, Init.of(m), input_shape, m.width)
    share = m.get("share_layers", 0)
    if share:
        import dataclasses

        if not isinstance(getattr(model, "cfg", None), bert.BertConfig):
            raise UserError(f"model.share_layers {share} needs a BERT model, not {m.name!r}; allowed: 0 for other models")
        try:
            model = model.clone(cfg=dataclasses.replace(model.cfg, share_groups=share))
        except ValueError as e:
            raise UserError(f"model.share_layers {share}: {e}") from None
    return model


def synflow_init(name: str) -> Init:
    """How the SynFlow code (ganguli-lab/Synaptic-Flow) initializes its version of `name`:
    Models/lottery_vgg.py and lottery_resnet.py: kaiming_normal_ (fan_in) on every conv / linear
    weight, zero biases, BatchNorm γ = 1; Models/tinyimagenet_resnet.py (its CIFAR ResNet-18):
    kaiming_normal_(mode='fan_out') on convs only, so the linear layer keeps PyTorch's default weight
    and bias; Models/mlp.py (fc, conv): no explicit init, PyTorch's defaults."""
    find(name)
    if re.fullmatch(r"vgg\d+|resnet20", name):
        return Init("kaiming_normal", "zeros", "ones")
    if name == "resnet18":
        return Init("kaiming_normal_fan_out", "torch_default", "ones", out="torch_default")
    if re.fullmatch(r"lenet.*", name):
        return Init("torch_default", "torch_default", "ones")
    return Init()


def network_order(model, input_shape, paths) -> list[str]:
    """`paths` (param leaf paths such as 'stage0_block0/conv_1/kernel') sorted by the order in which
    their modules are first called in a forward pass — the network's order, which the params dict
    (sorted by key: 'out' before 'stem') does not keep. Paths of modules never called keep their
    order at the end."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    seen = {}

    def record(next_fun, args, kwargs, context):
        seen.setdefault("/".join(context.module.path), len(seen))
        return next_fun(*args, **kwargs)

    def init():
        with nn.intercept_methods(record):
            return model.init(jax.random.PRNGKey(0), jnp.zeros((1, *input_shape)))

    jax.eval_shape(init)
    rank = lambda p: seen.get(p.rsplit("/", 1)[0], len(seen))  # noqa: E731
    return sorted(paths, key=lambda p: (rank(p), paths.index(p)))
