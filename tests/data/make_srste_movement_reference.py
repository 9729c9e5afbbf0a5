"""Stored PyTorch reference outputs for SR-STE N:M training and movement pruning's binarizers.

Run once by hand, with torch and numpy in a scratch environment outside the project (lth never
imports torch):

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/torchvenv/bin/pip install numpy
    /tmp/torchvenv/bin/python tests/data/make_srste_movement_reference.py   # writes tests/data/srste_movement_reference.npz

(made with torch 2.13.0+cpu, numpy 2.4.6, Python 3.11, one CPU thread; runs in about a second.)

Optionally `--check-against DIR`, DIR holding the references' own files: DIR/sparse_ops.py
(NM-sparsity devkit/sparse_ops/sparse_ops.py), DIR/binarizer.py and DIR/masked_nn.py (emmental/
modules/), DIR/masked_run_glue*.py (any file holding masked_run_glue.py's schedule_threshold and
regularization; those two functions are taken out of it with ast, since the file imports emmental,
transformers, tqdm). The script then imports them (a stand-in torch._six module holding
container_abcs = collections.abc, which torch 2 no longer has; masked_nn.py loaded as a submodule of
a package over DIR for its `from .binarizer import`) and asserts torch.equal / == between every
stored value and the originals'. The file was made with --check-against, and it passed, on:
sparse_ops.py from the fetched NM-sparsity repository (git show a557d6b:devkit/sparse_ops/sparse_ops.py);
binarizer.py and masked_nn.py written out from the stored public-code index's text of those versions
(the transformers repository was too large to fetch; the written files have exactly the stored
character counts, 5784 and 4531); masked_run_glue.py's l.1-299 written out the same way.

The reference logic is COPIED from
  * github:aojunzz/NM-sparsity @a557d6b2356a0138a7df67791bd66ba8d59f69df (HEAD; the last commit
    to devkit/sparse_ops/sparse_ops.py): l.9-108 (class Sparse, class Sparse_NHWC, class SparseConv,
    class SparseLinear) verbatim. l.1-6 (imports) are replaced by this file's imports: l.6
    `from torch._six import container_abcs` (unused, and gone from torch 2) is dropped.
  * github:huggingface/transformers, examples/research_projects/movement-pruning/ (Sanh et al. 2020):
      - emmental/modules/binarizer.py, version stored at commit
        76aa58e0a77737befd58793fab7a2ab34faadad8: l.24-66 (ThresholdBinarizer), l.69-108
        (TopKBinarizer), l.111-144 (MagnitudeBinarizer) verbatim (the version at 97903a6352fd differs
        only in docstrings: torch.FloatTensor for torch.Tensor).
      - emmental/modules/masked_nn.py, version stored at commit
        66979d229dc868499c42b6b3ca9097ec304667de: l.32-107 (class MaskedLinear) verbatim (the version
        at 96459e6259d9 has torch.Tensor(size) for torch.empty(size), l.75).
      - masked_run_glue.py, version stored at commit 00e12e7c54598e50e7bef1540db3408f81916de1:
        l.69-89 (schedule_threshold) and l.92-103 (regularization) verbatim (the version at
        0ea01089f778 writes `mul_coeff ** 3`). How train() uses them: l.239-248 (threshold,
        regu_lambda = schedule_threshold(step=global_step, total_step=t_total,
        warmup_steps=args.warmup_steps, ...) each step, BEFORE optimizer.step, global_step counting
        optimizer steps from 0), l.272 (inputs["threshold"] = threshold, handed to every MaskedLinear
        of the model), l.296-299 (`loss = loss + regu_lambda * regu_` with regu_ =
        regularization(model, args.regularization), after the distillation mix). Defaults (argparse):
        initial_threshold 1.0, final_threshold 0.7, initial_warmup 1, final_warmup 2, final_lambda
        0.0, warmup_steps 0, pruning_method topK, mask_init constant, mask_scale 0.0.

What the code does (what a re-implementation must match):
  SR-STE (Sparse / Sparse_NHWC; decay = 0.0002 = the default of forward(); SparseLinear and
  SparseConv call .apply(weight, N, M) without decay, so SparseLinear's own `decay` argument is
  ignored; SparseLinear's default is N=2, M=2 (!), SparseConv's N=2, M=4; always pass N, M):
    * Linear, weight (out, in): |W| flattened in row-major order is cut into numel/M consecutive
      groups of M (reshape(group, M) with group = int(numel/M)): with in % M == 0 these are the
      groups of M consecutive INPUT columns of each output row; otherwise the groups run on across
      row ends (case linear_odd). numel % M != 0 is an error (reshape fails).
    * Conv, weight (out, in, kh, kw): the same on |W|.permute(0, 2, 3, 1) (out, kh, kw, in): groups of
      M consecutive INPUT CHANNELS at fixed (out, kh, kw) when in % M == 0, otherwise running on across
      kernel positions in (out, kh, kw, in) order (case conv_odd). The mask is permuted back.
    * In each group the M - N entries first in torch.argsort(|w|) (ascending, default
      stable=False) are zeroed: the N largest |w| are kept. Ties: see "Facts" (on this CPU build the
      pruned set is the one a STABLE ascending argsort gives: among equal |w| the LOWER index in the
      group is pruned first, the higher kept).
    * forward: w_sparse = W * mask (mask float 0/1); backward: dL/dW = G + decay * (1 - mask) * W,
      G = dL/dw_sparse, i.e. the straight-through gradient (NOT masked) plus decay * W on the
      PRUNED entries only. Computed in float32 as G + ((decay * (1 - mask)) * W).
  Movement pruning:
    * TopKBinarizer(S, t): j = int(t * S.numel()) (Python int() of the float product: truncation,
      t=0.33 on 60 -> 19.8 -> 19); sort(S.flatten(), descending=True) (default stable=False); the first
      j indices get 1, the rest 0. ONE k over the whole matrix (not per row). Ties at the cut: no
      documented order, and torch's pick here is not the stable one (Facts). backward: identity
      (straight-through) to S.
    * ThresholdBinarizer(S, t, sigmoid): mask = sigmoid(S) > t, or S > t (strict; S == t is pruned,
      sigmoid(0) = 0.5 is pruned at t = 0.5). If mask.sum() < nb_min = int(0.005 * numel) + 1
      (here 1), the fallback k_threshold = kthvalue(S.flatten(), max(numel - nb_min, 1)) (k-th
      SMALLEST, 1-based, of the raw S, even when sigmoid=True) and mask = S > k_threshold (keeps
      nb_min entries when the top values are distinct). backward: identity to S.
    * MagnitudeBinarizer(W, t): TopK on |W| (the weight, no scores); no gradient to anything.
    * MaskedLinear.forward(x, threshold): weight_thresholded = mask * weight; F.linear(x,
      weight_thresholded, bias). topK -> TopKBinarizer(mask_scores, threshold); threshold /
      sigmoied_threshold -> ThresholdBinarizer(mask_scores, threshold, sig); l0: l, r, b = -0.1, 1.1,
      2/3; training: u = U(0,1).clamp(1e-4, 1 - 1e-4), s = sigmoid((log u - log(1-u) + scores) / b);
      eval: s = sigmoid(scores); mask = clamp(s * (r - l) + l, 0, 1). With upstream
      G = dL/d(weight_thresholded): dL/dmask_scores = G * weight for topK, threshold AND
      sigmoied_threshold (NO sigmoid derivative: the binarizer passes the gradient straight to the
      raw scores); dL/dweight = G * mask. l0: dL/dscores = G * weight * 1.2 * s(1-s)/(1 or b) where
      0 < s*1.2-0.1 < 1, else 0.
    * schedule_threshold(step, total_step, warmup_steps, initial_threshold, final_threshold,
      initial_warmup, final_warmup, final_lambda): threshold = initial_threshold while
      step <= initial_warmup * warmup_steps; = final_threshold when step > total_step - final_warmup
      * warmup_steps; in between threshold = final + (initial - final) * (1 - (step - iw*ws) /
      (total_step - (fw+iw)*ws))**3. regu_lambda = final_lambda * threshold / final_threshold (so it
      ramps WITH the threshold; ZeroDivisionError if final_threshold == 0). Python floats (float64).
    * regularization(model, mode): mean over the model's mask_scores parameters (counter) of
      l1: ||sigmoid(S)||_1 / numel = mean(sigmoid(S)); l0: mean(sigmoid(S - 2/3 * log(0.1 / 1.1))).
      Added to the loss as loss + regu_lambda * regu (regu_lambda from schedule_threshold).

Inputs (all stored; float32), from np.random.default_rng(0) in this order (each standard_normal):
  SR-STE cases <c>: w then g (g = dL/dw_sparse, same shape), for c in linear (8, 16), conv
  (4, 8, 3, 3), conv_odd (4, 6, 3, 3), linear_odd (6, 10); then linear_ties (4, 8) = 0.5 *
  rng.integers(-2, 3, (4, 8)) (|w| in {0, .5, 1}: many ties, signs differ) and its g standard_normal.
  Movement: weight (6, 10), scores (6, 10), upstream (6, 10), scores2 (4, 6); then in scores (ranks
  = positions in the stable descending order of the flattened float32 draw): the entry of rank 40
  := 0.0 and the entry of rank 33 := float32(0.1) exactly; re-ranked (they are now ranks 30 and 28):
  rank 29 := 0.0 (a 2-way tie at 0.0 across the topK 0.5 cut j = 30, and two scores with
  sigmoid = 0.5 exactly), ranks 4,5 := the rank-4 value (a tie away from any cut), ranks 16,17,18 :=
  the rank-17 value (a 3-way tie across the topK 0.3 cut j = 18). The l0 training noise u (6, 10) is
  torch's: torch.manual_seed(1234) then the forward's own uniform_() call; stored.

Keys (float32 unless said; masks are float32 0/1 as the code makes them, 1 = KEPT):
  srste/decay () float64                    0.0002.
  srste/<c>/w, srste/<c>/g                  the dense weight and the upstream gradient dL/dw_sparse.
  srste/<c>/<nm>/mask                       ctx.mask (1 = kept), shape of w.
  srste/<c>/<nm>/w_sparse                   the forward output W * mask.
  srste/<c>/<nm>/grad                       dL/dW from the backward.
  srste/<c>/<nm>/tied bool                  entries of groups whose (M-N)-th and (M-N+1)-th smallest
                                            |w| are equal, having that |w| (where a tie rule decides;
                                            only linear_ties has any).
    <c>/<nm>: linear/{2of4,4of8}, conv/{2of4,4of8}, conv_odd/{2of4,4of8}, linear_odd/2of4,
    linear_ties/{2of4,4of8}. (Linear via SparseLinear(in, out, N=, M=), conv via SparseConv(in, out,
    kernel_size=3, bias=False, N=, M=), weight copied in, get_sparse_weights().backward(g).)
  mp/weight, mp/scores, mp/upstream (6, 10); mp/scores2 (4, 6)   (see Inputs).
  mp/topk/<t>/mask (6, 10)                  TopKBinarizer.apply(scores, t), t in 0.3, 0.5, 0.33.
  mp/topk/<t>/tied bool (6, 10)             if the j-th and (j+1)-th largest scores are equal, the
                                            entries with that value (0.3: 3 entries, 2 kept; 0.5: 2
                                            entries, 1 kept; 0.33: none). Torch's pick among them is
                                            NOT the stable-sort one (see Facts): compare off these.
  mp/threshold/sig_0.5/mask                 ThresholdBinarizer.apply(scores, 0.5, True).
  mp/threshold/nosig_0.1/mask               ThresholdBinarizer.apply(scores, 0.1, False).
  mp/threshold/nosig_5.0/mask               ThresholdBinarizer.apply(scores, 5.0, False): nothing > 5,
                                            so the kthvalue fallback (keeps the single max).
  mp/threshold/sig_0.999/mask               ThresholdBinarizer.apply(scores, 0.999, True): fallback.
  mp/magnitude/0.3/mask                     MagnitudeBinarizer.apply(weight, 0.3).
  mp/masked_linear/<m>/masked_weight        weight_thresholded of MaskedLinear(10, 6, bias=False,
                                            pruning_method=...) with weight, mask_scores = scores.
  mp/masked_linear/<m>/grad_scores          dL/dmask_scores, L with dL/d(weight_thresholded) = upstream.
  mp/masked_linear/<m>/grad_weight          dL/dweight.
    <m>: topK_0.3, topK_0.5, sigmoied_threshold_0.5, threshold_0.1, l0_eval (layer.eval()),
    l0_train (layer.train(), noise u below). (Driven with x = eye(10): the output is
    weight_thresholded^T exactly; backward of upstream^T.)
  mp/masked_linear/l0_train/u (6, 10)       the clamped uniform noise the training forward drew.
  mp/regu/<mode>/value () float32           regularization(model, mode) for a model holding two
                                            MaskedLinear: (10->6, mask_scores = scores) and (6->4,
                                            mask_scores = scores2), mode in l1, l0 (mean of the two
                                            per-matrix means).
  mp/regu/<mode>/grad_scores, grad_scores2  d value / d mask_scores of each layer.
  mp/sched/<s>/params (7,) float64          [initial_threshold, final_threshold, initial_warmup,
                                            final_warmup, total_step, warmup_steps, final_lambda].
  mp/sched/<s>/step (106,) int64            0..105.
  mp/sched/<s>/threshold, regu_lambda (106,) float64   schedule_threshold at each step.
    <s>: topk (1.0, 0.1, 1, 2, 100, 10, 0.0: the brief's typical movement setting),
         soft (0.0, 0.1, 1, 2, 100, 10, 400.0: the README's soft-movement setting, scaled down),
         l0 (1.0, 1.0, 1, 1, 100, 10, 125.0: the README's L0 setting).

Facts (checked when it was made; printed by the script):
  * SR-STE: every stored grad == g + (float32(0.0002) * (1 - mask)) * w and w_sparse == w * mask
    exactly; every mask keeps exactly N per group (linear 64/128, conv 144/288, conv_odd 108/216,
    linear_odd 30/60, linear_ties 16/32) and equals the numpy rule "stable ascending argsort of |w|
    per group, first M-N pruned" (groups as described above), INCLUDING linear_ties, whose groups
    hold ties across the cut (2of4: 4 groups, 4of8: 3 groups; 14 tied entries each): on this CPU
    build torch.argsort picked like a stable sort (lower index pruned first). torch documents no
    such order for stable=False, so a test may also compare off srste/<c>/<nm>/tied. No other
    case has a tie in any group.
  * topK: j = 18, 30, 19 for t = 0.3, 0.5, 0.33 (0.33*60 = 19.8 -> 19); exactly j kept. At the
    ties across the cut torch's default descending sort is NOT stable: t=0.3, tied flat indices
    [17, 22, 24] (value 0.5158293), torch kept 17 and 24 (a stable sort keeps 17, 22); t=0.5, tied
    [18, 40] (value 0.0), torch kept 40 (stable: 18). Away from the tied entries every topK mask
    equals the stable-sort rule.
  * threshold: sig_0.5 keeps 29 (scores 0.0 at flat 18 and 40 have sigmoid exactly 0.5: pruned);
    nosig_0.1 keeps 28 (flat 39 is float32(0.1): pruned, strict >); nosig_5.0 and sig_0.999 keep
    nothing, so the fallback keeps the single largest score (1 entry) in both.
  * MaskedLinear: for topK_*, sigmoied_threshold_0.5, threshold_0.1: masked_weight == mask *
    weight, grad_scores == upstream * weight, grad_weight == upstream * mask, exactly (mask = the
    matching mp/topk or mp/threshold mask). l0_eval: no entry clamped; l0_train: 9 entries clamped
    to 0, 11 to 1 (their grad_scores are 0); float64 formula vs stored: <= 2.7e-7 (masked_weight),
    <= 3.3e-7 (grad_scores).
  * regu: l1 = 0.5037056, l0 = 0.7961314 (float64 formula agrees to 1e-7).
  * schedules at steps 0, 10, 11, 45, 79, 80, 81, 100, 105: topk 1, 1, 0.961977, 0.2125, 0.100003,
    0.1, 0.1, 0.1, 0.1 (step 80 is still the cubic branch, mul_coeff = 0); soft 0, 0, 0.00422478,
    0.0875, 0.0999997, 0.1, ...; its regu_lambda at 11, 45, 81 = 16.8991, 350, 400; l0 constant 1
    with regu_lambda 125.
"""
from __future__ import annotations

