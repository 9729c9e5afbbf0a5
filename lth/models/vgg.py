"""CIFAR VGG-11/13/16/19 with BatchNorm (OpenLTH / SynFlow variant): 3×3 convs with bias, BN, ReLU,
four max-pools, global average pool, one Dense(512·width → classes)."""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

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
    kernel_init: Callable
    width: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        i = 0
        for item in self.plan:
            if item == "M":
                x = nn.max_pool(x, (2, 2), (2, 2))
                continue
            x = nn.Conv(scaled(item, self.width), (3, 3), padding="SAME", kernel_init=self.kernel_init, name=f"conv_{i}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=f"bn_{i}")(x)
            x = nn.relu(x)
            i += 1
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="out")(x)


def vgg(match, num_classes, kernel_init, input_shape, width):
    if len(input_shape) != 3 or min(input_shape[:2]) < 16:
        raise ValueError(f"VGG needs image inputs (H, W, C) of at least 16×16, got shape {tuple(input_shape)}")
    return VGG(tuple(PLANS[int(match.group(1))]), num_classes, kernel_init, width)


PATTERNS = {r"vgg(11|13|16|19)": (vgg, "CIFAR VGG with BatchNorm: vgg11, vgg13, vgg16, vgg19")}
