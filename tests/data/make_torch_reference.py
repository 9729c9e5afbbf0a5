"""Stored PyTorch reference outputs for lth's vision models and initializers (tests/test_fidelity.py).

Run once by hand, with torch and numpy in a scratch environment outside the project (lth never
imports torch):

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python tests/data/make_torch_reference.py      # writes tests/data/torch_reference.npz

It restates the references' PyTorch models — OpenLTH's models/mnist_lenet.py (LeNet-300-100),
models/cifar_vgg.py (VGG-16-BN, VGG-11-BN), models/cifar_resnet.py (ResNet-20) and the SynFlow code's
Models/tinyimagenet_resnet.py (its CIFAR ResNet-18), plus the classic LeNet-5 — with plain torch.nn
layers (the SynFlow code's masked layers with all-ones masks compute the same). VGG-16 and ResNet-18
are built at 1/8 width, VGG-11 at 1/16, to keep the file small (the code path is the same at any width). Every
parameter and BatchNorm buffer is filled by `fill` (pure numpy, seeded by the tensor's name), which
the tests call too, so no weights are stored. For one fixed batch it stores: logits in eval mode and
in train mode, the mean cross-entropy loss, every parameter's gradient (train mode), BatchNorm
running statistics after that train-mode forward; for LeNet-5 the parameters after three steps of
SGD (momentum 0.9, Nesterov, weight decay 5e-4) and of Adam; statistics of PyTorch's own
initializers (torch/nn/init.py) over a few seeds; and the SynFlow code's GraSP scores
(Pruners/pruners.py class GraSP, restated in `SynFlowGraSP`) on the VGG-11-BN (conv biases, BatchNorm
γ/β and running statistics all non-trivial), dense and under the masks of `grasp_mask`.
"""
from __future__ import annotations

import os
import zlib

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.npz")
BATCH = 8
SEED = 1234
INIT_SEEDS = 4
INIT_SHAPES = {"conv": (64, 32, 3, 3), "linear": (300, 784)}   # PyTorch layouts (out, in[, kh, kw])
INIT_NAMES = ("kaiming_normal", "kaiming_normal_fan_out", "kaiming_uniform", "xavier_normal", "xavier_uniform",
              "torch_default")
# model → (input shape NCHW without batch, classes)
MODELS = {"lenet_300_100": ((1, 28, 28), 10), "lenet5": ((1, 28, 28), 10), "vgg16": ((3, 32, 32), 10),
          "resnet20": ((3, 32, 32), 10), "resnet18": ((3, 32, 32), 10), "vgg11": ((3, 32, 32), 10)}
WIDTH = {"vgg16": 0.125, "resnet18": 0.125, "vgg11": 0.0625}
GRASP_MODEL, GRASP_BATCHES = "vgg11", 2      # GraSP on the fixed batch split into 2 batches of 4


def fill(name: str, shape) -> np.ndarray:
    """The value of PyTorch tensor `name` (state_dict name, PyTorch layout): a pure function of the name."""
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
    shape = tuple(shape)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "weight" and len(shape) >= 2:             # conv / linear: N(0, 2 / fan_in)
        return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)
    if leaf == "weight":                                 # BatchNorm γ
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if leaf == "bias":
        return rng.uniform(-0.1, 0.1, shape).astype(np.float32)
    if leaf == "running_mean":
        return rng.normal(0.0, 0.1, shape).astype(np.float32)
    if leaf == "running_var":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    raise ValueError(name)


def batch(name: str):
    """(x NCHW float32, y int64) of the fixed batch for `name`."""
    shape, classes = MODELS[name]
    rng = np.random.default_rng([SEED, 7])
    return (rng.standard_normal((BATCH, *shape)).astype(np.float32),
            rng.integers(0, classes, BATCH).astype(np.int64))


def scaled(c, width):
    return max(1, int(round(c * width)))


