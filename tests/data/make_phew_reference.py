"""Writes tests/data/phew_reference.npz: PHEW masks built by the reference's own code,
ShreyasMalakarjunPatil/PHEW (commit c4a0d40) PHEW/phew.py `phew_masks`, for tests/test_phew.py.

Two networks whose weights (ndim > 1, in parameter order) are all PHEW reads: an MLP 12-10-8-5 and
a conv chain (conv 3→4 3×3, max-pool, conv 4→6 3×3, max-pool, flatten 6·2·2 = 24 in torch's (C, H, W)
order, dense 24→7, dense 7→5), Kaiming-normal inits from a fixed seed. The reference draws from
numpy's and Python's global generators: both are seeded (numpy.random.seed(s), random.seed(s)) before
each call, so lth's RandomState(s) and random.Random(s) give the same stream. Kernels are stored in
lth's layouts (conv [kh, kw, in, out], dense [in, out], the dense after the conv re-ordered to lth's
(H, W, C) flatten), masks likewise.

Run once, in a scratch venv with torch:
    python tests/data/make_phew_reference.py /path/to/a/checkout/of/ShreyasMalakarjunPatil/PHEW
"""
import os
import random
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, sys.argv[1])
from PHEW import phew as P  # noqa: E402

torch.manual_seed(0)
MLP = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 5))
CONV = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
                     nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(24, 7), nn.ReLU(), nn.Linear(7, 5))
for net in (MLP, CONV):
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)
HW, C = 4, 6    # the conv chain's last map: 2 × 2 of 6 channels


def to_lth(w, after_conv=False):
    if w.ndim == 4:
        return w.transpose(2, 3, 1, 0)
    if after_conv:   # torch column c·HW + r → lth row r·C + c
        w = w.reshape(w.shape[0], C, HW).transpose(0, 2, 1).reshape(w.shape[0], -1)
    return w.T


out = {}
for name, net in (("mlp", MLP), ("conv", CONV)):
    weights = [p.detach().numpy().copy() for p in net.parameters() if p.ndim != 1]
    after = [i > 0 and weights[i - 1].ndim == 4 and w.ndim == 2 for i, w in enumerate(weights)]
    for i, w in enumerate(weights):
        out[f"{name}:w{i}"] = to_lth(w, after[i])
    for prune_perc, seed, conserved in ((50.0, 0, False), (80.0, 1, False), (70.0, 2, True)):
        if conserved and name == "mlp":
            continue
        np.random.seed(seed)
        random.seed(seed)
        masks, _ = P.phew_masks(net, prune_perc, verbose=False, kernel_conserved=conserved)
        tag = f"{name}:{prune_perc:g}:{seed}:{int(conserved)}"
        for i, m in enumerate(masks):
            out[f"{tag}:m{i}"] = to_lth(m.numpy(), after[i]).astype(bool)
np.savez_compressed(os.path.join(os.path.dirname(os.path.abspath(__file__)), "phew_reference.npz"), **out)
print("wrote phew_reference.npz")
