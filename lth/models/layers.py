"""Layers with PyTorch semantics, shared by the vision models: dense and conv layers whose kernel and
bias inits follow an `Init` (bias bounds need the layer's fan_in), and BatchNorm as torch's
BatchNorm2d computes it."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from lth.models.conv import conv2d
from lth.models.inits import Init


def dense(x, features: int, init: Init, name: str, out: bool = False):
    """nn.Linear(x.shape[-1], features) applied to x; `out` marks the output layer (model.out_init)."""
    return nn.Dense(features, kernel_init=init.kernel_fn(out), bias_init=init.bias_fn(x.shape[-1]), name=name)(x)


class Conv(nn.Module):
    """nn.Conv2d on NHWC inputs: params `kernel` (kh, kw, C, features) and `bias`; computed by
    lth.models.conv (`impl`: xla | gemm | auto)."""

    features: int
    kernel: int
    stride: int
    pad: int
    use_bias: bool
    kernel_init: Callable
    bias_init: Callable
    impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        w = self.param("kernel", self.kernel_init, (self.kernel, self.kernel, x.shape[-1], self.features))
        y = conv2d(x, w if w.dtype == x.dtype else w.astype(x.dtype), self.stride, self.pad, self.impl)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,)).astype(x.dtype)
        return y


def conv(x, features: int, kernel: int, init: Init, name: str, stride: int = 1, padding=None, use_bias: bool = True):
    """nn.Conv2d(C, features, kernel, stride, padding) on NHWC x; padding=None pads kernel // 2
    (same size at stride 1)."""
    pad = kernel // 2 if padding is None else padding
    return Conv(features, kernel, stride, pad, use_bias, init.kernel_fn(), init.bias_fn(x.shape[-1] * kernel * kernel),
                init.conv_impl, name=name)(x)


# Per-example weights (0 / 1) of the batch being traced: a partial last batch padded to the full
# shape (lth.train, data.drop_last false). Set around the model's apply in the train step, read by
# BatchNorm while it is traced, so the models' signatures need not carry it.
_EXAMPLE_WEIGHTS = contextvars.ContextVar("example_weights", default=None)


@contextlib.contextmanager
def example_weights(weight):
    token = _EXAMPLE_WEIGHTS.set(weight)
    try:
        yield
    finally:
        _EXAMPLE_WEIGHTS.reset(token)


def input_shape(model, shape) -> tuple:
    """The shape of one input `model` takes when the data's inputs have `shape`: the same, except for a
    BERT masked-LM head with gathered predictions (`mlm_predictions` K > 0), whose inputs carry K
    positions after the ids (lth/training/objective.py MaskedLM.prepare). Every model init goes
    through this: a zero input of the data's shape would hand that head no ids where K >= T."""
    k = int(getattr(model, "mlm_predictions", 0) or 0)
    shape = tuple(shape)
    return (*shape[:-1], shape[-1] + k) if k else shape


class BatchNorm(nn.Module):
    """torch.nn.BatchNorm2d over the last axis: normalize with the biased batch variance in training,
    and update the running variance with the *unbiased* one (n / (n - 1)), momentum 0.1 in PyTorch's
    convention (new = 0.9 · old + 0.1 · batch), eps 1e-5. flax.linen.BatchNorm keeps the biased
    variance, so its running statistics drift from PyTorch's. Params scale/bias, batch_stats mean/var.
    Under `example_weights(w)` the batch statistics (and n) are over the examples weighing 1 only."""

    use_running_average: bool
    scale_init: Callable = nn.initializers.ones
    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        scale = self.param("scale", self.scale_init, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        if self.use_running_average:
            mean, var = ra_mean.value.astype(x.dtype), ra_var.value.astype(x.dtype)
        else:
            axes = tuple(range(x.ndim - 1))
            w = _EXAMPLE_WEIGHTS.get()
            if w is None:
                mean = jnp.mean(x, axes)
                var = jnp.mean(jnp.square(x - mean), axes)
                n = x.size // c
                unbias = n / max(n - 1, 1)
            else:
                w = w.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
                n = jnp.sum(w) * (x.size // (c * x.shape[0]))
                mean = jnp.sum(x * w, axes) / n
                var = jnp.sum(jnp.square(x - mean) * w, axes) / n
                unbias = n / jnp.maximum(n - 1, 1)
            if not self.is_initializing():
                m = self.momentum
                ra_mean.value = ((1 - m) * ra_mean.value + m * mean).astype(ra_mean.value.dtype)
                ra_var.value = ((1 - m) * ra_var.value + m * var * unbias).astype(ra_var.value.dtype)
        return (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale.astype(x.dtype)) + bias.astype(x.dtype)


def batch_norm(x, init: Init, train: bool, name: str):
    return BatchNorm(not train, init.bn_scale_fn(), name=name)(x)
