"""LeNet-300-100-style MLPs (any hidden widths) and the convolutional LeNet-5.

The MLP is OpenLTH's `mnist_lenet_N1_N2...` (models/mnist_lenet.py in facebookresearch/open_lth):
flatten, Linear + ReLU per hidden width, Linear output (`fc` there, `out` here), biases everywhere.
LeNet-5 is the classic one (LeCun et al. 1998, with ReLU and max-pooling): conv(6, 5×5, pad 2) →
maxpool 2 → conv(16, 5×5) → maxpool 2 → 120 → 84 → classes."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from lth.models.inits import Init
from lth.models.layers import conv, dense


class MLP(nn.Module):
    """Fully connected ReLU network: flatten, hidden layers `fc_i`, output layer `out`."""

    SHRINK = "units"   # lth.compression.shrink's rule: dead hidden units removed

    hidden: Sequence[int]
    num_classes: int
    inits: Init

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.hidden):
            x = nn.relu(dense(x, width, self.inits, f"fc_{i}"))
        return dense(x, self.num_classes, self.inits, "out", out=True)


class LeNet5(nn.Module):
    SHRINK = "units"   # lth.compression.shrink's rule: dead filters and units removed

    num_classes: int
    inits: Init
    widths: Sequence[int] = (6, 16, 120, 84)   # conv_0, conv_1 filters, fc_0, fc_1 units (lth.shrink narrows them)

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.ndim == 3:
            x = x[..., None]
        c0, c1, f0, f1 = self.widths
        x = nn.relu(conv(x, c0, 5, self.inits, "conv_0", padding=2))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(conv(x, c1, 5, self.inits, "conv_1", padding=0))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(dense(x, f0, self.inits, "fc_0"))
        x = nn.relu(dense(x, f1, self.inits, "fc_1"))
        return dense(x, self.num_classes, self.inits, "out", out=True)


def _no_bn(init):
    if init.bn != "ones":
        raise ValueError(f"has no BatchNorm, so model.bn_init {init.bn!r} does not apply; allowed: ones")


def lenet_mlp(match, num_classes, init, input_shape, width):
    _no_bn(init)
    return MLP(tuple(max(1, round(int(w) * width)) for w in match.group(1).split("_")), num_classes, init)


def lenet5(match, num_classes, init, input_shape, width):
    _no_bn(init)
    if len(input_shape) not in (2, 3) or min(input_shape[:2]) < 16:
        raise ValueError(f"lenet5 needs image inputs of at least 16×16 (H, W[, C]), got shape {tuple(input_shape)}")
    return LeNet5(num_classes, init)


PATTERNS = {
    r"lenet_(\d+(?:_\d+)*)": (lenet_mlp, "MLP with the given hidden widths, e.g. lenet_300_100"),
    r"lenet5": (lenet5, "convolutional LeNet-5 (image inputs)"),
}


def synflow_init(name: str) -> Init:
    """The SynFlow code's Models/mlp.py (fc, conv): no explicit init, PyTorch's defaults."""
    return Init("torch_default", "torch_default", "ones")