import argparse
import ast
import collections.abc
import importlib
import os
import sys
import types

import numpy as np
import torch
from torch import autograd, nn
import torch.nn.functional as F
from torch.nn import init
import math

from itertools import repeat

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "srste_movement_reference.npz")
DECAY = 0.0002
SRSTE_CASES = {  # name -> (shape, [(N, M), ...])
    "linear": ((8, 16), [(2, 4), (4, 8)]),
    "conv": ((4, 8, 3, 3), [(2, 4), (4, 8)]),
    "conv_odd": ((4, 6, 3, 3), [(2, 4), (4, 8)]),
    "linear_odd": ((6, 10), [(2, 4)]),
    "linear_ties": ((4, 8), [(2, 4), (4, 8)]),
}
TOPK_THRESHOLDS = (0.3, 0.5, 0.33)
THRESHOLD_CASES = {"sig_0.5": (0.5, True), "nosig_0.1": (0.1, False), "nosig_5.0": (5.0, False),
                   "sig_0.999": (0.999, True)}
MASKED_LINEAR_CASES = {  # name -> (pruning_method, threshold, training)
    "topK_0.3": ("topK", 0.3, True),
    "topK_0.5": ("topK", 0.5, True),
    "sigmoied_threshold_0.5": ("sigmoied_threshold", 0.5, True),
    "threshold_0.1": ("threshold", 0.1, True),
    "l0_eval": ("l0", 1.0, False),
    "l0_train": ("l0", 1.0, True),
}
L0_SEED = 1234
SCHEDULES = {  # name -> dict of schedule_threshold keyword arguments (but step)
    "topk": dict(initial_threshold=1.0, final_threshold=0.1, initial_warmup=1, final_warmup=2,
                 total_step=100, warmup_steps=10, final_lambda=0.0),
    "soft": dict(initial_threshold=0.0, final_threshold=0.1, initial_warmup=1, final_warmup=2,
                 total_step=100, warmup_steps=10, final_lambda=400.0),
    "l0": dict(initial_threshold=1.0, final_threshold=1.0, initial_warmup=1, final_warmup=1,
               total_step=100, warmup_steps=10, final_lambda=125.0),
}
SCHED_PARAM_ORDER = ("initial_threshold", "final_threshold", "initial_warmup", "final_warmup",
                     "total_step", "warmup_steps", "final_lambda")


