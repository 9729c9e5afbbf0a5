"""LeNet-300-100-style MLPs (any hidden widths) and the convolutional LeNet-5."""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn


class MLP(nn.Module):
    """Fully connected ReLU network: flatten, hidden layers `fc_i`, output layer `out`."""

    hidden: Sequence[int]
    num_classes: int
    kernel_init: Callable

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.hidden):
            x = nn.relu(nn.Dense(width, kernel_init=self.kernel_init, name=f"fc_{i}")(x))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="out")(x)


class LeNet5(nn.Module):
    """LeNet-5: conv(6,5×5) → maxpool → conv(16,5×5) → maxpool → 120 → 84 → classes."""

    num_classes: int
    kernel_init: Callable

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.ndim == 3:
            x = x[..., None]
        x = nn.relu(nn.Conv(6, (5, 5), padding="SAME", kernel_init=self.kernel_init, name="conv_0")(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(16, (5, 5), padding="VALID", kernel_init=self.kernel_init, name="conv_1")(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(120, kernel_init=self.kernel_init, name="fc_0")(x))
        x = nn.relu(nn.Dense(84, kernel_init=self.kernel_init, name="fc_1")(x))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="out")(x)


def lenet_mlp(match, num_classes, kernel_init, input_shape, width):
    return MLP(tuple(max(1, round(int(w) * width)) for w in match.group(1).split("_")), num_classes, kernel_init)


def lenet5(match, num_classes, kernel_init, input_shape, width):
    if len(input_shape) not in (2, 3) or min(input_shape[:2]) < 16:
        raise ValueError(f"lenet5 needs image inputs of at least 16×16 (H, W[, C]), got shape {tuple(input_shape)}")
    return LeNet5(num_classes, kernel_init)


PATTERNS = {
    r"lenet_(\d+(?:_\d+)*)": (lenet_mlp, "MLP with the given hidden widths, e.g. lenet_300_100"),
    r"lenet5": (lenet5, "convolutional LeNet-5 (image inputs)"),
}

