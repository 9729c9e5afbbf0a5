"""CIFAR ResNets with BatchNorm: ResNet-20 (He et al. 2016, OpenLTH; stages 16/32/64, three blocks
each) and ResNet-18 (3×3 stem, no max-pool, stages 64/128/256/512, two blocks each, as in the
SynFlow code). Convs have no bias; 1×1 conv + BN shortcuts where the shape changes.

ResNet-18's identity shortcuts carry a per-channel scale initialized to 1 (`identity_scale`), like
the SynFlow reference's Identity2d layers: it is what makes its parameter count 11,174,986. It is
not a kernel, so it is not prunable by default."""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from lth.models.vgg import scaled


def bn(train, name):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class Block(nn.Module):
    features: int
    stride: int
    kernel_init: Callable
    identity_scale: bool = False

    @nn.compact
    def __call__(self, x, train):
        y = nn.Conv(self.features, (3, 3), self.stride, padding=1, use_bias=False, kernel_init=self.kernel_init, name="conv_0")(x)
        y = nn.relu(bn(train, "bn_0")(y))
        y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, kernel_init=self.kernel_init, name="conv_1")(y)
        y = bn(train, "bn_1")(y)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), self.stride, use_bias=False, kernel_init=self.kernel_init, name="shortcut")(x)
            x = bn(train, "shortcut_bn")(x)
        elif self.identity_scale:
            x = x * self.param("identity_scale", nn.initializers.ones, (x.shape[-1],))
        return nn.relu(y + x)


class ResNet(nn.Module):
    stages: Sequence[int]
    blocks: int | Sequence[int]
    num_classes: int
    kernel_init: Callable
    identity_scale: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.stages[0], (3, 3), padding=1, use_bias=False, kernel_init=self.kernel_init, name="stem")(x)
        x = nn.relu(bn(train, "stem_bn")(x))
        blocks = [self.blocks] * len(self.stages) if isinstance(self.blocks, int) else self.blocks
        for s, (features, n) in enumerate(zip(self.stages, blocks)):
            for b in range(n):
                stride = 2 if s > 0 and b == 0 else 1
                x = Block(features, stride, self.kernel_init, self.identity_scale, name=f"stage{s}_block{b}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="out")(x)


def _check(input_shape):
    if len(input_shape) != 3 or min(input_shape[:2]) < 8:
        raise ValueError(f"ResNet needs image inputs (H, W, C) of at least 8×8, got shape {tuple(input_shape)}")


def resnet20(match, num_classes, kernel_init, input_shape, width):
    _check(input_shape)
    return ResNet(tuple(scaled(c, width) for c in (16, 32, 64)), 3, num_classes, kernel_init)


def resnet18(match, num_classes, kernel_init, input_shape, width):
    _check(input_shape)
    return ResNet(tuple(scaled(c, width) for c in (64, 128, 256, 512)), 2, num_classes, kernel_init, identity_scale=True)


PATTERNS = {
    r"resnet20": (resnet20, "CIFAR ResNet-20 (16/32/64, OpenLTH)"),
    r"resnet18": (resnet18, "CIFAR ResNet-18 (64/128/256/512, SynFlow code)"),
}