# =============================================================================================
# SR-STE — copied from github:aojunzz/NM-sparsity @a557d6b (devkit/sparse_ops/sparse_ops.py)
# l.9-108 verbatim (l.1-6, the imports, are this file's imports above, minus l.6
# `from torch._six import container_abcs`, unused and gone from torch 2).
# =============================================================================================

class Sparse(autograd.Function):
    """" Prune the unimprotant weight for the forwards phase but pass the gradient to dense weight using SR-STE in the backwards phase"""

    @staticmethod
    def forward(ctx, weight, N, M, decay = 0.0002):
        ctx.save_for_backward(weight)

        output = weight.clone()
        length = weight.numel()
        group = int(length/M)

        weight_temp = weight.detach().abs().reshape(group, M)
        index = torch.argsort(weight_temp, dim=1)[:, :int(M-N)]

        w_b = torch.ones(weight_temp.shape, device=weight_temp.device)
        w_b = w_b.scatter_(dim=1, index=index, value=0).reshape(weight.shape)
        ctx.mask = w_b
        ctx.decay = decay

        return output*w_b


    @staticmethod
    def backward(ctx, grad_output):

        weight, = ctx.saved_tensors
        return grad_output + ctx.decay * (1-ctx.mask) * weight, None, None
class Sparse_NHWC(autograd.Function):
    """" Prune the unimprotant edges for the forwards phase but pass the gradient to dense weight using SR-STE in the backwards phase"""

    @staticmethod
    def forward(ctx, weight, N, M, decay = 0.0002):

        ctx.save_for_backward(weight)
        output = weight.clone()
        length = weight.numel()
        group = int(length/M)

        weight_temp = weight.detach().abs().permute(0,2,3,1).reshape(group, M)
        index = torch.argsort(weight_temp, dim=1)[:, :int(M-N)]

        w_b = torch.ones(weight_temp.shape, device=weight_temp.device)
        w_b = w_b.scatter_(dim=1, index=index, value=0).reshape(weight.permute(0,2,3,1).shape)
        w_b = w_b.permute(0,3,1,2)

        ctx.mask = w_b
        ctx.decay = decay

        return output*w_b

    @staticmethod
    def backward(ctx, grad_output):

        weight, = ctx.saved_tensors
        return grad_output + ctx.decay * (1-ctx.mask) * weight, None, None

