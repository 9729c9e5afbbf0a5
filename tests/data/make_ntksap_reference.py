"""Writes tests/data/ntksap_reference.npz: NTK-SAP scores computed by the reference's own code,
YiteWang/NTK-SAP (commit e23682b) Pruners/pruners.py `NTKSAP.score`, on a small VGG with BatchNorm
(lth's vgg11 at width 1/16: the same layers, names and order), for tests/test_ntksap.py.

The reference draws its randomness from torch's global RNG: a fresh init per sample
(`model._initialize_weights()`), the Gaussian input (`torch.randn_like(data)`) and the weight noise
(`torch.randn_like(p)` in `perturb`). Here each draw is seeded numpy data, handed to the reference in
that order (its `_initialize_weights` loads the sample's kernels, with BatchNorm γ = 1, β = 0 as the
reference's; `torch.randn_like` pops the next stored tensor), and stored in lth's layouts so that the
test feeds lth the same draws. Masks start partly pruned; two passes (ntksap_R = 2) over a loader of
two batches (6 and 4 inputs): four samples; train mode (--prune-train-mode True).

Run once, in a scratch venv with torch:
    python tests/data/make_ntksap_reference.py /path/to/a/checkout/of/YiteWang/NTK-SAP
"""
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, sys.argv[1])
from Layers import layers  # noqa: E402  (the reference's masked layers)
from Pruners.pruners import NTKSAP  # noqa: E402
from Utils import generator  # noqa: E402

PLAN = [4, "M", 8, "M", 16, 16, "M", 32, 32, "M", 32, 32]   # vgg11 at width 1/16
CLASSES, EPS, R, BATCHES = 10, 0.01, 2, (6, 4)
rng = np.random.default_rng(0)


class TinyVGG(nn.Module):
    def __init__(self):
        super().__init__()
        mods, c = [], 3
        for item in PLAN:
            if item == "M":
                mods.append(nn.MaxPool2d(2, 2))
            else:
                mods += [layers.Conv2d(c, item, 3, padding=1), layers.BatchNorm2d(item), nn.ReLU()]
                c = item
        self.features = nn.Sequential(*mods)
        self.fc = layers.Linear(c, CLASSES)
        self.inits = []   # the samples' kernels, in draw order

    def forward(self, x):
        return self.fc(nn.functional.avg_pool2d(self.features(x), 2).flatten(1))

    def _initialize_weights(self):
        kernels = self.inits.pop(0)
        for (m, p), w in zip(generator.masked_parameters(self), kernels):
            p.data = torch.tensor(w)
        for mod in self.modules():
            if isinstance(mod, nn.BatchNorm2d):
                nn.init.constant_(mod.weight, 1)
                nn.init.constant_(mod.bias, 0)


def to_lth(w):
    """torch [out, in, kh, kw] → Flax [kh, kw, in, out]; [out, in] → [in, out]."""
    return w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T


model = TinyVGG()
names = [f"conv_{i}" for i in range(sum(1 for p in PLAN if p != "M"))] + ["out"]
shapes = [tuple(p.shape) for _, p in generator.masked_parameters(model)]
out = {}
for name, mod in zip(names, [m for m in model.modules() if isinstance(m, (layers.Conv2d, layers.Linear))]):
    b = rng.normal(0, 0.05, mod.bias.shape).astype(np.float32)   # biases: never redrawn by the reference
    mod.bias.data = torch.tensor(b)
    out[f"bias:{name}"] = b
for name, (m, p) in zip(names, generator.masked_parameters(model)):
    keep = (rng.random(p.shape) > 0.3).astype(np.float32)
    m.copy_(torch.tensor(keep))
    out[f"mask:{name}"] = to_lth(keep).astype(bool)

queue = []
samples = [(r, b) for r in range(R) for b in BATCHES]
for s, (_, b) in enumerate(samples):
    kernels = [(rng.standard_normal(sh) * np.sqrt(2.0 / np.prod(sh[1:]))).astype(np.float32) for sh in shapes]
    x = rng.standard_normal((b, 3, 32, 32)).astype(np.float32)
    zs = [rng.standard_normal(sh).astype(np.float32) for sh in shapes]
    model.inits.append(kernels)
    queue += [x, *zs]
    out[f"x:{s}"] = x.transpose(0, 2, 3, 1)
    for name, w, z in zip(names, kernels, zs):
        out[f"theta:{s}:{name}"] = to_lth(w)
        out[f"z:{s}:{name}"] = to_lth(z)


def randn_like(t, **kw):
    a = queue.pop(0)
    assert a.shape == tuple(t.shape), (a.shape, t.shape)
    return torch.tensor(a)


torch.randn_like = randn_like
loader = [(torch.zeros(b, 3, 32, 32), torch.zeros(b, dtype=torch.long)) for b in BATCHES]
pruner = NTKSAP(generator.masked_parameters(model), ntksap_epsilon=EPS, ntksap_R=R)
model.train()                                        # prune_loop with --prune-train-mode True
pruner.score(model, None, loader, "cpu")
assert not queue and not model.inits
for name, (_, p) in zip(names, pruner.masked_parameters):
    out[f"score:{name}"] = to_lth(pruner.scores[id(p)].numpy())
out["epsilon"] = np.float32(EPS)
out["samples"] = np.int32(len(samples))
np.savez_compressed(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ntksap_reference.npz"), **out)
print("wrote ntksap_reference.npz:", len(samples), "samples,", len(names), "layers")
