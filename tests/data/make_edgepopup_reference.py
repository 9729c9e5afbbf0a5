"""Writes tests/data/edgepopup_reference.npz: three edge-popup steps computed by the reference's own
code, allenai/hidden-networks, for tests/test_supermask.py. Copied verbatim below: utils/conv_type.py
GetSubnet and SubnetConv, utils/builder.py `_init_conv`'s signed_constant branch (mode fan_in,
nonlinearity relu, scale_fan off); main.py's freeze_model_weights (utils/net_utils.py) and
get_optimizer (SGD over the parameters that still need gradients, weight decay on them). The
network is models/frankle.py's FC at a small size: 1×1 SubnetConvs without bias 20 → 12 → 8 → 5, ReLU
between, prune_rate (the kept fraction k) 0.5; SGD 0.1, momentum 0.9, weight decay 1e-4; one fixed
batch of 16, cross entropy. Stored in lth's layouts (dense kernels [in, out]).

Run once, in a scratch venv with torch:  python tests/data/make_edgepopup_reference.py
"""
import math
import os

import numpy as np
import torch
import torch.autograd as autograd
import torch.nn as nn
import torch.nn.functional as F

K, WIDTHS, STEPS = 0.5, (20, 12, 8, 5), 3


# ----- utils/conv_type.py (verbatim) -----
class GetSubnet(autograd.Function):
    @staticmethod
    def forward(ctx, scores, k):
        # Get the subnetwork by sorting the scores and using the top k%
        out = scores.clone()
        _, idx = scores.flatten().sort()
        j = int((1 - k) * scores.numel())

        # flat_out and out access the same memory.
        flat_out = out.flatten()
        flat_out[idx[:j]] = 0
        flat_out[idx[j:]] = 1

        return out

    @staticmethod
    def backward(ctx, g):
        # send the gradient g straight-through on the backward pass.
        return g, None


class SubnetConv(nn.Conv2d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)

        self.scores = nn.Parameter(torch.Tensor(self.weight.size()))
        nn.init.kaiming_uniform_(self.scores, a=math.sqrt(5))

    def set_prune_rate(self, prune_rate):
        self.prune_rate = prune_rate

    @property
    def clamped_scores(self):
        return self.scores.abs()

    def forward(self, x):
        subnet = GetSubnet.apply(self.clamped_scores, self.prune_rate)
        w = self.weight * subnet
        x = F.conv2d(
            x, w, self.bias, self.stride, self.padding, self.dilation, self.groups
        )
        return x


# ----- utils/builder.py _init_conv, init == "signed_constant" (verbatim, args inlined) -----
def init_signed_constant(conv, mode="fan_in", nonlinearity="relu"):
    fan = nn.init._calculate_correct_fan(conv.weight, mode)
    gain = nn.init.calculate_gain(nonlinearity)
    std = gain / math.sqrt(fan)
    conv.weight.data = conv.weight.data.sign() * std


torch.manual_seed(0)
layers = []
for a, b in zip(WIDTHS[:-1], WIDTHS[1:]):
    c = SubnetConv(a, b, kernel_size=1, bias=False)
    init_signed_constant(c)
    c.set_prune_rate(K)
    layers.append(c)
model = nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2])
for m in model.modules():   # utils/net_utils.py freeze_model_weights
    if hasattr(m, "weight") and m.weight is not None:
        m.weight.requires_grad = False
opt = torch.optim.SGD([{"params": [], "weight_decay": 1e-4},
                       {"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": 1e-4}],
                      0.1, momentum=0.9, weight_decay=1e-4, nesterov=False)
rng = np.random.default_rng(0)
x = rng.standard_normal((16, WIDTHS[0])).astype(np.float32)
y = rng.integers(0, WIDTHS[-1], 16)


def lth(t):
    return t.detach().numpy()[:, :, 0, 0].T.copy()


out = {"x": x, "y": y, "k": np.float32(K)}
for i, c in enumerate(layers):
    out[f"weight:{i}"] = lth(c.weight)
    out[f"scores:0:{i}"] = lth(c.scores)
for step in range(STEPS):
    logits = model(torch.tensor(x)[:, :, None, None]).squeeze()
    loss = F.cross_entropy(logits, torch.tensor(y))
    opt.zero_grad()
    loss.backward()
    opt.step()
    out[f"loss:{step}"] = np.float32(loss.item())
    for i, c in enumerate(layers):
        out[f"scores:{step + 1}:{i}"] = lth(c.scores)
        assert c.weight.grad is None
np.savez_compressed(os.path.join(os.path.dirname(os.path.abspath(__file__)), "edgepopup_reference.npz"), **out)
print("wrote edgepopup_reference.npz")