class SparseConv(nn.Conv2d):
    """" implement N:M sparse convolution layer """
    
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True, padding_mode='zeros', N=2, M=4, **kwargs):
        self.N = N
        self.M = M
        super(SparseConv, self).__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, **kwargs)


    def get_sparse_weights(self):

        return Sparse_NHWC.apply(self.weight, self.N, self.M)



    def forward(self, x):

        w = self.get_sparse_weights()
        x = F.conv2d(
            x, w, self.bias, self.stride, self.padding, self.dilation, self.groups
        )
        return x



class SparseLinear(nn.Linear):

    def __init__(self, in_features: int, out_features: int, bias: bool = True, N=2, M=2, decay = 0.0002, **kwargs):
        self.N = N
        self.M = M
        super(SparseLinear, self).__init__(in_features, out_features, bias = True)


    def get_sparse_weights(self):

        return Sparse.apply(self.weight, self.N, self.M)



    def forward(self, x):

        w = self.get_sparse_weights()
        x = F.linear(x, w, self.bias)
        return x


# =============================================================================================
# Movement pruning — copied from github:huggingface/transformers
# examples/research_projects/movement-pruning/emmental/modules/binarizer.py (version @76aa58e)
# l.24-66, l.69-108, l.111-144 verbatim.
# =============================================================================================

class ThresholdBinarizer(autograd.Function):
    """
    Thresholdd binarizer.
    Computes a binary mask M from a real value matrix S such that `M_{i,j} = 1` if and only if `S_{i,j} > \tau`
    where `\tau` is a real value threshold.

    Implementation is inspired from:
        https://github.com/arunmallya/piggyback
        Piggyback: Adapting a Single Network to Multiple Tasks by Learning to Mask Weights
        Arun Mallya, Dillon Davis, Svetlana Lazebnik
    """

    @staticmethod
    def forward(ctx, inputs: torch.tensor, threshold: float, sigmoid: bool):
        """
        Args:
            inputs (`torch.Tensor`)
                The input matrix from which the binarizer computes the binary mask.
            threshold (`float`)
                The threshold value (in R).
            sigmoid (`bool`)
                If set to ``True``, we apply the sigmoid function to the `inputs` matrix before comparing to `threshold`.
                In this case, `threshold` should be a value between 0 and 1.
        Returns:
            mask (`torch.Tensor`)
                Binary matrix of the same size as `inputs` acting as a mask (1 - the associated weight is
                retained, 0 - the associated weight is pruned).
        """
        nb_elems = inputs.numel()
        nb_min = int(0.005 * nb_elems) + 1
        if sigmoid:
            mask = (torch.sigmoid(inputs) > threshold).type(inputs.type())
        else:
            mask = (inputs > threshold).type(inputs.type())
        if mask.sum() < nb_min:
            # We limit the pruning so that at least 0.5% (half a percent) of the weights are remaining
            k_threshold = inputs.flatten().kthvalue(max(nb_elems - nb_min, 1)).values
            mask = (inputs > k_threshold).type(inputs.type())
        return mask

    @staticmethod
    def backward(ctx, gradOutput):
        return gradOutput, None, None


class TopKBinarizer(autograd.Function):
    """
    Top-k Binarizer.
    Computes a binary mask M from a real value matrix S such that `M_{i,j} = 1` if and only if `S_{i,j}`
    is among the k% highest values of S.

    Implementation is inspired from:
        https://github.com/allenai/hidden-networks
        What's hidden in a randomly weighted neural network?
        Vivek Ramanujan*, Mitchell Wortsman*, Aniruddha Kembhavi, Ali Farhadi, Mohammad Rastegari
    """

    @staticmethod
    def forward(ctx, inputs: torch.tensor, threshold: float):
        """
        Args:
            inputs (`torch.Tensor`)
                The input matrix from which the binarizer computes the binary mask.
            threshold (`float`)
                The percentage of weights to keep (the rest is pruned).
                `threshold` is a float between 0 and 1.
        Returns:
            mask (`torch.Tensor`)
                Binary matrix of the same size as `inputs` acting as a mask (1 - the associated weight is
                retained, 0 - the associated weight is pruned).
        """
        # Get the subnetwork by sorting the inputs and using the top threshold %
        mask = inputs.clone()
        _, idx = inputs.flatten().sort(descending=True)
        j = int(threshold * inputs.numel())

        # flat_out and mask access the same memory.
        flat_out = mask.flatten()
        flat_out[idx[j:]] = 0
        flat_out[idx[:j]] = 1
        return mask

    @staticmethod
    def backward(ctx, gradOutput):
        return gradOutput, None


