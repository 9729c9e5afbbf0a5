"""Initializers with PyTorch semantics under the names researchers use, and a model's init spec.

PyTorch (torch/nn/init.py, `_calculate_fan_in_and_fan_out`) takes fan_in = in_channels · kh · kw and
fan_out = out_channels · kh · kw for a conv weight, in · 1 and out · 1 for a linear one. A Flax kernel is
(kh, kw, in, out) or (in, out), and `variance_scaling` (in_axis=-2, out_axis=-1) multiplies the same
receptive field in, so the fans are equal. What differs is the distribution: PyTorch's
`kaiming_normal_` and `xavier_normal_` draw an untruncated normal; Flax's `he_normal` and
`glorot_normal` draw a normal truncated at 2σ (and rescaled), which has no tail at all. Here the
PyTorch names mean PyTorch's distributions; Flax's truncated ones keep explicit names.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.nn import initializers as I

from lth.errors import UserError
from lth.models.conv import IMPLS


def variance_scaling(scale: float, mode: str, distribution: str):
    """jax.nn.initializers.variance_scaling (in_axis=-2, out_axis=-1), drawn as one flat vector and
    reshaped. The values are bit-identical (JAX's threefry is partitionable: each entry's bits depend
    on its flat index only; tests/test_models_data.py checks), and XLA:CPU compiles a flat draw in a
    fraction of a second where a 4-D conv kernel's draw takes seconds (a VGG-11 init: ~30 s → ~1 s)."""
    def init(key, shape, dtype=jnp.float32):
        receptive = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        denominator = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = jnp.array(scale / denominator, dtype=dtype)
        flat = (math.prod(shape),)
        if distribution == "truncated_normal":
            stddev = jnp.sqrt(variance) / jnp.array(.87962566103423978, dtype)   # std of N(0,1) truncated to (-2, 2)
            return (jax.random.truncated_normal(key, -2, 2, flat, dtype) * stddev).reshape(shape)
        if distribution == "normal":
            return (jax.random.normal(key, flat, dtype) * jnp.sqrt(variance)).reshape(shape)
        return (jax.random.uniform(key, flat, dtype, -1) * jnp.sqrt(3 * variance)).reshape(shape)
    return init


# name → (initializer of a kernel, description). Sources: torch/nn/init.py and torch/nn/modules/{linear,conv}.py.
KERNEL = {
    "kaiming_normal": (variance_scaling(2.0, "fan_in", "normal"),
                       "PyTorch kaiming_normal_ (fan_in, relu): N(0, 2/fan_in), untruncated"),
    "kaiming_normal_fan_out": (variance_scaling(2.0, "fan_out", "normal"),
                               "PyTorch kaiming_normal_(mode='fan_out'): N(0, 2/fan_out), untruncated"),
    "kaiming_uniform": (variance_scaling(2.0, "fan_in", "uniform"),
                        "PyTorch kaiming_uniform_ (a=0): U(±√(6/fan_in))"),
    "xavier_normal": (variance_scaling(1.0, "fan_avg", "normal"),
                      "PyTorch xavier_normal_: N(0, 2/(fan_in+fan_out)), untruncated"),
    "xavier_uniform": (variance_scaling(1.0, "fan_avg", "uniform"),
                       "PyTorch xavier_uniform_: U(±√(6/(fan_in+fan_out)))"),
    "torch_default": (variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
                      "what a fresh nn.Linear / nn.Conv2d holds: kaiming_uniform_(a=√5) = U(±1/√fan_in)"),
    "kaiming_truncated_normal": (variance_scaling(2.0, "fan_in", "truncated_normal"),
                                 "Flax he_normal: normal truncated at 2σ, variance 2/fan_in"),
    "glorot_truncated_normal": (variance_scaling(1.0, "fan_avg", "truncated_normal"),
                                "Flax glorot_normal: normal truncated at 2σ, variance 2/(fan_in+fan_out)"),
    "lecun_normal": (variance_scaling(1.0, "fan_in", "truncated_normal"),
                     "Flax lecun_normal: normal truncated at 2σ, variance 1/fan_in (no PyTorch counterpart)"),
}
ALIASES = {"glorot_normal": "xavier_normal", "glorot_uniform": "xavier_uniform"}
BIAS = ("zeros", "torch_default")   # torch_default: U(±1/√fan_in), what nn.Linear / nn.Conv2d draw for biases
BN = ("ones", "uniform")            # BatchNorm γ: 1 (PyTorch's default) | U(0, 1) (OpenLTH models/bn_initializers.py)


def kernel_names() -> list[str]:
    return sorted([*KERNEL, *ALIASES])


def describe() -> list[str]:
    return ([f"{k}: {d}" for k, (_, d) in sorted(KERNEL.items())]
            + [f"{a}: alias of {t}" for a, t in sorted(ALIASES.items())])


def _uniform(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def torch_rand(key, shape, dtype=jnp.float32):
    """U(0, 1), as torch.rand."""
    return jax.random.uniform(key, shape, dtype)


@dataclasses.dataclass(frozen=True)
class Init:
    """How a model's parameters are drawn (config section `model`: init, bias_init, bn_init, out_init)."""

    kernel: str = "kaiming_normal"   # every conv / linear kernel (see KERNEL)
    bias: str = "zeros"              # conv / linear biases: zeros | torch_default
    bn: str = "ones"                 # BatchNorm γ: ones | uniform (β is always 0)
    out: str = ""                    # the output layer's kernel; '' = `kernel`
    conv_impl: str = "auto"          # not an init, but carried with it to every layer: how convs compute
                                     # (lth/models/conv.py: auto | xla | gemm)

    def __post_init__(self):
        for what, value in (("model.init", self.kernel), ("model.out_init", self.out or self.kernel)):
            if value not in KERNEL and value not in ALIASES:
                raise UserError(f"unknown {what} {value!r}; allowed: {', '.join(kernel_names())}")
        if self.bias not in BIAS:
            raise UserError(f"unknown model.bias_init {self.bias!r}; allowed: {', '.join(BIAS)}")
        if self.bn not in BN:
            raise UserError(f"unknown model.bn_init {self.bn!r}; allowed: {', '.join(BN)}")
        if self.conv_impl not in IMPLS:
            raise UserError(f"unknown model.conv_impl {self.conv_impl!r}; allowed: {', '.join(IMPLS)}")

    @classmethod
    def of(cls, model_cfg) -> "Init":
        """From a config's `model` section."""
        return cls(model_cfg.init, model_cfg.bias_init, model_cfg.bn_init, model_cfg.out_init,
                   model_cfg.get("conv_impl", "auto"))

    def kernel_fn(self, out: bool = False):
        name = (self.out or self.kernel) if out else self.kernel
        return KERNEL[ALIASES.get(name, name)][0]

    def bias_fn(self, fan_in: int):
        return I.zeros if self.bias == "zeros" else _uniform(1.0 / math.sqrt(fan_in))

    def bn_scale_fn(self):
        return I.ones if self.bn == "ones" else torch_rand

    def write(self, model_cfg) -> None:
        """Set a config's `model` init fields to this spec (the inverse of `of`; conv_impl untouched)."""
        model_cfg.init, model_cfg.bias_init, model_cfg.bn_init, model_cfg.out_init = (self.kernel, self.bias, self.bn,
                                                                                      self.out)

    def as_dict(self) -> dict:
        return {"init": self.kernel, "bias_init": self.bias, "bn_init": self.bn, "out_init": self.out or self.kernel}


def coerce(init) -> Init:
    """An Init from an Init or a kernel-init name."""
    return init if isinstance(init, Init) else Init(init)
