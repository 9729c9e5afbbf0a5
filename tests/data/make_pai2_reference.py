"""Stored PyTorch reference outputs for FORCE, Iter-SNIP, ProsPr and Smart Ratio (pruning at init).

Run once by hand, with torch and numpy in a scratch environment outside the project (lth never
imports torch):

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/torchvenv/bin/pip install numpy
    /tmp/torchvenv/bin/python tests/data/make_pai2_reference.py     # writes tests/data/pai2_reference.npz

(made with torch 2.13.0+cpu, numpy 2.4.6; runs in a few seconds.)

Optionally `--check-against DIR`, DIR holding the references' own files
(DIR/pruning/{pruning_algos,mask_networks}.py from github:naver/force @7494eed,
 DIR/prospr/{__init__,prospr,utils}.py from github:mil-ad/prospr @a921779,
 DIR/pruner/SmartRatio.py from github:JingtongSu/sanity-checking-pruning @65aa267):
the script then also runs the original modules and asserts they give the same results as the
copies below.

The reference logic is COPIED (function bodies verbatim, apart from dropped prints/cuda calls where
noted) from
  * FORCE / Iter-SNIP: naver/force pruning/pruning_algos.py (get_average_gradients l.21-63,
    get_average_saliencies l.66-104, get_mask l.110-125, iterative_pruning l.127-206,
    get_minimum_saliency l.213-216) and pruning/mask_networks.py (apply_prune_mask l.5-45);
  * ProsPr: mil-ad/prospr prospr/prospr.py (functional_sgd l.16-52, fwd_with_external_params
    l.55-156, compute_meta_grads l.159-188, prune l.191-309) and prospr/utils.py
    (pruning_filter_factory l.12-28, attach_masks_as_parameter l.31-100, apply_masks_with_hooks
    l.103-149, keep_mask_from_scores l.152-164, keep_masks_stats/health_check l.167-196, uncat_as
    l.199-215, get_module_from_param_name l.218-227);
  * Smart Ratio: JingtongSu/sanity-checking-pruning pruner/SmartRatio.py (SmartRatio l.26-165; the
    ratio/count part l.26-143 is copied, the random-mask part l.144-158 is replaced by returning the
    counts, since it calls .cuda()).

Model and data (all stored):
  MLP 40 -> 20 -> 10 -> 10, ReLU, nn.Linear layers with biases named fc_0, fc_1, out.
  Weights from np.random.default_rng(0), layer by layer (fc_0, fc_1, out): W ~ N(0, 2/fan_in)
  (standard_normal * sqrt(2/in)), b ~ U(-0.1, 0.1), float32, PyTorch layout (out, in).
  One batch from np.random.default_rng(1): x = standard_normal((64, 40)) float32,
  y = integers(0, 10, 64) int64. Loss = mean cross-entropy. Prunable = the three weight matrices
  (biases never masked). Global density target 0.2 of the 40*20 + 20*10 + 10*10 = 1100 weights.

Keys (<layer> in fc_0, fc_1, out; every score/mask array has the weight's PyTorch shape (out, in);
masks are float32 0/1):
  w/<layer>, b/<layer>          the MLP parameters.
  x (64, 40) float32, y (64,) int64      the batch.
  logits (64, 10), loss ()      dense forward (float32) and mean cross-entropy, to check the model.
  prunable                      the layer names in order (unicode array).

  force/densities (T,)          FORCE schedule, exp mode: d_t = exp(-t*(-ln 0.2)/T), t = 1..T, T = 3
                                (float64; last entry == 0.2 exactly).
  force/kept (T,)               number of weights kept after each step (sum of that step's mask).
  force/num_params_to_keep (T,) int(1100 * d_t), the topk size of each step (ties at the threshold
                                are all kept, so kept >= this).
  force/scores0/<layer>         step-1 saliency |θ0 ⊙ ∂L/∂θ| on the dense net (= SNIP).
  force/scores_t<t>/<layer>     saliency used at step t (t = 1..T): |θ0 ⊙ g|, θ0 the dense weights,
                                g = ∂L/∂W at W = θ0 ⊙ m_{t-1} (no gradient masking).
  force/masks_t<t>/<layer>      mask produced at step t.
  force/masks/<layer>           final mask (= force/masks_t3).
  itersnip/...                  the same keys for Iter-SNIP (prune_method=1): saliency |W ⊙ g| with
                                W = θ0 ⊙ m_{t-1} (current weights) and g masked by the gradient hook;
                                previously pruned scores set to the global minimum (0).
  force_nll_on_logits/scores0/<layer>, force_nll_on_logits/masks/<layer>
                                FORCE exactly as the reference runs it on its models: F.nll_loss on
                                RAW logits (loss = -mean_i z_i[y_i]), see the quirk below. Not CE.

  prospr/scores/<layer>         |∂L(θ_M(c))/∂c| at c = 1 (method "full", differentiated through the
                                unrolled steps), θ_0(c) = θ0 ⊙ c for the weights, biases cloned;
                                M = prospr/steps inner plain-SGD steps (lr prospr/lr, momentum
                                prospr/momentum, no weight decay) on ALL parameters (weights and
                                biases); the same batch (x, y) for every inner step and the outer
                                loss (the reference CLI default --new-data-in-inner False).
  prospr/masks/<layer>          global top-k, k = ceil(1100 * (1 - 0.8)) = 220 (torch.topk).
  prospr/steps, prospr/lr, prospr/momentum, prospr/keep   3, 0.1, 0.0, 220.

  smart/<arch>/layers           layer names in the order Smart Ratio walks them (net.modules() order).
  smart/<arch>/num_params       weight count of each layer (int64).
  smart/<arch>/<d>              per-layer keep ratio for global density d (d in 0.1, 0.02; i.e.
                                --init_prune_ratio 0.9 / 0.98): the reference's final `Ratio` (float32
                                arithmetic, after the >1 overflow pass), entries >= 1 shown as 1.0 and
                                the linear layer as linear_keep_ratio 0.3; stored float64.
  smart/<arch>/<d>/num_keep     the kept counts the reference masks get: int(Ratio*N) for convs
                                (N if Ratio >= 1), int(0.3*N) for the linear layer.
  <arch> = vgg16: 13 convs 3x3 (3→64, 64, 128, 128, 256, 256, 256, 512 ×6) then Linear 512→10;
           arch string 'vgg16_bn' (≠ 'resnet' → the branch with the extra 1/(i+1)^2 factor).
  <arch> = resnet20: lth's CIFAR ResNet-20 (16/32/64, 1×1 conv shortcut where the shape changes):
           stem 3→16; per block conv_0, conv_1[, shortcut] in that order (the reference's
           BasicBlock registers conv1, conv2, downsample in this order); then Linear 64→10. 22 layers.
           arch string 'resnet' (the reference's resnet branch, no 1/(i+1)^2).
           (The reference's own ResNet is the GraSP-style doubled-width 32/64/128 variant; lth's
           shapes are used here because those are the ones lth prunes.)

Facts about the stored data (checked when it was made): force/scores0 == itersnip/scores0 ==
force/scores_t1 (step 1 is SNIP on the dense net); at every FORCE/Iter-SNIP step and for ProsPr the
k-th largest score is strictly above the (k+1)-th, so no ties decide a mask and kept == k
(force/kept == itersnip/kept == [643, 376, 220]); 4 fc_1 scores are exactly 0 at step 1 (no sample
activates both units), far below every threshold; FORCE re-admits 48 (step 2) and 50 (step 3)
weights pruned at the previous step. ProsPr keeps [138, 46, 36] per layer. Updating the biases in
ProsPr's inner loop matters (freezing them changes scores by up to 0.019).

Quirks of the references and how this script resolves them:
  * FORCE repo: get_average_gradients uses F.nll_loss(outputs, targets) while its models return raw
    logits (training uses F.cross_entropy). Here the MLP handed to the FORCE code returns
    log_softmax, so its nll_loss IS mean cross-entropy (keys force/, itersnip/); the literal
    nll-on-logits behaviour is stored separately (force_nll_on_logits/).
  * FORCE repo: each gradient batch is next(iter(loader)) (a fresh iterator each time); here the
    loader is the one-element list [(x, y)], num_batches = 1, so every step uses the same batch.
  * FORCE get_mask keeps every score >= the k-th largest (k = int(N * d_t)), so ties can keep > k.
  * ProsPr: prune() defaults to new_data_in_inner=True (a new batch per inner step, outer loss on
    the batch after the last step) but the CLI default is False; we pass False (one batch).
  * ProsPr: ceil(N * (1 - prune_ratio)) with prune_ratio = 0.8 (as the CLI takes it).
  * Smart Ratio: run with init_prune_ratio = 1 - d written as the decimal a user types (0.9, 0.98).
"""
from __future__ import annotations