class MagnitudeBinarizer:
    """
    Magnitude Binarizer.
    Computes a binary mask M from a real value matrix S such that `M_{i,j} = 1` if and only if `S_{i,j}`
    is among the k% highest values of |S| (absolute value).

    Implementation is inspired from https://github.com/NervanaSystems/distiller/blob/2291fdcc2ea642a98d4e20629acb5a9e2e04b4e6/distiller/pruning/automated_gradual_pruner.py#L24
    """

    @staticmethod
    def apply(inputs: torch.tensor, threshold: float):
        """
        Args:
            inputs (`torch.Tensor`)
                The input matrix from which the binarizer computes the binary mask.
                This input marix is typically the weight matrix.
            threshold (`float`)
                The percentage of weights to keep (the rest is pruned).
                `threshold` is a float between 0 and 1.
        Returns:
            mask (`torch.Tensor`)
                Binary matrix of the same size as `inputs` acting as a mask (1 - the associated weight is
                retained, 0 - the associated weight is pruned).
        """
        # Get the subnetwork by sorting the inputs and using the top threshold %
        mask = inputs.clone()
        _, idx = inputs.abs().flatten().sort(descending=True)
        j = int(threshold * inputs.numel())

        # flat_out and mask access the same memory.
        flat_out = mask.flatten()
        flat_out[idx[j:]] = 0
        flat_out[idx[:j]] = 1
        return mask


# =============================================================================================
# Movement pruning — copied from .../emmental/modules/masked_nn.py (version @66979d2) l.32-107
# verbatim.
# =============================================================================================

