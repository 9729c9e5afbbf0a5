"""CIFAR VGG-11/13/16/19 with BatchNorm, as OpenLTH's models/cifar_vgg.py (and the SynFlow code's
Models/lottery_vgg.py, which copies it): 3×3 convs with bias (padding 1), BatchNorm, ReLU, four
max-pools, then AvgPool2d(2) on the 2×2 map (= the global mean at 32×32 inputs) and one
Linear(512·width → classes) named `out` (`fc` there)."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from lth.models.inits import Init
from lth.models.layers import batch_norm, conv, dense

PLANS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


def scaled(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


class VGG(nn.Module):
    plan: Sequence
    num_classes: int
    inits: Init
    width: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        i = 0
        for item in self.plan:
            if item == "M":
                x = nn.max_pool(x, (2, 2), (2, 2))
                continue
            x = conv(x, scaled(item, self.width), 3, self.inits, f"conv_{i}")
            x = nn.relu(batch_norm(x, self.inits, train, f"bn_{i}"))
            i += 1
        x = jnp.mean(x, axis=(1, 2))
        return dense(x, self.num_classes, self.inits, "out", out=True)


def vgg(match, num_classes, init, input_shape, width):
    if len(input_shape) != 3 or min(input_shape[:2]) < 16:
        raise ValueError(f"VGG needs image inputs (H, W, C) of at least 16×16, got shape {tuple(input_shape)}")
    return VGG(tuple(PLANS[int(match.group(1))]), num_classes, init, width)


PATTERNS = {r"vgg(11|13|16|19)": (vgg, "CIFAR VGG with BatchNorm: vgg11, vgg13, vgg16, vgg19")}


def synflow_init(name: str) -> Init:
    """The SynFlow code's Models/lottery_vgg.py: kaiming_normal_ (fan_in) on every conv / linear
    weight, zero biases, BatchNorm γ = 1."""
    return Init("kaiming_normal", "zeros", "ones")