import argparse
import copy
import importlib
import math
import os
import sys
import types
from collections import defaultdict
from datetime import datetime
from math import ceil
from typing import Callable, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pai2_reference.npz")
SIZES = (40, 20, 10, 10)
LAYERS = ("fc_0", "fc_1", "out")
BATCH = 64
DENSITY = 0.2              # global fraction of prunable weights kept
FORCE_STEPS = 3            # T (reference default num_steps=10; README runs 60)
FORCE_BATCHES = 1          # reference default num_batches=1
PROSPR_STEPS = 3           # reference CLI --inner-steps 3
PROSPR_LR = 0.1            # reference CLI --inner-lr 0.1
PROSPR_MOMENTUM = 0.0      # reference CLI --inner-momentum 0
SMART_DENSITIES = (0.1, 0.02)
LINEAR_KEEP_RATIO = 0.3    # reference --linear_keep_ratio default


# =============================================================================================
# Model and data
# =============================================================================================

def mlp_params():
    rng = np.random.default_rng(0)
    params = {}
    for name, (i, o) in zip(LAYERS, zip(SIZES[:-1], SIZES[1:])):
        params[f"w/{name}"] = (rng.standard_normal((o, i)) * np.sqrt(2.0 / i)).astype(np.float32)
        params[f"b/{name}"] = rng.uniform(-0.1, 0.1, o).astype(np.float32)
    return params


def data():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH).astype(np.int64)
    return x, y


class MLP(nn.Module):
    """fc_0 -> ReLU -> fc_1 -> ReLU -> out. `log_probs=True` returns log_softmax (so the FORCE code's
    F.nll_loss is cross-entropy); False returns raw logits (ProsPr uses F.cross_entropy itself)."""

    def __init__(self, params, log_probs: bool):
        super().__init__()
        self.log_probs = log_probs
        self.fc_0 = nn.Linear(SIZES[0], SIZES[1])
        self.fc_1 = nn.Linear(SIZES[1], SIZES[2])
        self.out = nn.Linear(SIZES[2], SIZES[3])
        with torch.no_grad():
            for name in LAYERS:
                getattr(self, name).weight.copy_(torch.from_numpy(params[f"w/{name}"]))
                getattr(self, name).bias.copy_(torch.from_numpy(params[f"b/{name}"]))

    def forward(self, x):
        z = self.out(F.relu(self.fc_1(F.relu(self.fc_0(x)))))
        return F.log_softmax(z, dim=1) if self.log_probs else z


