"""Writes tests/data/srigl_reference.npz: SRigL mask updates computed by the reference's own code,
calgaryml/condensed-sparsity (commit 3052bb8) src/rigl_torch/rigl_constant_fan.py
`RigLConstFanScheduler._rigl_step` (with its `_get_neurons_to_ablate`, `_get_drop_mask`,
`_get_grow_mask` and utils/rigl_utils.py get_fan_in_after_ablation), for tests/test_srigl.py.

The scheduler is built without its __init__ (which needs a model, an optimizer and a data loader):
its layer lists hold one seeded layer each — a dense kernel [out 12, in 10] and a conv kernel
[out 6, in 4, 3, 3] — at a constant fan-in mask, with a seeded dense gradient; then `_rigl_step` runs
as written at a given drop fraction (`cosine_annealing` returns it), γ_sal = 0.3 (its default),
dynamic ablation on. Cases: plain (no neuron ablated), and weights of some neurons shrunk so that
they are ablated, and a protected (never ablated) layer. Stored in lth's layouts (Flax [in, out],
[kh, kw, in, out]); imports the repo needs but these functions do not (wandb, torchvision, omegaconf,
its meters) are stubbed.

Run once, in a scratch venv with torch:
    python tests/data/make_srigl_reference.py /path/to/a/checkout/of/calgaryml/condensed-sparsity
"""
import logging
import os
import sys
import types

import numpy as np
import torch

for name in ("wandb", "torchvision", "omegaconf", "rigl_torch.meters", "rigl_torch.meters.layer_meter"):
    mod = types.ModuleType(name)
    mod.DictConfig = dict
    mod.LayerMeter = object
    sys.modules[name] = mod
sys.path.insert(0, os.path.join(sys.argv[1], "src"))
from rigl_torch.rigl_constant_fan import RigLConstFanScheduler  # noqa: E402

rng = np.random.default_rng(0)


def lth(t):
    a = t.numpy() if isinstance(t, torch.Tensor) else t
    return a.transpose(2, 3, 1, 0) if a.ndim == 4 else a.T


def case(shape, sparsity, f, shrink=(), protected=False):
    n_out, fan = shape[0], int(np.prod(shape[1:]))
    k0 = int(n_out * fan * (1 - sparsity)) // n_out
    mask = np.zeros((n_out, fan), bool)
    for i in range(n_out):
        mask[i, rng.choice(fan, k0, replace=False)] = True
    w = rng.standard_normal((n_out, fan)).astype(np.float32) * mask
    for i in shrink:                       # neurons with tiny weights and gradients: ablated
        w[i] *= 1e-3
    g = rng.standard_normal((n_out, fan)).astype(np.float32)
    for i in shrink:
        g[i] *= 1e-3
    w, mask, g = (x.reshape(shape) for x in (w, mask, g))
    s = RigLConstFanScheduler.__new__(RigLConstFanScheduler)
    W = torch.nn.Parameter(torch.tensor(w))
    W.grad = torch.zeros_like(W)
    s.W, s.S, s.module_names = [W], [sparsity], ["fc"]
    s.backward_masks = [torch.tensor(mask)]
    s.backward_hook_objects = [types.SimpleNamespace(dense_grad=torch.tensor(g))]
    s.static_ablated_filters = [0]
    s.no_ablation_module_names = ["fc"] if protected else ["classifier"]
    s.dynamic_ablation, s.static_ablation = True, False
    s.min_salient_weights_per_neuron, s.use_sparse_const_fan_in_for_ablation = 0.3, True
    s.optimizer = types.SimpleNamespace(state={W: {}})
    s._logger = logging.getLogger("srigl")
    s.initialize_grown_weights = 0.0
    s.cosine_annealing = lambda: f
    s._rigl_step()
    return {"w": lth(w), "mask": lth(mask), "grad": lth(g), "new_mask": lth(s.backward_masks[0]),
            "new_w": lth(W.detach()), "ablated": np.isin(np.arange(shape[0]), s.dynamically_ablated_neuron_idx[0]),
            "sparsity": np.float32(sparsity), "f": np.float32(f), "protected": np.bool_(protected)}


cases = {
    "dense_plain": case((12, 10), 0.7, 0.3),
    "dense_ablate": case((12, 10), 0.7, 0.2, shrink=(2, 7)),
    "dense_protected": case((12, 10), 0.7, 0.2, shrink=(2, 7), protected=True),
    "conv_plain": case((6, 4, 3, 3), 0.8, 0.25),
    "conv_ablate": case((6, 4, 3, 3), 0.8, 0.3, shrink=(4,)),
}
out = {f"{c}:{k}": v for c, d in cases.items() for k, v in d.items()}
np.savez_compressed(os.path.join(os.path.dirname(os.path.abspath(__file__)), "srigl_reference.npz"), **out)
print("wrote srigl_reference.npz:", {c: int(d["ablated"].sum()) for c, d in cases.items()}, "neurons ablated")