class MaskedLinear(nn.Linear):
    """
    Fully Connected layer with on the fly adaptive mask.
    If needed, a score matrix is created to store the importance of each associated weight.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        mask_init: str = "constant",
        mask_scale: float = 0.0,
        pruning_method: str = "topK",
    ):
        """
        Args:
            in_features (`int`)
                Size of each input sample
            out_features (`int`)
                Size of each output sample
            bias (`bool`)
                If set to ``False``, the layer will not learn an additive bias.
                Default: ``True``
            mask_init (`str`)
                The initialization method for the score matrix if a score matrix is needed.
                Choices: ["constant", "uniform", "kaiming"]
                Default: ``constant``
            mask_scale (`float`)
                The initialization parameter for the chosen initialization method `mask_init`.
                Default: ``0.``
            pruning_method (`str`)
                Method to compute the mask.
                Choices: ["topK", "threshold", "sigmoied_threshold", "magnitude", "l0"]
                Default: ``topK``
        """
        super(MaskedLinear, self).__init__(in_features=in_features, out_features=out_features, bias=bias)
        assert pruning_method in ["topK", "threshold", "sigmoied_threshold", "magnitude", "l0"]
        self.pruning_method = pruning_method

        if self.pruning_method in ["topK", "threshold", "sigmoied_threshold", "l0"]:
            self.mask_scale = mask_scale
            self.mask_init = mask_init
            self.mask_scores = nn.Parameter(torch.empty(self.weight.size()))
            self.init_mask()

    def init_mask(self):
        if self.mask_init == "constant":
            init.constant_(self.mask_scores, val=self.mask_scale)
        elif self.mask_init == "uniform":
            init.uniform_(self.mask_scores, a=-self.mask_scale, b=self.mask_scale)
        elif self.mask_init == "kaiming":
            init.kaiming_uniform_(self.mask_scores, a=math.sqrt(5))

    def forward(self, input: torch.tensor, threshold: float):
        # Get the mask
        if self.pruning_method == "topK":
            mask = TopKBinarizer.apply(self.mask_scores, threshold)
        elif self.pruning_method in ["threshold", "sigmoied_threshold"]:
            sig = "sigmoied" in self.pruning_method
            mask = ThresholdBinarizer.apply(self.mask_scores, threshold, sig)
        elif self.pruning_method == "magnitude":
            mask = MagnitudeBinarizer.apply(self.weight, threshold)
        elif self.pruning_method == "l0":
            l, r, b = -0.1, 1.1, 2 / 3
            if self.training:
                u = torch.zeros_like(self.mask_scores).uniform_().clamp(0.0001, 0.9999)
                s = torch.sigmoid((u.log() - (1 - u).log() + self.mask_scores) / b)
            else:
                s = torch.sigmoid(self.mask_scores)
            s_bar = s * (r - l) + l
            mask = s_bar.clamp(min=0.0, max=1.0)
        # Mask weights with computed mask
        weight_thresholded = mask * self.weight
        # Compute output (linear layer) with masked weights
        return F.linear(input, weight_thresholded, self.bias)


# =============================================================================================
# Movement pruning — copied from .../masked_run_glue.py (version @00e12e7) l.69-89 and l.92-103
# verbatim.
# =============================================================================================

def schedule_threshold(
    step: int,
    total_step: int,
    warmup_steps: int,
    initial_threshold: float,
    final_threshold: float,
    initial_warmup: int,
    final_warmup: int,
    final_lambda: float,
):
    if step <= initial_warmup * warmup_steps:
        threshold = initial_threshold
    elif step > (total_step - final_warmup * warmup_steps):
        threshold = final_threshold
    else:
        spars_warmup_steps = initial_warmup * warmup_steps
        spars_schedu_steps = (final_warmup + initial_warmup) * warmup_steps
        mul_coeff = 1 - (step - spars_warmup_steps) / (total_step - spars_schedu_steps)
        threshold = final_threshold + (initial_threshold - final_threshold) * (mul_coeff**3)
    regu_lambda = final_lambda * threshold / final_threshold
    return threshold, regu_lambda


def regularization(model: nn.Module, mode: str):
    regu, counter = 0, 0
    for name, param in model.named_parameters():
        if "mask_scores" in name:
            if mode == "l1":
                regu += torch.norm(torch.sigmoid(param), p=1) / param.numel()
            elif mode == "l0":
                regu += torch.sigmoid(param - 2 / 3 * np.log(0.1 / 1.1)).sum() / param.numel()
            else:
                ValueError("Don't know this mode.")
            counter += 1
    return regu / counter


# =============================================================================================
# Data
# =============================================================================================

def make_inputs():
    rng = np.random.default_rng(0)
    d = {}
    for c, (shape, _) in SRSTE_CASES.items():
        if c == "linear_ties":
            w = 0.5 * rng.integers(-2, 3, shape)
        else:
            w = rng.standard_normal(shape)
        d[f"srste/{c}/w"] = w.astype(np.float32)
        d[f"srste/{c}/g"] = rng.standard_normal(shape).astype(np.float32)
    weight = rng.standard_normal((6, 10)).astype(np.float32)
    s = rng.standard_normal((6, 10)).astype(np.float32)
    upstream = rng.standard_normal((6, 10)).astype(np.float32)
    scores2 = rng.standard_normal((4, 6)).astype(np.float32)
    flat = s.reshape(-1)                                   # a view: edits go into s
    order = np.argsort(-flat, kind="stable")
    i0, i1 = order[40], order[33]
    flat[i0] = 0.0
    flat[i1] = np.float32(0.1)
    order = list(np.argsort(-flat, kind="stable"))         # ranks after those two edits
    assert order.index(i0) == 30 and order.index(i1) == 28, (order.index(i0), order.index(i1))
    flat[order[29]] = 0.0                                  # a 0.0 tie across the 0.5 cut (ranks 29, 30)
    flat[order[5]] = flat[order[4]]
    flat[order[16]] = flat[order[18]] = flat[order[17]]
    d["mp/weight"], d["mp/scores"], d["mp/upstream"], d["mp/scores2"] = weight, s, upstream, scores2
    return d


# =============================================================================================
# Runs
# =============================================================================================

def nm_rule_numpy(w, n, m, conv):
    """Independent check: the mask a STABLE ascending argsort of |w| per group gives (lower index
    pruned first among ties), groups over the row-major flattening of w (linear) or of w in
    (out, kh, kw, in) order (conv)."""
    a = np.abs(w.transpose(0, 2, 3, 1) if conv else w).reshape(-1, m)
    idx = np.argsort(a, axis=1, kind="stable")[:, : m - n]
    mask = np.ones_like(a)
    np.put_along_axis(mask, idx, 0.0, axis=1)
    mask = mask.reshape(w.transpose(0, 2, 3, 1).shape if conv else w.shape)
    return mask.transpose(0, 3, 1, 2) if conv else mask


def nm_tied(w, n, m):
    """Bool, shape of w: the entries of the groups whose (M-N)-th and (M-N+1)-th smallest |w| are
    equal, and whose |w| equals that value (the entries a tie rule decides between)."""
    conv = w.ndim == 4
    a = np.abs(w.transpose(0, 2, 3, 1) if conv else w).reshape(-1, m)
    srt = np.sort(a, axis=1)
    cut = srt[:, m - n - 1]
    tied = (cut == srt[:, m - n])[:, None] & (a == cut[:, None])
    tied = tied.reshape(w.transpose(0, 2, 3, 1).shape if conv else w.shape)
    return tied.transpose(0, 3, 1, 2) if conv else tied


def topk_tied(s, j):
    """Bool, shape of s: if the j-th and (j+1)-th largest scores are equal, the entries equal to
    that value (the ones a tie rule decides between); else all False."""
    d = np.sort(s.reshape(-1))[::-1]
    if 0 < j < d.size and d[j - 1] == d[j]:
        return s == d[j]
    return np.zeros(s.shape, bool)


def run_srste(w, g, n, m, classes=None):
    """Driven as the layers drive it: layer.get_sparse_weights() (Sparse / Sparse_NHWC .apply(weight,
    N, M), decay defaulted), then .backward(g). Returns (mask, w_sparse, grad)."""
    SL, SC = (SparseLinear, SparseConv) if classes is None else classes
    if w.ndim == 2:
        layer = SL(w.shape[1], w.shape[0], N=n, M=m)
    else:
        layer = SC(w.shape[1], w.shape[0], kernel_size=w.shape[2], bias=False, N=n, M=m)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
    ws = layer.get_sparse_weights()
    mask = ws.grad_fn.mask.clone()                  # the autograd node IS the ctx
    assert ws.grad_fn.decay == DECAY
    ws.backward(torch.from_numpy(g))
    return mask, ws.detach().clone(), layer.weight.grad.clone()


def run_masked_linear(weight, scores, upstream, method, threshold, training, cls=None):
    cls = MaskedLinear if cls is None else cls
    layer = cls(weight.shape[1], weight.shape[0], bias=False, pruning_method=method)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.mask_scores.copy_(torch.from_numpy(scores))
    layer.train(training)
    torch.manual_seed(L0_SEED)
    out = layer(torch.eye(weight.shape[1]), threshold)        # = weight_thresholded^T exactly
    out.backward(torch.from_numpy(upstream).t())                # dL/d(weight_thresholded) = upstream
    return out.detach().t().clone(), layer.mask_scores.grad.clone(), layer.weight.grad.clone()


class TwoLayers(nn.Module):
    def __init__(self, scores, scores2, cls=None):
        super().__init__()
        cls = MaskedLinear if cls is None else cls
        self.a = cls(10, 6, bias=False, pruning_method="sigmoied_threshold")
        self.b = cls(6, 4, bias=False, pruning_method="sigmoied_threshold")
        with torch.no_grad():
            self.a.mask_scores.copy_(torch.from_numpy(scores))
            self.b.mask_scores.copy_(torch.from_numpy(scores2))


def run_regu(scores, scores2, mode, regu_fn=None, cls=None):
    regu_fn = regularization if regu_fn is None else regu_fn
    model = TwoLayers(scores, scores2, cls)
    r = regu_fn(model, mode)
    r.backward()
    return r.detach().clone(), model.a.mask_scores.grad.clone(), model.b.mask_scores.grad.clone()


def run_all(inp, mods=None):
    """All stored outputs, computed with this file's copies (mods None) or with the originals."""
    mods = mods or {}
    g = lambda name, default: mods.get(name, default)  # noqa: E731
    out = {}
    for c, (shape, nms) in SRSTE_CASES.items():
        for n, m in nms:
            mask, ws, grad = run_srste(inp[f"srste/{c}/w"], inp[f"srste/{c}/g"], n, m,
                                       (g("SparseLinear", SparseLinear), g("SparseConv", SparseConv)))
            p = f"srste/{c}/{n}of{m}"
            out[f"{p}/mask"], out[f"{p}/w_sparse"], out[f"{p}/grad"] = mask.numpy(), ws.numpy(), grad.numpy()
            out[f"{p}/tied"] = nm_tied(inp[f"srste/{c}/w"], n, m)
    S, W, G = (torch.from_numpy(inp[k]) for k in ("mp/scores", "mp/weight", "mp/upstream"))
    for t in TOPK_THRESHOLDS:
        out[f"mp/topk/{t}/mask"] = g("TopKBinarizer", TopKBinarizer).apply(S, t).numpy()
        out[f"mp/topk/{t}/tied"] = topk_tied(inp["mp/scores"], int(t * inp["mp/scores"].size))
    for name, (t, sig) in THRESHOLD_CASES.items():
        out[f"mp/threshold/{name}/mask"] = g("ThresholdBinarizer", ThresholdBinarizer).apply(S, t, sig).numpy()
    out["mp/magnitude/0.3/mask"] = g("MagnitudeBinarizer", MagnitudeBinarizer).apply(W, 0.3).numpy()
    for name, (method, t, training) in MASKED_LINEAR_CASES.items():
        wt, gs, gw = run_masked_linear(inp["mp/weight"], inp["mp/scores"], inp["mp/upstream"], method, t,
                                       training, g("MaskedLinear", MaskedLinear))
        p = f"mp/masked_linear/{name}"
        out[f"{p}/masked_weight"], out[f"{p}/grad_scores"], out[f"{p}/grad_weight"] = wt.numpy(), gs.numpy(), gw.numpy()
    for mode in ("l1", "l0"):
        v, g1, g2 = run_regu(inp["mp/scores"], inp["mp/scores2"], mode, g("regularization", regularization),
                             g("MaskedLinear", MaskedLinear))
        out[f"mp/regu/{mode}/value"] = v.numpy()
        out[f"mp/regu/{mode}/grad_scores"], out[f"mp/regu/{mode}/grad_scores2"] = g1.numpy(), g2.numpy()
    sched = g("schedule_threshold", schedule_threshold)
    for name, kw in SCHEDULES.items():
        steps = np.arange(106, dtype=np.int64)
        res = [sched(step=int(s), **kw) for s in steps]
        out[f"mp/sched/{name}/params"] = np.array([kw[k] for k in SCHED_PARAM_ORDER], np.float64)
        out[f"mp/sched/{name}/step"] = steps
        out[f"mp/sched/{name}/threshold"] = np.array([r[0] for r in res], np.float64)
        out[f"mp/sched/{name}/regu_lambda"] = np.array([r[1] for r in res], np.float64)
    return out