# =============================================================================================
# FORCE / Iter-SNIP — copied from github:naver/force @7494eed
# =============================================================================================

# ---- pruning/mask_networks.py l.5-45 (verbatim) ----
def apply_prune_mask(net, keep_masks, apply_hooks=True):
    prunable_layers = filter(
        lambda layer: isinstance(layer, nn.Conv2d) or isinstance(
            layer, nn.Linear), net.modules())
    hook_handlers = []
    for layer, keep_mask in zip(prunable_layers, keep_masks):
        assert (layer.weight.shape == keep_mask.shape)

        def hook_factory(keep_mask):
            def hook(grads):
                return grads * keep_mask

            return hook

        # Step 1: Set the masked weights to zero (Biases are ignored)
        layer.weight.data[keep_mask == 0.] = 0.

        # Step 2: Make sure their gradients remain zero (not with FORCE)
        if apply_hooks:
            hook_handlers.append(layer.weight.register_hook(hook_factory(keep_mask)))

    return hook_handlers


# ---- pruning/pruning_algos.py l.21-63 (verbatim) ----
def get_average_gradients(net, train_dataloader, device, num_batches=-1):
    gradients = []
    for layer in net.modules():
        # Select only prunable layers
        if isinstance(layer, nn.Conv2d) or isinstance(layer, nn.Linear):
            gradients.append(0)

    # Take a whole epoch
    count_batch = 0
    for batch_idx in range(len(train_dataloader)):
        inputs, targets = next(iter(train_dataloader))
        inputs = inputs.to(device)
        targets = targets.to(device)

        # Compute gradients (but don't apply them)
        net.zero_grad()
        outputs = net.forward(inputs)
        loss = F.nll_loss(outputs, targets)
        loss.backward()

        # Store gradients
        counter = 0
        for layer in net.modules():
            # Select only prunable layers
            if isinstance(layer, nn.Conv2d) or isinstance(layer, nn.Linear):
                gradients[counter] += layer.weight.grad
                counter += 1
        count_batch += 1
        if batch_idx == num_batches - 1:
            break
    avg_gradients = [x / count_batch for x in gradients]

    return avg_gradients


# ---- pruning/pruning_algos.py l.66-104 (verbatim) ----
def get_average_saliencies(net, train_dataloader, device, prune_method=3, num_batches=-1,
                           original_weights=None):
    def pruning_criteria(method):
        if method == 2:
            # GRASP-It method
            result = layer_weight_grad**2 # Custom gradient norm approximation
        else:
            # FORCE / Iter SNIP method
            result = torch.abs(layer_weight * layer_weight_grad)
        return result

    gradients = get_average_gradients(net, train_dataloader, device, num_batches)
    saliency = []
    idx = 0
    for layer in net.modules():
        if isinstance(layer, nn.Conv2d) or isinstance(layer, nn.Linear):
            if prune_method == 3:
                layer_weight = original_weights[idx]
            else:
                layer_weight = layer.weight
            layer_weight_grad = gradients[idx]
            idx += 1
            saliency.append(pruning_criteria(prune_method))

    return saliency


# ---- pruning/pruning_algos.py l.110-125 (verbatim) ----
def get_mask(saliency, pruning_factor):
    # Gather all scores in a single vector and normalise
    all_scores = torch.cat([torch.flatten(x) for x in saliency])

    num_params_to_keep = int(len(all_scores) * pruning_factor)
    threshold, _ = torch.topk(all_scores, num_params_to_keep, sorted=True)
    acceptable_score = threshold[-1]

    keep_masks = []
    for m in saliency:
        keep_masks.append((m >= acceptable_score).float())
    return keep_masks


# ---- pruning/pruning_algos.py l.127-206 (verbatim; `get_mask` looked up through `_GET_MASK`
# so the driver can record each step, the print of check_global_pruning dropped) ----
_GET_MASK = [get_mask]


def iterative_pruning(ori_net, train_dataloader, device, pruning_factor=0.1,
                      prune_method=3, num_steps=10,
                      mode='exp', num_batches=1):
    # Let's create a copy of the network to make sure we don't affect the training later
    net = copy.deepcopy(ori_net)

    if prune_method == 3:
        # If we want to apply FORCE we need to save the original (dense) weights
        # to compute the saliency of sparsified connections.
        original_weights = []
        for layer in net.modules():
            if isinstance(layer, nn.Conv2d) or isinstance(layer, nn.Linear):
                original_weights.append(layer.weight.detach())
    else:
        original_weights = None

    # Choose a decay mode for sparsity (exponential should be used unless you know what you
    # are doing)
    if mode == 'linear':
        pruning_steps = [1 - ((x + 1) * (1 - pruning_factor) / num_steps) for x in range(num_steps)]

    elif mode == 'exp':
        pruning_steps = [np.exp(0 - ((x + 1) * (0 - np.log(pruning_factor)) / num_steps)) for x in range(num_steps)]

    mask = None
    hook_handlers = None

    for perc in pruning_steps:
        saliency = []
        saliency = get_average_saliencies(net, train_dataloader, device,
                                          prune_method=prune_method,
                                          num_batches=num_batches,
                                          original_weights=original_weights)
        torch.cuda.empty_cache()

        # Make sure all saliencies of previously deleted weights is minimum so they do not
        # get picked again.
        if mask is not None and prune_method < 3:
            min_saliency = get_minimum_saliency(saliency)
            for ii in range(len(saliency)):
                saliency[ii][mask[ii] == 0.] = min_saliency

        if hook_handlers is not None:
            for h in hook_handlers:
                h.remove()

        mask = []
        mask = _GET_MASK[0](saliency, perc)

        # To use FORCE, go back to the dense network so unmasked
        # weights can recover
        if prune_method == 3:
            net = copy.deepcopy(ori_net)
            apply_prune_mask(net, mask, apply_hooks=False)
        else:
            hook_handlers = apply_prune_mask(net, mask, apply_hooks=True)

    return mask


