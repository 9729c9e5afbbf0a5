"""Stored PyTorch reference for an epoch whose last batch is partial (data.drop_last false,
tests/test_fidelity.py): OpenLTH's datasets/base.py DataLoader keeps torch's default drop_last=False,
so an epoch of N examples at batch B is ceil(N / B) iterations and the last batch holds N mod B.

Run once by hand in the scratch torch environment of make_torch_reference.py:

    /tmp/torchenv/bin/python tests/data/make_partial_batch_reference.py   # writes partial_batch_reference.npz

The VGG-11-BN of make_torch_reference.py (1/16 width, weights and BatchNorm buffers from its `fill`)
trains one epoch of N = 10 examples at batch 4 (batches of 4, 4 and 2, in order) with SGD (lr 0.05,
momentum 0.9, weight decay 5e-4). Stored: each step's loss (CrossEntropyLoss, the mean over the
batch's real examples), every parameter and the BatchNorm running statistics after the epoch
(BatchNorm2d's batch statistics, and its unbiased running-variance update, over the 2 examples of
the last batch)."""
from __future__ import annotations

import os

import numpy as np

import make_torch_reference as R

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "partial_batch_reference.npz")
MODEL, N, BATCH = "vgg11", 10, 4


def data():
    """(x NCHW float32, y int64): N examples, seeded."""
    rng = np.random.default_rng([R.SEED, 11])
    return rng.standard_normal((N, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, N).astype(np.int64)


def main():
    import torch
    import torch.nn.functional as F
    torch.use_deterministic_algorithms(True)
    model = R.build(MODEL)
    R.load_filled(model)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, y = map(torch.from_numpy, data())
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH, shuffle=False)
    out, losses = {}, []
    for xb, yb in loader:          # drop_last=False: 4, 4, 2
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert len(losses) == -(-N // BATCH)
    out["losses"] = np.asarray(losses, np.float32)
    for name, t in model.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            out[name] = t.detach().numpy()
    out["meta/torch_version"] = np.asarray(torch.__version__)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT}: {len(out)} arrays (torch {torch.__version__}), losses {losses}")


if __name__ == "__main__":
    main()