# =============================================================================================
# Facts (independent re-derivations, printed and asserted)
# =============================================================================================

def facts_of(inp, out):
    facts = []
    sig = lambda x: 1.0 / (1.0 + np.exp(-x.astype(np.float64)))  # noqa: E731
    for c, (shape, nms) in SRSTE_CASES.items():
        w, gr = inp[f"srste/{c}/w"], inp[f"srste/{c}/g"]
        for n, m in nms:
            p = f"srste/{c}/{n}of{m}"
            mask = out[f"{p}/mask"]
            assert np.array_equal(out[f"{p}/w_sparse"], w * mask), p
            want = gr + (np.float32(DECAY) * (1 - mask)) * w
            assert np.array_equal(out[f"{p}/grad"], want), p
            stable = nm_rule_numpy(w, n, m, w.ndim == 4)
            a = np.abs(w.transpose(0, 2, 3, 1) if w.ndim == 4 else w).reshape(-1, m)
            srt = np.sort(a, axis=1)
            tied_groups = int(np.sum(srt[:, m - n - 1] == srt[:, m - n]))
            facts.append(f"{p}: kept {int(mask.sum())}/{mask.size}; == stable-argsort rule (lower index "
                         f"pruned first among ties): {np.array_equal(mask, stable)}; groups with a tie "
                         f"across the cut: {tied_groups} ({int(out[f'{p}/tied'].sum())} tied entries)")
            assert np.array_equal(mask, stable), p
    s = inp["mp/scores"].reshape(-1)
    order = np.argsort(-s, kind="stable")
    for t in TOPK_THRESHOLDS:
        mk = out[f"mp/topk/{t}/mask"].reshape(-1)
        j = int(t * s.size)
        stable = np.zeros_like(mk)
        stable[order[:j]] = 1
        cut_tie = s[order[j - 1]] == s[order[j]]
        tied = out[f"mp/topk/{t}/tied"].reshape(-1)
        tie_txt = ""
        if cut_tie:
            ti = np.flatnonzero(tied)
            tie_txt = (f" (flat indices {list(map(int, ti))}, value {s[ti[0]]:.7g}: torch kept "
                       f"{[int(i) for i in ti if mk[i]]}, a stable sort keeps {[int(i) for i in ti if stable[i]]})")
        facts.append(f"topK {t}: j = int({t}*60) = {j}, kept {int(mk.sum())}; tie across the cut: {bool(cut_tie)}"
                     f"{tie_txt}; == stable descending sort: {np.array_equal(mk, stable)}; "
                     f"== it away from the tied entries: {np.array_equal(mk[~tied], stable[~tied])}")
        assert mk.sum() == j and np.array_equal(mk[~tied], stable[~tied])
    for name, (t, sg) in THRESHOLD_CASES.items():
        mk = out[f"mp/threshold/{name}/mask"].reshape(-1)
        direct = ((sig(s) > t) if sg else (s > np.float32(t))).astype(np.float32)
        fb = direct.sum() < 1
        if fb:
            k = np.sort(s)[max(60 - 1, 1) - 1]
            direct = (s > k).astype(np.float32)
        facts.append(f"threshold {name}: kept {int(mk.sum())}, fallback used: {bool(fb)}")
        assert np.array_equal(mk, direct), name
    i0, i1 = np.flatnonzero(s == 0.0), np.flatnonzero(s == np.float32(0.1))
    facts.append(f"scores flat indices {list(map(int, i0))} are 0.0 (sig_0.5 mask there "
                 f"{out['mp/threshold/sig_0.5/mask'].reshape(-1)[i0].tolist()}), flat index {list(map(int, i1))} "
                 f"is float32(0.1) (nosig_0.1 mask there {out['mp/threshold/nosig_0.1/mask'].reshape(-1)[i1].tolist()})")
    W, S, G = inp["mp/weight"], inp["mp/scores"], inp["mp/upstream"]
    for name, (method, t, training) in MASKED_LINEAR_CASES.items():
        p = f"mp/masked_linear/{name}"
        if method == "topK":
            mk = out[f"mp/topk/{t}/mask"]
        elif method == "sigmoied_threshold":
            mk = out["mp/threshold/sig_0.5/mask"]
        elif method == "threshold":
            mk = out["mp/threshold/nosig_0.1/mask"]
        else:
            mk = None
        if mk is not None:
            assert np.array_equal(out[f"{p}/masked_weight"], mk * W), p
            assert np.array_equal(out[f"{p}/grad_scores"], G * W), p
            assert np.array_equal(out[f"{p}/grad_weight"], G * mk), p
        else:
            x = S.astype(np.float64)
            if training:
                u = out["mp/masked_linear/l0_train/u"].astype(np.float64)
                sv = sig((np.log(u) - np.log(1 - u) + x) / (2 / 3))
                dsd = sv * (1 - sv) / (2 / 3)
            else:
                sv = sig(x)
                dsd = sv * (1 - sv)
            sb = sv * 1.2 - 0.1
            mk = np.clip(sb, 0, 1)
            inside = (sb > 0) & (sb < 1)
            e1 = np.abs(out[f"{p}/masked_weight"] - mk * W).max()
            e2 = np.abs(out[f"{p}/grad_scores"] - G * W * 1.2 * dsd * inside).max()
            facts.append(f"{name}: mask entries exactly 0 / 1: {int((mk == 0).sum())} / {int((mk == 1).sum())}; "
                         f"max|masked_weight - float64 formula| {e1:.1e}, max|grad_scores - formula| {e2:.1e}")
            assert e1 < 1e-5 and e2 < 1e-5
    for mode in ("l1", "l0"):
        f = (lambda x: sig(x)) if mode == "l1" else (lambda x: sig(x - 2 / 3 * np.log(0.1 / 1.1)))
        want = (f(S).mean() + f(inp["mp/scores2"]).mean()) / 2
        v = float(out[f"mp/regu/{mode}/value"])
        facts.append(f"regu {mode} = {v:.7f} (float64 formula {want:.7f})")
        assert abs(v - want) < 1e-6
    for name, kw in SCHEDULES.items():
        th = out[f"mp/sched/{name}/threshold"]
        facts.append(f"sched {name}: threshold at steps 0,10,11,45,79,80,81,100,105 = "
                     + ", ".join(f"{th[i]:.6g}" for i in (0, 10, 11, 45, 79, 80, 81, 100, 105))
                     + "; regu_lambda at 11,45,81 = "
                     + ", ".join(f"{out[f'mp/sched/{name}/regu_lambda'][i]:.6g}" for i in (11, 45, 81)))
    return facts