# ---- pruning/pruning_algos.py l.213-216 (verbatim) ----
def get_minimum_saliency(saliency):
    "Compute minimum value of saliency globally"
    flattened_saliency = torch.cat([torch.flatten(x) for x in saliency])
    return flattened_saliency.min()


# =============================================================================================
# ProsPr — copied from github:mil-ad/prospr @a921779
# =============================================================================================

# ---- prospr/utils.py (verbatim) ----
def pruning_filter_factory(num_classes: int, structured: bool):            # l.12-28
    def filter_fn(m):
        if isinstance(m, nn.Conv2d):
            return True
        elif isinstance(m, nn.Linear):
            if structured and m.out_features == num_classes:
                return False
            else:
                return True

    return filter_fn


def attach_masks_as_parameter(                                              # l.31-100
    net: nn.Module,
    filter_fn: Callable,
    structured: bool,
    gradient_tie: bool,
    masks_init_values: Optional[List[torch.Tensor]] = None,
    override_forward: bool = True,
    make_weights_constants: bool = True,
) -> List[torch.Tensor]:
    def masked_conv2d_fwd(self, x):
        return F.conv2d(
            x,
            self.weight * self.weight_mask,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )

    def masked_linear_fwd(self, x):
        return F.linear(x, self.weight * self.weight_mask, self.bias)

    last_layer = None

    all_weight_masks = []

    if masks_init_values:
        masks_init_values = iter(masks_init_values)

    for name, layer in net.named_modules():
        if not filter_fn(layer):
            continue

        if structured:
            if gradient_tie and (
                "downsample" in name or ("n_block" in name and "conv2" in name)
            ):
                # tie the weight mask of conv and downsample layer
                layer.weight_mask = last_layer.weight_mask
            else:
                # Same channels, 1 all other dimensions
                shape = [layer.weight.shape[0]] + [1] * (layer.weight.ndim - 1)
                layer.weight_mask = nn.Parameter(
                    torch.ones(shape, device=layer.weight.device)
                )

        else:
            layer.weight_mask = nn.Parameter(torch.ones_like(layer.weight))

        if masks_init_values:
            layer.weight_mask.data[:] = next(masks_init_values)[:]

        all_weight_masks.append(layer.weight_mask)

        if make_weights_constants:
            layer.weight.requires_grad = False

        if "ds_block" in name or last_layer is None:
            last_layer = layer

        if override_forward:
            if isinstance(layer, nn.Conv2d):
                layer.forward = types.MethodType(masked_conv2d_fwd, layer)
            elif isinstance(layer, nn.Linear):
                layer.forward = types.MethodType(masked_linear_fwd, layer)
            else:
                raise TypeError

    return all_weight_masks


def _pre_forward_hook(m, x):                                                # l.103-109
    if m.keep_mask.ndim == 1:
        m.weight.data = m.weight.data * m.keep_mask.view(-1, 1, 1, 1)
        if m.bias is not None:
            m.bias.data = m.bias.data * m.keep_mask
    else:
        m.weight.data = m.weight.data * m.keep_mask


def apply_masks_with_hooks(net, keep_masks, structured, filter_fn, return_clone=True):  # l.112-149
    if return_clone:
        net = copy.deepcopy(net)

    prunable_layers = filter(filter_fn, net.modules())

    if isinstance(keep_masks, torch.Tensor):
        # keep masks need to be reshaped first
        pointer = 0
        keep_masks_list = []
        for layer in prunable_layers:
            if structured:
                num_param = layer.weight.shape[0]
                shape = layer.weight.shape[0]
            else:
                num_param = layer.weight.numel()
                shape = layer.weight.shape

            keep_masks_list.append(
                keep_masks[pointer : pointer + num_param].view(shape)
            )

            pointer += num_param
        assert pointer == keep_masks.numel(), "Didn't use all keep mask parameters"

        keep_masks = keep_masks_list

    for layer, keep_mask in zip(prunable_layers, keep_masks):
        if structured:
            assert layer.weight.shape[0] == keep_mask.shape[0]
        else:
            assert layer.weight.shape == keep_mask.shape

        layer.register_buffer("keep_mask", keep_mask)
        layer.register_forward_pre_hook(_pre_forward_hook)

    return net


def keep_mask_from_scores(                                                  # l.152-164
    scores_vec, keep_ratio, uncat_ref: Optional[List[torch.Tensor]] = None
):
    num_to_keep = ceil(len(scores_vec) * keep_ratio)

    keep_mask = torch.zeros_like(scores_vec, dtype=torch.float32)
    _, keep_idx = torch.topk(scores_vec, num_to_keep)
    keep_mask[keep_idx] = 1.0

    if uncat_ref:
        keep_mask = uncat_as(keep_mask, uncat_ref)

    return keep_mask


def keep_masks_stats(keep_masks: Iterable[torch.Tensor]):                   # l.167-191 (prints dropped)
    pass


def keep_masks_health_check(keep_masks):                                    # l.194-196
    for mask in keep_masks:
        assert mask.bool().any(), "❌ Attempting to prune the entire layer!"


def uncat_as(x: torch.Tensor, recipe: Union[List[torch.Tensor], List[torch.Size]]):  # l.199-215
    result = []

    processed = 0
    for ref in recipe:

        if isinstance(ref, torch.Size):
            shape = ref
        else:
            shape = ref.shape

        result.append(x[processed : processed + ref.numel()].reshape(shape))
        processed += ref.numel()

    assert processed == len(x)

    return result


