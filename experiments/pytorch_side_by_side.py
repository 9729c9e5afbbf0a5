"""The PyTorch side of the speed table in the README (run by hand, in a scratch environment with a
CPU torch; lth never imports torch):

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python experiments/pytorch_side_by_side.py     # then, in the same hour:
    .venv/bin/lth bench --model vgg16 resnet20 lenet_300_100 --replicates 1 --seconds 5
    .venv/bin/lth bench --model lenet_300_100 --batch-size 128 --replicates 1 --seconds 5
    .venv/bin/lth bench --synflow

Train steps: the references' models (restated in tests/data/make_torch_reference.py) at full width,
SGD momentum 0.9 + weight decay, cross-entropy, random CIFAR/MNIST-shaped batches. SynFlow: the
SynFlow code's loop (Pruners/pruners.py SynFlow.score + Pruner._global_mask, float32, 100 rounds,
exponential schedule to 10^3) on its VGG-16-BN (Models/lottery_vgg.py init).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data"))
import make_torch_reference as R  # noqa: E402


def steps_per_s(model, x, y, seconds=5.0):
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


def synflow_seconds(rounds=100, log10=3.0):
    import torch
    import torch.nn as nn

    R.WIDTH.update(vgg16=1.0, resnet18=1.0)
    model = R.build("vgg16")
    for m in model.modules():   # Models/lottery_vgg.py _initialize_weights
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    model.eval()
    params = [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    masks = [torch.ones_like(p) for p in params]
    t0 = time.perf_counter()
    for r in range(rounds):
        sparse = (10 ** -log10) ** ((r + 1) / rounds)
        with torch.no_grad():
            signs = {k: torch.sign(v) for k, v in model.state_dict().items()}
            for v in model.state_dict().values():
                v.abs_()
            for p, m in zip(params, masks):
                p.mul_(m)
        model.zero_grad()
        torch.sum(model(torch.ones(1, 3, 32, 32))).backward()
        scores = [torch.clone(p.grad * p).detach().abs_() for p in params]
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.mul_(signs[k])
        flat = torch.cat([s.flatten() for s in scores])
        k = int((1.0 - sparse) * flat.numel())
        threshold, _ = torch.kthvalue(flat, k)
        masks = [torch.where(s <= threshold, torch.zeros_like(s), torch.ones_like(s)) for s in scores]
    return time.perf_counter() - t0, int(sum(m.sum() for m in masks)), min(int(m.sum()) for m in masks)


def main():
    import torch

    rng = np.random.default_rng(0)
    R.WIDTH.update(vgg16=1.0, resnet18=1.0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, batch in (("vgg16", 128), ("resnet20", 128), ("lenet_300_100", 128), ("lenet_300_100", 60)):
        shape, classes = R.MODELS[name]
        x = torch.from_numpy(rng.standard_normal((batch, *shape)).astype(np.float32))
        y = torch.from_numpy(rng.integers(0, classes, batch))
        sps = steps_per_s(R.build(name), x, y)
        print(f"{name} batch {batch}: {sps:.3f} steps/s = {sps * batch:.0f} examples/s", flush=True)
    total, kept, fewest = synflow_seconds()
    print(f"SynFlow VGG-16 100 rounds to 10^3 (float32): {total:.1f} s; kept {kept:,}, fewest in a layer {fewest}")


if __name__ == "__main__":
    main()
