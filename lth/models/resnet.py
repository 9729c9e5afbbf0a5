"""CIFAR ResNets with BatchNorm.

ResNet-20: OpenLTH's models/cifar_resnet.py (He et al. 2016; stages 16/32/64, three blocks each;
also the SynFlow code's Models/lottery_resnet.py). ResNet-18: the SynFlow code's CIFAR ResNet-18,
Models/tinyimagenet_resnet.py (3×3 stem, no max-pool, stages 64/128/256/512, two blocks each).
Convs have no bias; a 1×1 conv + BN shortcut where the shape changes; global average pool; one
Linear `out` (`fc` there).

The SynFlow code puts an `Identity2d` (a per-channel weight fixed at 1) on identity shortcuts. It
is left out of its optimizer (Utils/generator.py `parameters` skips it) and out of the prunable set
unless `--prune-residual`, so it multiplies by 1 for ever: lth omits it. PyTorch's parameter count of
the SynFlow ResNet-18 includes those 1,024 constants (11,174,986 at 10 classes); lth's is 11,173,962.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from lth.models.inits import Init
from lth.models.layers import batch_norm, conv, dense
from lth.models.vgg import scaled


class Block(nn.Module):
    features: int
    stride: int
    inits: Init

    @nn.compact
    def __call__(self, x, train):
        y = conv(x, self.features, 3, self.inits, "conv_0", stride=self.stride, use_bias=False)
        y = nn.relu(batch_norm(y, self.inits, train, "bn_0"))
        y = conv(y, self.features, 3, self.inits, "conv_1", use_bias=False)
        y = batch_norm(y, self.inits, train, "bn_1")
        if self.stride != 1 or x.shape[-1] != self.features:
            x = conv(x, self.features, 1, self.inits, "shortcut", stride=self.stride, padding=0, use_bias=False)
            x = batch_norm(x, self.inits, train, "shortcut_bn")
        return nn.relu(y + x)


class ResNet(nn.Module):
    stages: Sequence[int]
    blocks: int
    num_classes: int
    inits: Init

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = conv(x, self.stages[0], 3, self.inits, "stem", use_bias=False)
        x = nn.relu(batch_norm(x, self.inits, train, "stem_bn"))
        for s, features in enumerate(self.stages):
            for b in range(self.blocks):
                stride = 2 if s > 0 and b == 0 else 1
                x = Block(features, stride, self.inits, name=f"stage{s}_block{b}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return dense(x, self.num_classes, self.inits, "out", out=True)


def _check(input_shape):
    if len(input_shape) != 3 or min(input_shape[:2]) < 8:
        raise ValueError(f"ResNet needs image inputs (H, W, C) of at least 8×8, got shape {tuple(input_shape)}")


def resnet20(match, num_classes, init, input_shape, width):
    _check(input_shape)
    return ResNet(tuple(scaled(c, width) for c in (16, 32, 64)), 3, num_classes, init)


def resnet18(match, num_classes, init, input_shape, width):
    _check(input_shape)
    return ResNet(tuple(scaled(c, width) for c in (64, 128, 256, 512)), 2, num_classes, init)


PATTERNS = {
    r"resnet20": (resnet20, "CIFAR ResNet-20 (16/32/64, OpenLTH)"),
    r"resnet18": (resnet18, "CIFAR ResNet-18 (64/128/256/512, SynFlow code)"),
}


def synflow_init(name: str) -> Init:
    """The SynFlow code's inits: Models/lottery_resnet.py (resnet20): kaiming_normal_ (fan_in) on
    every conv / linear weight, zero biases, BatchNorm γ = 1; Models/tinyimagenet_resnet.py (its CIFAR
    ResNet-18): kaiming_normal_(mode='fan_out') on convs only, so the linear layer keeps PyTorch's
    default weight and bias."""
    if name == "resnet18":
        return Init("kaiming_normal_fan_out", "torch_default", "ones", out="torch_default")
    return Init("kaiming_normal", "zeros", "ones")