def get_module_from_param_name(m: nn.Module, param_name: str):             # l.218-227
    names = param_name.split(".")[:-1]

    # recursively go through modules
    for name in names:
        m = getattr(m, name)
    return m


utils = types.SimpleNamespace(
    attach_masks_as_parameter=attach_masks_as_parameter, apply_masks_with_hooks=apply_masks_with_hooks,
    keep_mask_from_scores=keep_mask_from_scores, keep_masks_stats=keep_masks_stats,
    keep_masks_health_check=keep_masks_health_check, uncat_as=uncat_as,
    get_module_from_param_name=get_module_from_param_name)


# ---- prospr/prospr.py l.16-52 (verbatim) ----
def functional_sgd(
    params: List[torch.Tensor],
    grads: List[torch.Tensor],
    momentum_state: List[Optional[torch.Tensor]],
    lr: float,
    momentum: float = 0,
    weight_decay: float = 0,
    dampening: float = 0,
    nesterov: bool = False,
) -> Tuple[List[torch.Tensor], List[Optional[torch.Tensor]]]:

    updated_params = []
    updated_momentum_state = []

    for i, param in enumerate(params):
        grad = grads[i]

        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)

        if momentum != 0:
            buf = momentum_state[i]

            if buf is None:
                buf = torch.clone(grad).detach()
            else:
                buf = buf.mul(momentum).add(grad, alpha=1 - dampening)
            updated_momentum_state.append(buf)

            if nesterov:
                grad = grad.add(buf, alpha=momentum)
            else:
                grad = buf

        updated_params.append(param.add(grad, alpha=-lr))

    return updated_params, updated_momentum_state


# ---- prospr/prospr.py l.55-156 (verbatim) ----
def fwd_with_external_params(
    net: nn.Module, x: torch.Tensor, params: List[torch.Tensor]
):
    def forward_factory(layer, weight, bias):
        def conv2d_fwd_external_params(self, x):
            return F.conv2d(
                x,
                weight,
                bias,
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
            )

        def linear_fwd_external_params(self, x):
            return F.linear(x, weight, bias)

        def batchnorm2d_fwd_external_params(self, x):
            self._check_input_dim(x)
            if self.momentum is None:
                exponential_average_factor = 0.0
            else:
                exponential_average_factor = self.momentum
            if self.training and self.track_running_stats:
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked = self.num_batches_tracked + 1
                    if self.momentum is None:
                        exponential_average_factor = 1.0 / float(
                            self.num_batches_tracked
                        )
                    else:
                        exponential_average_factor = self.momentum
            if self.training:
                bn_training = True
            else:
                bn_training = (self.running_mean is None) and (self.running_var is None)

            return F.batch_norm(
                x,
                self.running_mean
                if not self.training or self.track_running_stats
                else None,
                self.running_var
                if not self.training or self.track_running_stats
                else None,
                weight,
                bias,
                bn_training,
                exponential_average_factor,
                self.eps,
            )

        if isinstance(layer, nn.Conv2d):
            return conv2d_fwd_external_params
        elif isinstance(layer, nn.Linear):
            return linear_fwd_external_params
        elif isinstance(layer, nn.BatchNorm2d):
            return batchnorm2d_fwd_external_params
        else:
            raise TypeError

    modules_params = defaultdict(lambda: {})
    param_names = [n for (n, _) in net.named_parameters() if "weight_mask" not in n]
    for n, p in zip(param_names, params):
        module = utils.get_module_from_param_name(net, n)
        if "weight" in n:
            modules_params[module]["weight"] = p
        elif "bias" in n:
            modules_params[module]["bias"] = p
        else:
            assert False

        # While we're here lets's store the old forward so we can restore it on exit
        modules_params[module]["old_fwd"] = module.forward

    # Monkey-patch the forward method
    for module, module_params in modules_params.items():
        weight = module_params["weight"]
        bias = module_params["bias"] if "bias" in module_params else None
        module.forward = types.MethodType(forward_factory(module, weight, bias), module)

    out = net(x)

    for module, module_params in modules_params.items():
        module.forward = module_params["old_fwd"]

    return out


# ---- prospr/prospr.py l.159-188 (verbatim) ----
def compute_meta_grads(net, x, y, fast_params, detailed_params, weight_masks, method):
    y_pred = fwd_with_external_params(net, x, fast_params)
    loss = F.cross_entropy(y_pred, y)

    if method == "full":
        meta_grads = torch.autograd.grad(
            loss, weight_masks, create_graph=False, retain_graph=True
        )
    elif method == "first_order":
        grads_fo = torch.autograd.grad(loss, fast_params, create_graph=False)
        meta_grads = []
        for g, fp, (param_name, module, _) in zip(
            grads_fo, fast_params, detailed_params
        ):
            if param_name.endswith(".weight") and hasattr(module, "weight_mask"):
                meta_grads.append(
                    torch.autograd.grad(fp, module.weight_mask, g, create_graph=False)[
                        0
                    ]
                )

    return meta_grads