def build(name):
    """The PyTorch restatement of the reference model `name`."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class LeNet(nn.Module):  # OpenLTH models/mnist_lenet.py
        def __init__(self, plan, outputs=10):
            super().__init__()
            layers, cur = [], 784
            for size in plan:
                layers.append(nn.Linear(cur, size))
                cur = size
            self.fc_layers = nn.ModuleList(layers)
            self.fc = nn.Linear(cur, outputs)

        def forward(self, x):
            x = x.view(x.size(0), -1)
            for layer in self.fc_layers:
                x = F.relu(layer(x))
            return self.fc(x)

    class LeNet5(nn.Module):  # classic LeNet-5 with ReLU and max-pooling
        def __init__(self, outputs=10):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
            self.fc1, self.fc2, self.fc = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, outputs)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = x.view(x.size(0), -1)
            return self.fc(F.relu(self.fc2(F.relu(self.fc1(x)))))

    class ConvModule(nn.Module):  # OpenLTH models/cifar_vgg.py
        def __init__(self, fi, fo):
            super().__init__()
            self.conv = nn.Conv2d(fi, fo, kernel_size=3, padding=1)
            self.bn = nn.BatchNorm2d(fo)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    class VGG(nn.Module):
        def __init__(self, plan, width, outputs=10):
            super().__init__()
            layers, filters = [], 3
            for spec in plan:
                if spec == "M":
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                else:
                    layers.append(ConvModule(filters, scaled(spec, width)))
                    filters = scaled(spec, width)
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(scaled(512, width), outputs)

        def forward(self, x):
            x = nn.AvgPool2d(2)(self.layers(x))
            return self.fc(x.view(x.size(0), -1))

    class Block(nn.Module):  # OpenLTH models/cifar_resnet.py
        def __init__(self, f_in, f_out, downsample=False):
            super().__init__()
            stride = 2 if downsample else 1
            self.conv1 = nn.Conv2d(f_in, f_out, kernel_size=3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(f_out)
            self.conv2 = nn.Conv2d(f_out, f_out, kernel_size=3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(f_out)
            if downsample or f_in != f_out:
                self.shortcut = nn.Sequential(nn.Conv2d(f_in, f_out, kernel_size=1, stride=2, bias=False),
                                              nn.BatchNorm2d(f_out))
            else:
                self.shortcut = nn.Sequential()

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += self.shortcut(x)
            return F.relu(out)

    class ResNet20(nn.Module):
        def __init__(self, plan, outputs=10):
            super().__init__()
            cur = plan[0][0]
            self.conv = nn.Conv2d(3, cur, kernel_size=3, stride=1, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(cur)
            blocks = []
            for si, (filters, n) in enumerate(plan):
                for bi in range(n):
                    blocks.append(Block(cur, filters, si > 0 and bi == 0))
                    cur = filters
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(plan[-1][0], outputs)

        def forward(self, x):
            out = F.relu(self.bn(self.conv(x)))
            out = self.blocks(out)
            out = F.avg_pool2d(out, out.size()[3])
            return self.fc(out.view(out.size(0), -1))

    class Identity2d(nn.Module):  # SynFlow Layers/layers.py: a per-channel weight fixed at 1 (never trained)
        def __init__(self, c):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(c, 1, 1))

        def forward(self, x):
            return x * self.weight

    class BasicBlock(nn.Module):  # SynFlow Models/tinyimagenet_resnet.py
        def __init__(self, cin, cout, stride=1):
            super().__init__()
            self.residual_function = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(cout))
            self.shortcut = Identity2d(cin)
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                                              nn.BatchNorm2d(cout))

        def forward(self, x):
            return nn.ReLU(inplace=True)(self.residual_function(x) + self.shortcut(x))

    class ResNet18(nn.Module):
        def __init__(self, width, outputs=10):
            super().__init__()
            c = [scaled(v, width) for v in (64, 128, 256, 512)]
            self.in_channels = c[0]
            self.conv1 = nn.Sequential(nn.Conv2d(3, c[0], kernel_size=3, padding=1, bias=False),
                                       nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True))
            self.conv2_x = self._make(c[0], 1)
            self.conv3_x = self._make(c[1], 2)
            self.conv4_x = self._make(c[2], 2)
            self.conv5_x = self._make(c[3], 2)
            self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(c[3], outputs)

        def _make(self, cout, stride):
            blocks = []
            for s in (stride, 1):
                blocks.append(BasicBlock(self.in_channels, cout, s))
                self.in_channels = cout
            return nn.Sequential(*blocks)

        def forward(self, x):
            x = self.conv5_x(self.conv4_x(self.conv3_x(self.conv2_x(self.conv1(x)))))
            return self.fc(self.avg_pool(x).view(x.size(0), -1))

    plan11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512]
    plan16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    return {"lenet_300_100": lambda: LeNet([300, 100]), "lenet5": LeNet5,
            "vgg16": lambda: VGG(plan16, WIDTH["vgg16"]), "resnet20": lambda: ResNet20([(16, 3), (32, 3), (64, 3)]),
            "resnet18": lambda: ResNet18(WIDTH["resnet18"]), "vgg11": lambda: VGG(plan11, WIDTH["vgg11"])}[name]()


def load_filled(model):
    import torch
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked") or (name.endswith("shortcut.weight") and t.ndim == 3):
                continue  # Identity2d stays at 1, as in the reference
            t.copy_(torch.from_numpy(fill(name, t.shape)))


def model_outputs(name, out):
    import torch
    import torch.nn.functional as F

    model = build(name)
    load_filled(model)
    x, y = map(torch.from_numpy, batch(name))
    model.eval()
    with torch.no_grad():
        out[f"{name}/logits_eval"] = model(x).numpy()
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    out[f"{name}/logits_train"] = logits.detach().numpy()
    out[f"{name}/loss"] = np.float32(loss.item())
    for pname, p in model.named_parameters():
        if p.grad is not None:
            out[f"{name}/grad/{pname}"] = p.grad.numpy()
    for bname, b in model.named_buffers():
        if bname.endswith(("running_mean", "running_var")):
            out[f"{name}/after_step/{bname}"] = b.numpy()


def optimizer_outputs(out):
    """LeNet-5 parameters after three steps of SGD (momentum 0.9, Nesterov, weight decay 5e-4, lr
    0.05) and of Adam (lr 1e-3), on the fixed batch."""
    import torch
    import torch.nn.functional as F

    for opt_name, make in (("sgd", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)),
                           ("adam", lambda p: torch.optim.Adam(p, lr=1e-3))):
        model = build("lenet5")
        load_filled(model)
        opt = make(model.parameters())
        x, y = map(torch.from_numpy, batch("lenet5"))
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        for pname, p in model.named_parameters():
            out[f"optim/{opt_name}/{pname}"] = p.detach().numpy()


def init_stats(out):
    """Per PyTorch initializer and shape: the std, and the fractions beyond 2σ and 3σ (σ = the
    sample's std), over INIT_SEEDS seeds; BatchNorm's U(0,1) (torch.rand) and nn.Linear's bias."""
    import torch
    import torch.nn as nn

    fns = {"kaiming_normal": lambda w: nn.init.kaiming_normal_(w),
           "kaiming_normal_fan_out": lambda w: nn.init.kaiming_normal_(w, mode="fan_out"),
           "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w),
           "xavier_normal": lambda w: nn.init.xavier_normal_(w),
           "xavier_uniform": lambda w: nn.init.xavier_uniform_(w),
           "torch_default": lambda w: nn.init.kaiming_uniform_(w, a=5 ** 0.5)}   # nn.Linear/Conv2d.reset_parameters
    for init in INIT_NAMES:
        for kind, shape in INIT_SHAPES.items():
            rows = []
            for seed in range(INIT_SEEDS):
                torch.manual_seed(seed)
                w = torch.empty(shape)
                fns[init](w)
                v = w.numpy().ravel()
                s = v.std()
                rows.append([s, np.mean(np.abs(v) > 2 * s), np.mean(np.abs(v) > 3 * s), np.abs(v).max() / s])
            out[f"init/{init}/{kind}"] = np.asarray(rows, np.float64)   # [seeds, (std, >2σ, >3σ, max/σ)]
    for kind, shape in INIT_SHAPES.items():
        rows = []
        for seed in range(INIT_SEEDS):
            torch.manual_seed(seed)
            layer = nn.Linear(shape[1], shape[0]) if kind == "linear" else nn.Conv2d(shape[1], shape[0], shape[2])
            v = layer.bias.detach().numpy()
            rows.append([v.std(), np.abs(v).max()])
        out[f"init/torch_default_bias/{kind}"] = np.asarray(rows, np.float64)    # [seeds, (std, max |b|)]
    torch.manual_seed(0)
    g = torch.rand(100_000).numpy()            # OpenLTH models/bn_initializers.py `uniform`
    out["init/bn_uniform"] = np.asarray([g.mean(), g.std(), g.min(), g.max()], np.float64)


def grasp_mask(name: str, shape) -> np.ndarray:
    """The mask (float32 0/1, PyTorch layout) of prunable weight `name` for the masked GraSP case:
    about 30% pruned, a pure function of the name."""
    rng = np.random.default_rng([SEED, 11, zlib.crc32(name.encode())])
    return (rng.uniform(size=tuple(shape)) >= 0.3).astype(np.float32)


def grasp_outputs(out):
    """The SynFlow code's GraSP scores (ganguli-lab/Synaptic-Flow Pruners/pruners.py, class GraSP),
    restated line by line: masked_parameters (Utils/generator.py with bias=False, batchnorm=False)
    are the Conv2d / Linear weights; the mask multiplies the weight in the forward pass as in its
    Layers/layers.py (here by a parametrization, so the leaf differentiated is the unmasked weight);
    the model is in eval mode (prune.py prune_loop with train_mode=False); the loss is
    nn.CrossEntropyLoss() (mean). Stored, dense and masked: the raw scores p.grad * p.data per weight
    and the normalization |Σ scores| + 1e-10 they are divided by (the scores the pruner keeps are
    raw / norm exactly). 'all_params' (dense) is the variant that differentiates every parameter
    (model.parameters(): conv / linear biases and BatchNorm γ/β too), which the reference does not."""
    import torch
    import torch.nn as nn
    from torch.nn.utils import parametrize

    class MaskMul(nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.register_buffer("mask", mask)

        def forward(self, w):
            return self.mask * w

    class SynFlowGraSP:  # Pruners/pruners.py class GraSP.score, verbatim but for `self.raw`, `self.norm`
        def __init__(self, masked_parameters):
            self.masked_parameters = list(masked_parameters)
            self.scores = {}
            self.temp = 200
            self.eps = 1e-10

        def score(self, model, loss, dataloader, device):
            stopped_grads = 0
            for batch_idx, (data, target) in enumerate(dataloader):
                data, target = data.to(device), target.to(device)
                output = model(data) / self.temp
                L = loss(output, target)
                grads = torch.autograd.grad(L, [p for (_, p) in self.masked_parameters], create_graph=False)
                flatten_grads = torch.cat([g.reshape(-1) for g in grads if g is not None])
                stopped_grads += flatten_grads
            for batch_idx, (data, target) in enumerate(dataloader):
                data, target = data.to(device), target.to(device)
                output = model(data) / self.temp
                L = loss(output, target)
                grads = torch.autograd.grad(L, [p for (_, p) in self.masked_parameters], create_graph=True)
                flatten_grads = torch.cat([g.reshape(-1) for g in grads if g is not None])
                gnorm = (stopped_grads * flatten_grads).sum()
                gnorm.backward()
            for _, p in self.masked_parameters:
                self.scores[id(p)] = torch.clone(p.grad * p.data).detach()
                p.grad.data.zero_()
            self.raw = {k: v.clone() for k, v in self.scores.items()}
            all_scores = torch.cat([torch.flatten(v) for v in self.scores.values()])
            norm = torch.abs(torch.sum(all_scores)) + self.eps
            self.norm = norm.item()
            for _, p in self.masked_parameters:
                self.scores[id(p)].div_(norm)

    x, y = map(torch.from_numpy, batch(GRASP_MODEL))
    n = x.shape[0] // GRASP_BATCHES
    loader = [(x[i * n:(i + 1) * n], y[i * n:(i + 1) * n]) for i in range(GRASP_BATCHES)]
    for case in ("dense", "masked", "all_params"):
        model = build(GRASP_MODEL)
        load_filled(model)
        masked = []   # (torch name, mask, weight leaf): Utils/generator.py masked_parameters(model)
        for mname, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                shape = module.weight.shape
                m = grasp_mask(f"{mname}.weight", shape) if case == "masked" else np.ones(shape, np.float32)
                m = torch.from_numpy(m)
                parametrize.register_parametrization(module, "weight", MaskMul(m))
                masked.append((f"{mname}.weight", m, module.parametrizations.weight.original))
        model.eval()
        if case == "all_params":   # the wrong variant: every parameter differentiated (biases, BatchNorm γ/β)
            pruner = SynFlowGraSP((None, p) for p in model.parameters())
        else:
            pruner = SynFlowGraSP((m, p) for _, m, p in masked)
        pruner.score(model, nn.CrossEntropyLoss(), loader, "cpu")
        for tname, _, p in masked:
            out[f"grasp/{case}/raw/{tname}"] = pruner.raw[id(p)].numpy()
            assert torch.equal(pruner.scores[id(p)], pruner.raw[id(p)] / pruner.norm)
        if case != "all_params":
            out[f"grasp/{case}/norm"] = np.float32(pruner.norm)


def main():
    import torch
    torch.use_deterministic_algorithms(True)
    out = {}
    for name in MODELS:
        model_outputs(name, out)
    optimizer_outputs(out)
    init_stats(out)
    grasp_outputs(out)
    out["meta/torch_version"] = np.asarray(torch.__version__)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT}: {len(out)} arrays, {os.path.getsize(OUT) / 1e6:.2f} MB (torch {torch.__version__})")


if __name__ == "__main__":
    main()