# =============================================================================================
# --check-against
# =============================================================================================

def load_originals(root):
    six = types.ModuleType("torch._six")
    six.container_abcs = collections.abc
    sys.modules.setdefault("torch._six", six)
    sys.path.insert(0, root)
    so = importlib.import_module("sparse_ops")
    pkg = types.ModuleType("mp_orig")
    pkg.__path__ = [root]
    sys.modules["mp_orig"] = pkg
    bz = importlib.import_module("mp_orig.binarizer")
    mn = importlib.import_module("mp_orig.masked_nn")
    glue = [f for f in sorted(os.listdir(root)) if f.startswith("masked_run_glue") and f.endswith(".py")]
    assert glue, "no masked_run_glue*.py in " + root
    src = open(os.path.join(root, glue[0])).read()
    tree = ast.parse(src)
    fns = [node for node in tree.body if isinstance(node, ast.FunctionDef)
           and node.name in ("schedule_threshold", "regularization")]
    assert len(fns) == 2
    ns = {"torch": torch, "np": np, "nn": nn}
    exec(compile(ast.Module(body=fns, type_ignores=[]), glue[0], "exec"), ns)
    return dict(SparseLinear=so.SparseLinear, SparseConv=so.SparseConv,
                TopKBinarizer=bz.TopKBinarizer, ThresholdBinarizer=bz.ThresholdBinarizer,
                MagnitudeBinarizer=bz.MagnitudeBinarizer, MaskedLinear=mn.MaskedLinear,
                schedule_threshold=ns["schedule_threshold"], regularization=ns["regularization"])


def check_against(root, inp, out):
    mods = load_originals(root)
    theirs = run_all(inp, mods)
    assert set(theirs) <= set(out), set(theirs) - set(out)
    for k in theirs:
        assert out[k].dtype == theirs[k].dtype and np.array_equal(out[k], theirs[k]), k
    print(f"copies agree with the original modules ({len(theirs)} computed arrays equal)")


# =============================================================================================
# main
# =============================================================================================

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check-against", default=None, help="directory with the references' own files")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    inp = make_inputs()
    out = run_all(inp)
    # the l0 training noise: the same RNG state as run_masked_linear, the forward's own first draw
    torch.manual_seed(L0_SEED)
    u = torch.zeros_like(torch.from_numpy(inp["mp/scores"])).uniform_().clamp(0.0001, 0.9999)
    out["mp/masked_linear/l0_train/u"] = u.numpy()
    out["srste/decay"] = np.float64(DECAY)
    out.update(inp)

    for f in facts_of(inp, out):
        print(f)

    if args.check_against:
        check_against(args.check_against, inp, out)

    for k, v in out.items():
        v = np.asarray(v)
        out[k] = v
        assert v.dtype in (np.float32, np.float64, np.int64, np.bool_), (k, v.dtype)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes, {len(out)} arrays); "
          f"torch {torch.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