# ---- prospr/prospr.py l.191-309 (verbatim; the two prints dropped) ----
def prune(
    net: nn.Module,
    prune_ratio,
    dataloader,
    filter_fn: Callable,
    num_steps: int,
    inner_lr: float,
    inner_momentum: float,
    method: str = "full",
    structured: bool = False,
    new_data_in_inner: bool = True,
    return_scores: bool = False,
) -> List[torch.Tensor]:

    assert method in ("full", "first_order")

    device_orig = next(net.parameters()).device
    net_orig = net

    net = copy.deepcopy(net)
    net.train()

    if method == "full":
        net = net.cpu()

    device = next(net.parameters()).device

    detailed_params = [
        (n, utils.get_module_from_param_name(net, n), p)
        for (n, p) in net.named_parameters()
    ]

    weight_masks = utils.attach_masks_as_parameter(
        net,
        filter_fn,
        structured=structured,
        gradient_tie=False,
        make_weights_constants=False,
        override_forward=False,
    )

    scores = [torch.zeros_like(mask) for mask in weight_masks]

    fast_params = []
    for param_name, module, param in detailed_params:
        if param_name.endswith(".weight") and hasattr(module, "weight_mask"):
            fast_params.append(param * module.weight_mask)
        else:
            fast_params.append(param.clone())

    momentum_state = [None for _ in fast_params]

    outer_dataloader = iter(dataloader)
    x, y = next(outer_dataloader)
    x, y = x.to(device), y.to(device)

    for i in range(num_steps):

        y_pred = fwd_with_external_params(net, x, fast_params)
        inner_loss = F.cross_entropy(y_pred, y)
        inner_grads = torch.autograd.grad(
            inner_loss,
            fast_params,
            create_graph=False if method == "first_order" else True,
        )

        fast_params, momentum_state = functional_sgd(
            fast_params,
            inner_grads,
            momentum_state,
            lr=inner_lr,
            momentum=inner_momentum,
        )

        if new_data_in_inner:
            try:
                x, y = next(outer_dataloader)
            except StopIteration:
                outer_dataloader = iter(dataloader)
                x, y = next(outer_dataloader)

            x, y = x.to(device), y.to(device)

    meta_grads = compute_meta_grads(
        net, x, y, fast_params, detailed_params, weight_masks, method
    )

    scores = [curr + g.abs() for curr, g in zip(scores, meta_grads)]

    if return_scores:
        return [score.to(device_orig) for score in scores]

    scores_vec = torch.cat([score.flatten() for score in scores])
    keep_masks = utils.keep_mask_from_scores(scores_vec, 1 - prune_ratio, weight_masks)

    # Push keep_masks to the original device (in case device_orig != device)
    keep_masks = [mask.to(device_orig) for mask in keep_masks]

    utils.keep_masks_stats(keep_masks)
    utils.keep_masks_health_check(keep_masks)

    pruned_net = utils.apply_masks_with_hooks(
        net_orig, keep_masks, structured, filter_fn
    )

    return pruned_net, keep_masks


# =============================================================================================
# Smart Ratio — copied from github:JingtongSu/sanity-checking-pruning @65aa267
# =============================================================================================

# ---- pruner/SmartRatio.py l.11-23 (verbatim) ----
def count_total_parameters(net):
    total = 0
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            total += m.weight.numel()
    return total


def count_fc_parameters(net):
    total = 0
    for m in net.modules():
        if isinstance(m, (nn.Linear)):
            total += m.weight.numel()
    return total


# ---- pruner/SmartRatio.py l.26-143 (verbatim up to the per-layer counts; instead of building the
# random masks of l.144-158 (which call .cuda()) it returns the final Ratio and the counts) ----
def SmartRatio(net, ratio, device, args):
    keep_ratio = 1-ratio

    net = copy.deepcopy(net)  # .eval()
    net.zero_grad()

    total_parameters = count_total_parameters(net)
    fc_parameters = count_fc_parameters(net)

    linear_keep_ratio = args.linear_keep_ratio

    CNT = 0
    Num = []
    for idx, m in enumerate(net.modules()):
        if isinstance(m, nn.Conv2d) or isinstance(m,nn.Linear):
            Num.append(m.weight.data.view(-1).size()[0])
            CNT = CNT + 1

    Num = torch.from_numpy(np.array(Num)).float()

    # ========== set ratio ============
    n = CNT
    Ratio = torch.rand(1,CNT)
    for i in range(CNT):
        k = i + 1 # 1~CNT
        Ratio[0][n-k] = (k)**2 + k
        if args.linear_decay != 0:
            Ratio[0][n-k] = k
        if args.ascend != 0:
            Ratio[0][n-k] = (n-k+1)**2 + (n-k+1)
        if args.cubic != 0:
            Ratio[0][n-k] = (k)**3

    Ratio = Ratio[0]

    num_now = 0
    total_num = 0
    linear_num = 0

    # ========== calculation and scaling ============
    i = 0
    TEST = 0
    for m in net.modules():
        if isinstance(m,nn.Linear) or isinstance(m,nn.Conv2d):
            if not isinstance(m,nn.Linear):
                num_now = num_now + int((Ratio[i])*Num[i])
                if args.arch != 'resnet':
                    TEST = TEST + int(Num[i]*Ratio[i]/(i+1)**2)
                else:
                    TEST = TEST + int(Num[i]*Ratio[i])
            else:
                linear_num = linear_num + Num[i]
            total_num = total_num + Num[i]
            i = i + 1

    goal_num = int(total_num * (1-args.init_prune_ratio)) - int(linear_num*linear_keep_ratio)
    balance_ratio = goal_num / (total_num - linear_num)
    # TEST
    k = (goal_num) / TEST
    i = 0
    for m in net.modules():
        if isinstance(m,nn.Conv2d):
            if args.arch != 'resnet':
                Ratio[i] = Ratio[i] * k / (i+1)**2
            else:
                Ratio[i] = Ratio[i] * k
            i = i + 1

    # ========== if the prune-ratio is too small, then some keep_ratio will > 1 ============
    ExtraNum = 0
    i = 0
    for m in net.modules():
        size = Num[i]
        if isinstance(m,nn.Linear) or isinstance(m,nn.Conv2d):
            if not isinstance(m,nn.Linear):
                if Ratio[i] >= 1:
                    ExtraNum = ExtraNum + int((Ratio[i]-1)*size)
                    Ratio[i] = 1
                else:
                    RestNum = int((1-Ratio[i])*Num[i])
                    if RestNum >= ExtraNum:
                        Ratio[i] = Ratio[i] + ExtraNum/Num[i]
                        ExtraNum = 0
                    else:
                        ExtraNum = ExtraNum - RestNum
                        Ratio[i] = 1
            if ExtraNum == 0:
                break
            i = i + 1

    # ========== set the smart-ratio masks (counts only) ============
    ratios, counts = [], []
    CNT = 0
    for m in net.modules():
        if isinstance(m,nn.Conv2d) or isinstance(m,nn.Linear):
            keep_ratio = Ratio[CNT]
            num_keep = int((keep_ratio)*Num[CNT])
            if Ratio[CNT] >= 1:
                num_keep = int(Num[CNT])
            if args.uniform != 0:
                Ratio[CNT] = balance_ratio
                num_keep = int(Ratio[CNT]*Num[CNT])
            if isinstance(m,nn.Linear):
                num_keep = int(linear_keep_ratio*Num[CNT])
            # (l.146-158: a random mask with num_keep ones, or top-|w| with --hybrid)
            ratios.append(linear_keep_ratio if isinstance(m, nn.Linear) else min(float(Ratio[CNT]), 1.0))
            counts.append(num_keep)
            CNT = CNT + 1
    return np.array(ratios, np.float64), np.array(counts, np.int64)


def vgg16_layers():
    """VGG-16 CIFAR (reference models/vgg.py cfg 'D' + nn.Linear(512, 10)); (name, module) in order."""
    cfg = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512]
    layers, c_in = [], 3
    for v in cfg:
        if v != 'M':
            layers.append((f"conv_{len(layers)}", nn.Conv2d(c_in, v, 3, padding=1)))
            c_in = v
    layers.append(("out", nn.Linear(512, 10)))
    return layers


def resnet20_layers():
    """lth's ResNet-20 (16/32/64) in the reference's module order; names as lth's parameter paths."""
    layers = [("stem", nn.Conv2d(3, 16, 3, padding=1, bias=False))]
    c_in = 16
    for s, c in enumerate((16, 32, 64)):
        for b in range(3):
            stride = 2 if s > 0 and b == 0 else 1
            p = f"stage{s}_block{b}"
            layers.append((f"{p}/conv_0", nn.Conv2d(c_in, c, 3, stride=stride, padding=1, bias=False)))
            layers.append((f"{p}/conv_1", nn.Conv2d(c, c, 3, padding=1, bias=False)))
            if stride != 1 or c_in != c:
                layers.append((f"{p}/shortcut", nn.Conv2d(c_in, c, 1, stride=stride, bias=False)))
            c_in = c
    layers.append(("out", nn.Linear(64, 10)))
    return layers


def as_net(layers):
    net = nn.Sequential()
    for name, m in layers:
        net.add_module(name.replace("/", "__"), m)
    return net


def smart_args(arch, density):
    return types.SimpleNamespace(
        linear_keep_ratio=LINEAR_KEEP_RATIO, init_prune_ratio=round(1 - density, 10), arch=arch,
        linear_decay=0, ascend=0, cubic=0, uniform=0, hybrid=0)


# =============================================================================================
# Driver
# =============================================================================================

def run_force(params, x, y, prune_method, log_probs, get_mask_fn, iterative_fn, saliency_fn):
    """Runs the reference iterative_pruning, recording (saliency, density, mask) of every step."""
    net = MLP(params, log_probs=log_probs)
    loader = [(torch.from_numpy(x), torch.from_numpy(y))]
    steps = []

    def recording_get_mask(saliency, pruning_factor):
        mask = get_mask_fn(saliency, pruning_factor)
        steps.append(([s.detach().clone() for s in saliency], float(pruning_factor),
                      int(len(torch.cat([torch.flatten(s) for s in saliency])) * pruning_factor), mask))
        return mask

    final = iterative_fn(net, loader, "cpu", pruning_factor=DENSITY, prune_method=prune_method,
                         num_steps=FORCE_STEPS, mode="exp", num_batches=FORCE_BATCHES,
                         recorder=recording_get_mask)
    dense = MLP(params, log_probs=log_probs)
    scores0 = saliency_fn(dense, loader, "cpu", prune_method=prune_method, num_batches=FORCE_BATCHES,
                          original_weights=[dense.fc_0.weight.detach(), dense.fc_1.weight.detach(),
                                            dense.out.weight.detach()])
    for a, b in zip(scores0, steps[0][0]):
        assert torch.equal(a, b)
    for a, b in zip(final, steps[-1][3]):
        assert torch.equal(a, b)
    return scores0, steps


def local_iterative(ori_net, loader, device, recorder, **kw):
    _GET_MASK[0] = recorder
    try:
        return iterative_pruning(ori_net, loader, device, **kw)
    finally:
        _GET_MASK[0] = get_mask


def run_prospr(params, x, y, prune_fn, filter_factory):
    loader = [(torch.from_numpy(x), torch.from_numpy(y))]
    kw = dict(filter_fn=filter_factory(SIZES[-1], False), num_steps=PROSPR_STEPS, inner_lr=PROSPR_LR,
              inner_momentum=PROSPR_MOMENTUM, method="full", structured=False, new_data_in_inner=False)
    prune_ratio = 0.8                                  # the CLI's --prune-ratio (1 - density)
    assert abs((1 - prune_ratio) - DENSITY) < 1e-12
    scores = prune_fn(MLP(params, log_probs=False), prune_ratio, loader, return_scores=True, **kw)
    _, masks = prune_fn(MLP(params, log_probs=False), prune_ratio, loader, **kw)
    return scores, masks


def tensors(prefix, ts):
    return {f"{prefix}/{name}": t.detach().numpy().astype(np.float32) for name, t in zip(LAYERS, ts)}


def load_originals(root):
    sys.path.insert(0, root)
    force = importlib.import_module("pruning.pruning_algos")
    prospr_mod = importlib.import_module("prospr.prospr")
    prospr_utils = importlib.import_module("prospr.utils")
    smart = importlib.import_module("pruner.SmartRatio")
    return force, prospr_mod, prospr_utils, smart


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check-against", default=None, help="directory with the references' own files")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)

    params = mlp_params()
    x, y = data()
    out = dict(params)
    out["x"], out["y"] = x, y
    out["prunable"] = np.array(LAYERS)
    with torch.no_grad():
        logits = MLP(params, log_probs=False)(torch.from_numpy(x))
        out["logits"] = logits.numpy().astype(np.float32)
        out["loss"] = np.float32(F.cross_entropy(logits, torch.from_numpy(y)).item())

    # ---- FORCE / Iter-SNIP ----
    results = {}
    for key, method, log_probs in (("force", 3, True), ("itersnip", 1, True), ("force_nll_on_logits", 3, False)):
        scores0, steps = run_force(params, x, y, method, log_probs, get_mask, local_iterative,
                                   get_average_saliencies)
        results[key] = (scores0, steps)
        out.update(tensors(f"{key}/scores0", scores0))
        out.update(tensors(f"{key}/masks", steps[-1][3]))
        if key == "force_nll_on_logits":
            continue
        out[f"{key}/densities"] = np.array([s[1] for s in steps], np.float64)
        out[f"{key}/num_params_to_keep"] = np.array([s[2] for s in steps], np.int64)
        out[f"{key}/kept"] = np.array([int(sum(m.sum() for m in s[3])) for s in steps], np.int64)
        for t, (sal, _, _, mask) in enumerate(steps, 1):
            out.update(tensors(f"{key}/scores_t{t}", sal))
            out.update(tensors(f"{key}/masks_t{t}", mask))

    # ---- ProsPr ----
    p_scores, p_masks = run_prospr(params, x, y, prune, pruning_filter_factory)
    out.update(tensors("prospr/scores", p_scores))
    out.update(tensors("prospr/masks", p_masks))
    out["prospr/steps"] = np.int64(PROSPR_STEPS)
    out["prospr/lr"] = np.float64(PROSPR_LR)
    out["prospr/momentum"] = np.float64(PROSPR_MOMENTUM)
    out["prospr/keep"] = np.int64(ceil(1100 * (1 - 0.8)))

    # ---- Smart Ratio ----
    smart_nets = {"vgg16": ("vgg16_bn", vgg16_layers()), "resnet20": ("resnet", resnet20_layers())}
    for name, (arch, layers) in smart_nets.items():
        out[f"smart/{name}/layers"] = np.array([n for n, _ in layers])
        out[f"smart/{name}/num_params"] = np.array([m.weight.numel() for _, m in layers], np.int64)
        for d in SMART_DENSITIES:
            sargs = smart_args(arch, d)        # called as train_ticket.py l.341 does
            ratios, counts = SmartRatio(as_net(layers), sargs.init_prune_ratio, "cpu", sargs)
            out[f"smart/{name}/{d:g}"] = ratios
            out[f"smart/{name}/{d:g}/num_keep"] = counts

    # ---- optional: the references' own modules give the same ----
    if args.check_against:
        force_mod, prospr_mod, prospr_utils, smart_mod = load_originals(args.check_against)

        def orig_iterative(ori_net, loader, device, recorder, **kw):
            saved = force_mod.get_mask
            force_mod.get_mask = recorder
            try:
                return force_mod.iterative_pruning(ori_net, loader, device, **kw)
            finally:
                force_mod.get_mask = saved

        for key, method, log_probs in (("force", 3, True), ("itersnip", 1, True), ("force_nll_on_logits", 3, False)):
            s0, st = run_force(params, x, y, method, log_probs, force_mod.get_mask, orig_iterative,
                               force_mod.get_average_saliencies)
            r0, rst = results[key]
            assert all(torch.equal(a, b) for a, b in zip(s0, r0)), key
            assert len(st) == len(rst)
            for (sa, pa, ka, ma), (sb, pb, kb, mb) in zip(st, rst):
                assert pa == pb and ka == kb
                assert all(torch.equal(a, b) for a, b in zip(sa, sb)), key
                assert all(torch.equal(a, b) for a, b in zip(ma, mb)), key
        o_scores, o_masks = run_prospr(params, x, y, prospr_mod.prune, prospr_utils.pruning_filter_factory)
        assert all(torch.equal(a, b) for a, b in zip(o_scores, p_scores))
        assert all(torch.equal(a, b) for a, b in zip(o_masks, p_masks))
        saved_cuda = torch.Tensor.cuda
        torch.Tensor.cuda = lambda self, *a, **k: self          # SmartRatio builds its masks with .cuda()
        try:
            for name, (arch, layers) in smart_nets.items():
                for d in SMART_DENSITIES:
                    sargs = smart_args(arch, d)
                    masks = smart_mod.SmartRatio(as_net(layers), sargs.init_prune_ratio, "cpu", sargs)
                    counts = np.array([int(m.sum().item()) for m in masks], np.int64)
                    assert np.array_equal(counts, out[f"smart/{name}/{d:g}/num_keep"]), (name, d, counts)
        finally:
            torch.Tensor.cuda = saved_cuda
        print("copies agree with the original reference modules")

    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes, {len(out)} arrays)")


if __name__ == "__main__":
    main()
