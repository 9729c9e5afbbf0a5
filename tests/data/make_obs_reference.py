"""Stored PyTorch reference outputs for the oBERT / WoodFisher blocked OBS pruner of neuralmagic/sparseml.

Run once by hand, with torch and numpy in a scratch environment outside the project (lth never
imports torch):

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/torchvenv/bin/pip install numpy
    /tmp/torchvenv/bin/python tests/data/make_obs_reference.py   # writes tests/data/obs_reference.npz

(made with torch 2.13.0+cpu, numpy 2.4.6, Python 3.11, one CPU thread; runs in a few seconds.)

Optionally `--check-against DIR`, DIR the root of a sparseml checkout @1c04a01 (it needs
DIR/src/sparseml/pytorch/sparsification/pruning/{modifier_pruning_obs,scorer,mask_creator,mask_params}.py
and DIR/src/sparseml/pytorch/utils/helpers.py): the script then imports those ORIGINAL files, with
stand-ins for the heavy imports (empty parent packages; sparseml.pytorch.sparsification.modifier's
ModifierProp/PyTorchModifierYAML as plain property/identity decorators; BaseGradualPruningModifier
as a class that swallows its kwargs; sparseml.pytorch.utils = MEMORY_BOUNDED, memory_aware_threshold,
mask_difference, tensor_list_sparsity exec'd verbatim from the real helpers.py plus an empty
GradSampler; empty BaseLogger; sparseml.utils.interpolate = None), builds the real
OBSPruningModifier (its __init__/_validate/_get_scorer/_get_mask_creator) and a real
ModuleParamPruningMask over nn.Linear layers (global_sparsity=True), feeds each gradient through a
real backward pass of loss = sum(W * g_j) (through the param's mask-gradient hook) followed by
ModuleParamPruningMask.pre_optim_step_update(), then calls update_param_masks(target), and asserts
torch.equal (dtype included) of the Fisher-inverse blocks, scores, masks and pruned weights with the
copies below, for all 24 runs. The file was made with --check-against on the fetched files
(`git archive 1c04a01 src/sparseml/pytorch/sparsification/pruning src/sparseml/pytorch/utils/helpers.py`),
and it passed.

The reference logic is COPIED from github:neuralmagic/sparseml @1c04a016c830b0ccfbb0402e291405a2252c19a6
(files last changed in: modifier_pruning_obs.py 827b31468baad7dfcbdccd8312a9bb62eea79531, scorer.py
9b269f988149ebcb0fd2bc1466434a9a27f002a2, mask_creator.py b172213c094d0ef861151f1ea70cfcde9a073f17,
mask_params.py e1a7ea2f0dd452114454065220dd61092970e447,
utils/helpers.py 934f0d8b9b12845fa9b82fed87d4b54cdfec7a3d):
  * src/sparseml/pytorch/sparsification/pruning/scorer.py l.35-146 (PruningParamsScorer,
    PruningParamsGradScorer) verbatim;
  * src/sparseml/pytorch/sparsification/pruning/modifier_pruning_obs.py l.368-627
    (OBSPruningParamsScorer: __init__, score_parameters, pre_optim_step_update, mask_update,
    _validate, _setup_fisher_inverse; EmpiricalBlockFisherInverse: __init__, add_grad, diag, mul)
    verbatim except ONE line marked "# ADDED" (self._obs_updates = obs_updates, a record). No
    device edits were needed: CPU-only torch has torch.cuda.device_count() == 0, so every Finv is on
    cpu and the .to(device) calls are no-ops;
  * src/sparseml/pytorch/utils/helpers.py l.687-699 (mask_difference), l.1071-1100 (MEMORY_BOUNDED,
    memory_aware_threshold) verbatim;
  * src/sparseml/pytorch/sparsification/pruning/mask_creator.py l.42-262 (PruningMaskCreator,
    UnstructuredPruningMaskCreator; get_mask_creator_default("unstructured") l.690-691 returns it)
    verbatim.
  * obs_prune() below is NOT a copy: it re-enacts the calls that OBSPruningModifier.check_mask_update
    (modifier_pruning_obs.py l.255-299, _collect_grad_samples l.324-345, _get_scorer l.311-322) and
    ModuleParamPruningMask (mask_params.py: masks = ones l.115, pre_optim_step_update l.434-440,
    update_param_masks l.343-385, set_param_masks l.310-341, apply l.387-423) make for ONE pruning
    step with num_recomputations = 1; --check-against runs those original classes instead.
  * float64 runs (keys .../f64/...): the same copies run under torch.set_default_dtype(float64) on
    float64 params/grads (the float32 input values widened); the score/update eps stays
    torch.finfo(torch.float32).eps = 1.1920929e-07 (a Python float) as in the source.

THE ALGORITHM (unstructured mask_type; d = numel of one weight, B = fisher_block_size, m = num_grads):
  * Blocks: each weight is flattened with .reshape(-1) (row-major over the PyTorch (out, in) layout)
    and cut into nb = ceil(d / B) consecutive chunks of B; block b holds flat indices [bB, bB+B). If
    B does not divide d, the flat vector is zero-padded to nb*B (add_grad, mul); diag() drops the
    padding ([: d]). Blocks never span two weights (one EmpiricalBlockFisherInverse per weight).
  * Init (l.579-583): f_inv = (1/damp) * I_B for every block (nb, B, B).
  * add_grad(g) (l.585-607), once per gradient sample (m calls), per block with g_b (B,):
        u = f_inv g_b;  alpha = sqrt(m + g_b^T u);  u /= alpha;  f_inv -= u u^T
    i.e. Sherman-Morrison for F <- F + g g^T / m:
        f_inv <- f_inv - (f_inv g)(f_inv g)^T / (m + g^T f_inv g).
    After m calls f_inv = (damp I + (1/m) sum_j g_j g_j^T)^-1 per block (m = the CONFIGURED
    num_grads; the divisor stays m even if fewer samples were collected).
  * Gradients: the param's grad hook (mask_params.py l.575-584) and pre_optim_step_update (l.494,
    grad.mul_(masks[i])) multiply each gradient by the CURRENT mask before add_grad, so pruned
    weights have zero gradient -> their row/column of the block Fisher is damp * e_q, and f_inv there
    is exactly (1/damp) e_q (exact in float too: u_q = (1/damp) * 0 = 0).
  * Scores (l.435-438): score = w^2 / (2 * diag(f_inv) + eps), eps = float32 eps; then (l.467-469)
    score = -inf where the current (pre-step) mask is 0, so pruned weights stay pruned.
  * Mask (UnstructuredPruningMaskCreator, global_sparsity=True = the modifier default): the scores of
    all weights are flattened (each row-major) and concatenated in param order; k = round(n_total *
    sparsity) (Python round, half to even: C 0.5 -> round(17.5) = 18), threshold = k-th smallest
    (torch.kthvalue, since _validate sets MEMORY_BOUNDED=True; the sort path gives the same value);
    kept = score > threshold (so the -inf entries are pruned). Ties: if more than k entries are
    <= threshold, entries EQUAL to the threshold are flipped to kept in increasing global flat index
    order until exactly k are pruned (lowest indices kept). If threshold == the minimum (k <= number
    of minimal entries, e.g. k <= number of already-pruned -inf entries) a different branch prunes
    k of the minimal entries chosen by random.Random(42).shuffle and keeps all others (this would
    re-admit previously pruned weights). sparsity <= 0 or > 1: all kept. Not exercised here (no ties).
    Per layer instead (global_sparsity=False): the same per weight.
  * OBS update (mask_update l.510-520, 533-535): v = w * newly_pruned / (diag(f_inv) + eps) with
    newly_pruned = (mask_difference(old, new) == -1) (pruned now, kept before); update = f_inv v per
    block (mul, l.615-627); w -= update; w[newly_pruned] = 0; then apply() multiplies by the new mask.
    So within a block the update is the SUM of single-weight OBS updates
    sum_q f_inv[:, q] w_q / f_inv[q, q] (NOT the joint solve f_inv[:, Q] f_inv[Q, Q]^-1 w_Q; the two
    differ by up to 0.24 here, see facts), the divisor is diag + eps (not 2 diag + eps as in the
    score), and previously pruned weights get update 0. Note w is the CURRENT weight (already masked).
    After mask_update the scorer drops the Fisher inverses (_finvs = None).
  * num_recomputations = R (OBSPruningModifier.check_mask_update l.276-295): for i = 1..R, collect m
    fresh gradients (a NEW Fisher inverse from 1/damp I, gradients masked by the current mask), then a
    full score -> mask -> OBS-update step at sparsity interpolate(i, 0, R, s_last, s_target) (linear:
    s_last + (s_target - s_last) i / R, s_last = the sparsity applied at the previous pruning step,
    0.0 initially). Only R = 1 (one step straight to the target) is stored here.
  * Defaults: OBSPruningModifier damp = 1e-7 (l.145), num_grads = 1024, fisher_block_size = 1 in the
    signature (l.146; its docstring and the oBERT recipes say 50), global_sparsity = True.

Inputs (all drawn from np.random.default_rng(0) in this order; float32; PyTorch layout (out, in)):
  A: w0 = N(6, 8) / sqrt(8); grads0 = N(16, 6, 8) * 0.01;  m = 16, B = 8 (6 blocks = the 6 rows).
  B: w0 = N(12, 4) / 2; w1 = N(4, 12) / sqrt(12); grads0 = N(32, 12, 4) * 0.01;
     grads1 = N(32, 4, 12) * 0.01; 6 entries of w0 already pruned: flat indices
     rng.choice(48, 6, replace=False) -> (1,2) (4,0) (4,3) (9,1) (9,2) (11,0); w0 is zero there (as
     sparseml's apply() leaves it); grads0 is stored RAW (nonzero there; the code masks it).
     m = 32, B = 16 (3 blocks per weight; in w1 block 0 = row 0 + row 1[:4]). Scored globally.
  C: w0 = N(5, 7) / sqrt(7); grads0 = N(12, 5, 7) * 0.01; m = 12, B = 8 (d = 35: 5 blocks, the
     last holds 3 weights + 5 padding).
  The gradient scale 0.01 keeps (1/m) G^T G (~1e-4) above damp = 1e-7 but lets float32 keep ~5
  digits (with unit-scale gradients the float32 Woodbury updates, starting from 1/damp = 1e7, lose
  everything: ~13% error); damp = 1e-3 is damp-dominated (diag(f_inv) 810..1000).

Keys (<C> in A, B, C; <i> the weight index, 0 or 0/1 in B; <D> in damp1e-07, damp0.001;
<T> in f32, f64; <S> in s0.50, s0.75 = target sparsity 0.5, 0.75; masks bool, True = KEPT):
  <C>/m, <C>/B ()                    int64: num_grads m, fisher_block_size B.
  <C>/w<i> (out, in)                 the weight going in (prior-pruned entries zero).
  <C>/grads<i> (m, out, in)          the raw gradient samples, in add_grad order.
  <C>/prior_mask<i> (out, in)        the mask before the step (all True except B/prior_mask0).
  <C>/<D>/<T>/finv<i> (nb, B, B)     f_inv after all m add_grad calls (padding rows/cols included:
                                     (1/damp) I there).
  <C>/<D>/<T>/diag<i> (d,)           finv.diag(): flat, padding dropped.
  <C>/<D>/<T>/scores<i> (out, in)    score_parameters() output (-inf at prior-pruned entries).
  <C>/<D>/<T>/<S>/mask<i> (out, in)  the new mask (global over the weights of the case).
  <C>/<D>/<T>/<S>/update<i> (out,in) obs_updates (f_inv (w * newly_pruned / (diag + eps)), reshaped).
  <C>/<D>/<T>/<S>/w<i> (out, in)     the weight after the step = where(mask, w - update, 0) exactly.
  finv/diag/scores do not depend on <S> (asserted equal across targets).

Facts about the stored data (checked when it was made; "finv f32 vs 64" and "finv64 vs inv" are
max abs differences / max|Finv| over the whole (nb, B, B) array, whose max is 1/damp where a weight
is prior-pruned (B w0) or padded (C); diag(Finv) ranges include those entries):
  * A damp=1e-07 w0: finv64 vs inv(damp I + G^T G / m): 3.0e-14; finv f32 vs 64: 2.2e-05; diag(Finv)
      in [7072, 5.503e+04] (1/damp = 1e+07)
  * A damp=1e-07 target=0.5: k = 24 pruned (24 in the mask), rel. gap at the threshold 3.2e-03, mask
      f32 == f64: True, max|w f32 - w f64| = 2.6e-06, max|w - w(joint OBS solve per block)| =
      8.03e-02
  * A damp=1e-07 target=0.75: k = 36 pruned (36 in the mask), rel. gap at the threshold 5.7e-02,
      mask f32 == f64: True, max|w f32 - w f64| = 4.1e-06, max|w - w(joint OBS solve per block)| =
      2.35e-01
  * A damp=0.001 w0: finv64 vs inv(damp I + G^T G / m): 3.5e-16; finv f32 vs 64: 1.6e-07; diag(Finv)
      in [811.4, 970.5] (1/damp = 1000)
  * A damp=0.001 target=0.5: k = 24 pruned (24 in the mask), rel. gap at the threshold 5.4e-02, mask
      f32 == f64: True, max|w f32 - w f64| = 1.7e-08, max|w - w(joint OBS solve per block)| =
      4.30e-04
  * A damp=0.001 target=0.75: k = 36 pruned (36 in the mask), rel. gap at the threshold 6.1e-02,
      mask f32 == f64: True, max|w f32 - w f64| = 2.8e-08, max|w - w(joint OBS solve per block)| =
      3.77e-04
  * B damp=1e-07 w0: finv64 vs inv(damp I + G^T G / m): 7.2e-17; finv f32 vs 64: 4.9e-08; diag(Finv)
      in [8656, 1e+07] (1/damp = 1e+07)
  * B damp=1e-07 w1: finv64 vs inv(damp I + G^T G / m): 4.3e-14; finv f32 vs 64: 1.8e-05; diag(Finv)
      in [8426, 3.477e+04] (1/damp = 1e+07)
  * B damp=1e-07 target=0.5: k = 48 pruned (48 in the mask), rel. gap at the threshold 8.2e-02, mask
      f32 == f64: True, max|w f32 - w f64| = 4.0e-06, max|w - w(joint OBS solve per block)| =
      9.87e-02
  * B damp=1e-07 target=0.75: k = 72 pruned (72 in the mask), rel. gap at the threshold 8.1e-02,
      mask f32 == f64: True, max|w f32 - w f64| = 5.2e-06, max|w - w(joint OBS solve per block)| =
      1.56e-01
  * B damp=0.001 w0: finv64 vs inv(damp I + G^T G / m): 5.7e-16; finv f32 vs 64: 2.0e-07; diag(Finv)
      in [853.9, 1000] (1/damp = 1000)
  * B damp=0.001 w1: finv64 vs inv(damp I + G^T G / m): 4.8e-16; finv f32 vs 64: 2.1e-07; diag(Finv)
      in [864.6, 950.7] (1/damp = 1000)
  * B damp=0.001 target=0.5: k = 48 pruned (48 in the mask), rel. gap at the threshold 4.9e-02, mask
      f32 == f64: True, max|w f32 - w f64| = 2.9e-08, max|w - w(joint OBS solve per block)| =
      6.13e-04
  * B damp=0.001 target=0.75: k = 72 pruned (72 in the mask), rel. gap at the threshold 4.2e-02,
      mask f32 == f64: True, max|w f32 - w f64| = 5.3e-08, max|w - w(joint OBS solve per block)| =
      2.33e-03
  * C damp=1e-07 w0: finv64 vs inv(damp I + G^T G / m): 1.5e-16; finv f32 vs 64: 9.9e-08; diag(Finv)
      in [7289, 1e+07] (1/damp = 1e+07)
  * C damp=1e-07 target=0.5: k = 18 pruned (18 in the mask), rel. gap at the threshold 1.4e-01, mask
      f32 == f64: True, max|w f32 - w f64| = 3.9e-06, max|w - w(joint OBS solve per block)| =
      1.69e-01
  * C damp=1e-07 target=0.75: k = 26 pruned (26 in the mask), rel. gap at the threshold 1.1e-01,
      mask f32 == f64: True, max|w f32 - w f64| = 9.3e-06, max|w - w(joint OBS solve per block)| =
      1.80e-01
  * C damp=0.001 w0: finv64 vs inv(damp I + G^T G / m): 3.4e-16; finv f32 vs 64: 1.1e-07; diag(Finv)
      in [861.1, 1000] (1/damp = 1000)
  * C damp=0.001 target=0.5: k = 18 pruned (18 in the mask), rel. gap at the threshold 2.0e-01, mask
      f32 == f64: True, max|w f32 - w f64| = 1.9e-08, max|w - w(joint OBS solve per block)| =
      6.77e-04
  * C damp=0.001 target=0.75: k = 26 pruned (26 in the mask), rel. gap at the threshold 1.2e-01,
      mask f32 == f64: True, max|w f32 - w f64| = 1.8e-08, max|w - w(joint OBS solve per block)| =
      1.77e-03
  * In every run: mask f32 == mask f64; w after == where(mask, w_in - update, 0) bit-exactly; the
    update is exactly 0 at prior-pruned entries; numpy float64 re-derivations of the scores and of
    update = f_inv (w * newly_pruned / (diag + eps)) agree to < 1e-12 relative.
  * B global split (w0 kept / w1 kept): damp 1e-7: 25/23 at 0.5, 17/7 at 0.75; damp 1e-3: 24/24 at 0.5, 17/7 at 0.75.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import logging
import math
import os
import random
import sys
import types
from abc import ABC, abstractmethod
from datetime import timedelta
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor
from torch.nn import Parameter

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "obs_reference.npz")
COMMIT = "1c04a016c830b0ccfbb0402e291405a2252c19a6"
DAMPS = (1e-7, 1e-3)            # 1e-7 = OBSPruningModifier's default damp (l.145) and the oBERT recipes'
TARGETS = (0.5, 0.75)
DTYPES = {"f32": torch.float32, "f64": torch.float64}
_LOGGER = logging.getLogger("obs_reference")
GRAD_SCALE = 1e-2               # gradient samples are N(0, 1) * GRAD_SCALE


# =============================================================================================
# Inputs
# =============================================================================================

def make_cases():
    """{case: dict(ws=[W_i (out, in) float32], grads=[(m, out, in) float32], prior=[None | bool (out, in),
    True = kept], m, B)}. All from np.random.default_rng(0), drawn in the order written here."""
    rng = np.random.default_rng(0)
    f32 = lambda a: np.asarray(a, np.float32)
    cases = {}
    # A: one (6, 8) weight, m = 16, B = 8 (d = 48 = 6 blocks, block b = flat [8b, 8b+8) = row b here)
    w = f32(rng.standard_normal((6, 8)) / np.sqrt(8))
    g = f32(rng.standard_normal((16, 6, 8)) * GRAD_SCALE)
    cases["A"] = dict(ws=[w], grads=[g], prior=[None], m=16, B=8)
    # B: W0 (12, 4) and W1 (4, 12) scored together (global), m = 32, B = 16 (3 blocks each; in W1 a
    # block spans 1 1/3 rows); 6 entries of W0 already pruned (prior mask), W0 zero there.
    w0 = f32(rng.standard_normal((12, 4)) / 2.0)
    w1 = f32(rng.standard_normal((4, 12)) / np.sqrt(12))
    g0 = f32(rng.standard_normal((32, 12, 4)) * GRAD_SCALE)
    g1 = f32(rng.standard_normal((32, 4, 12)) * GRAD_SCALE)
    prior0 = np.ones(48, bool)
    prior0[rng.choice(48, size=6, replace=False)] = False
    prior0 = prior0.reshape(12, 4)
    w0 = np.where(prior0, w0, np.float32(0.0)).astype(np.float32)
    cases["B"] = dict(ws=[w0, w1], grads=[g0, g1], prior=[prior0, None], m=32, B=16)
    # C: one (5, 7) weight, d = 35 not a multiple of B = 8 (5 blocks, the last one padded by 5), m = 12
    w = f32(rng.standard_normal((5, 7)) / np.sqrt(7))
    g = f32(rng.standard_normal((12, 5, 7)) * GRAD_SCALE)
    cases["C"] = dict(ws=[w], grads=[g], prior=[None], m=12, B=8)
    return cases



# =============================================================================================
# COPIED from github:neuralmagic/sparseml 1c04a016c830b0ccfbb0402e291405a2252c19a6
# src/sparseml/pytorch/sparsification/pruning/scorer.py l.35-146 (verbatim)
# =============================================================================================

class PruningParamsScorer(ABC):
    """
    Base abstract class for scoring model parameters for pruning

    :param params: list of model Parameters to track and score
    """

    def __init__(self, params: List[Parameter]):
        self._params = params
        self._last_applied_sparsity = 0.0

    @abstractmethod
    def score_parameters(self) -> List[Tensor]:
        """
        :return: List of Tensors the same shapes as the given Parameters that
            correspond to their scores to be pruned by
        """
        raise NotImplementedError()

    def pre_optim_step_update(self, masks: List[Tensor]):
        """
        Perform any required logic for tracking Parameter data and gradients before
            an Optimizer step is applied to the model.

        :param masks: latest masks that are applied to these parameters
        """
        pass

    def mask_update(self, masks: List[Tensor], mask_diffs: List[Tensor]):
        """
        Perform any updates based on the latest mask to be applied to the weights
        immediately after this function completes

        :param masks: latest masks to be applied to these parameters
        :param mask_diffs: mask diff values returned by mask_difference for these
            masks that describe how these masks changed since the last update
        """
        pass

    def update_last_applied_sparsity(self, sparsity: float):
        """
        :param sparsity: sparsity level between 0.0 and 1.0 that was the last value
            set for the given parameters
        """
        self._last_applied_sparsity = sparsity

    def check_regen_param_vals(self):
        """
        Check that all variables based on the params are on the correct device
        and regenerate if not
        """
        pass

    def on_pruning_end(self):
        """
        Perform any cleanup after pruning is complete
        """
        pass


class PruningParamsGradScorer(PruningParamsScorer, ABC):
    """
    Abstract class for PruningParamsScorers that use gradients to score parameters.
    Adds extra abstraction for handling gradient sharing between parameters

    :param params: list of model Parameters to track and score
    :param dist_backend: to communicate gradients between processes
    """

    def __init__(
        self,
        params: List[Parameter],
        dist_backend: Optional[str] = None,
    ):
        super().__init__(params=params)

        self._is_ddp = dist.is_initialized()
        self._is_main_proc = not self._is_ddp or dist.get_rank() == 0

        # create group to broadcast gradients across processes
        self._dist_group = (
            dist.new_group(backend=dist_backend, timeout=timedelta(seconds=7200))
            if self._is_ddp and dist_backend is not None
            else None
        )

        self._pickle_exclude_params = ["_is_ddp", "_is_main_proc", "_dist_group"]

    def __getstate__(self) -> Dict[str, Any]:
        """
        :return: state of this object as dict, without DDP related parameters
        """
        return {
            param: val
            for param, val in self.__dict__.items()
            if param not in self._pickle_exclude_params
        }

    def on_pruning_end(self):
        """
        Perform any cleanup after pruning is complete
        """
        super().on_pruning_end()

        if self._is_ddp and self._dist_group is not None:
            dist.destroy_process_group(self._dist_group)

    def _broadcast_list_from_main(self, val: Any) -> Any:
        if not self._is_ddp:
            return val
        dist.broadcast_object_list(val, src=0, group=self._dist_group)
        return val


# =============================================================================================
# COPIED: src/sparseml/pytorch/sparsification/pruning/modifier_pruning_obs.py l.368-627 (class
# OBSPruningParamsScorer, class EmpiricalBlockFisherInverse), verbatim except ONE line marked
# "# ADDED" (records obs_updates; changes nothing). Device handling is left as it is: with CPU-only
# torch torch.cuda.device_count() == 0, so every Finv lives on cpu and .to(self._devices[i]) is a
# no-op. _is_main_proc is True (torch.distributed not initialized), _broadcast_list_from_main a no-op.
# =============================================================================================

class OBSPruningParamsScorer(PruningParamsGradScorer):
    """
    Scores parameters using the equations introduced in the Optimal BERT Surgeon
    to solve for the optimal weight update in the Optimal Brain Surgeon (OBS)
    framework. Implements unstructured and semi-structured (block4) scoring and
    pruning.

    :param params: list of model Parameters to track and score
    :param num_grads: number of gradients used to calculate the Fisher approximation
    :param damp: dampening factor, default is 1e-7
    :param fisher_block_size: size of blocks along the main diagonal of the Fisher
        approximation, default is 50
    """

    def __init__(
        self,
        params: List[Parameter],
        num_grads: int,
        damp: float,
        fisher_block_size: int,
        mask_type: str,
    ):
        super().__init__(params, dist_backend="nccl")
        self._num_grads = num_grads
        self._damp = damp
        self._fisher_block_size = fisher_block_size
        self._mask_type = mask_type

        self._finvs = None  # type: List[EmpiricalBlockFisherInverse]
        self._enabled_grad_buffering = False
        self._eps = torch.finfo(torch.float32).eps

        # assign device to each Finv
        self._devices = []
        num_devices = torch.cuda.device_count()
        if num_devices == 0:
            self._devices = [torch.device("cpu")] * len(self._params)
        else:
            num_devices = min(num_devices, len(self._params))
            per_device = math.floor(len(self._params) / num_devices)
            for i in range(num_devices):
                self._devices += [torch.device("cuda", i)] * per_device
            remainder = len(self._params) - len(self._devices)
            if remainder > 0:
                self._devices += [self._devices[-1]] * remainder

        self._pickle_exclude_params.extend(
            [
                "_finvs",
                "_enabled_grad_buffering",
                "_devices",
            ]
        )
        self._validate()

    @torch.no_grad()
    def score_parameters(self) -> List[Tensor]:
        """
        :return: List of Tensors the same shapes as the given Parameters where
            each Parameter's elements are scored based on the blockwise OBS
        """
        scores = [None] * len(self._params)
        block_finv_w = [None] * len(self._params)

        if self._is_main_proc:
            for i, finv in enumerate(self._finvs):
                if self._mask_type == "unstructured":
                    scores[i] = (
                        (self._params[i].data.reshape(-1) ** 2).to(self._devices[i])
                        / (2.0 * finv.diag() + self._eps)
                    ).reshape(self._params[i].shape)
                else:  # self._mask_type == "block4":
                    block_w = (
                        self._params[i].data.reshape(-1, 4).to(finv.dev)
                    )  # (d/Q, Q)
                    block_finv = (
                        torch.cat(
                            [
                                finv.f_inv[:, i : i + 4, i : i + 4]
                                for i in range(0, finv.B, 4)
                            ],
                            dim=1,
                        )
                        .reshape((finv.d // finv.B, finv.B // 4, 4, 4))
                        .reshape((finv.d // 4, 4, 4))
                    )  # (Q, d/Q, Q) -> (d/Q, Q, Q)
                    block_finv_w[i] = torch.linalg.solve(
                        block_finv,
                        block_w,
                    )  # (d/Q, Q)
                    score = 0.5 * torch.einsum(
                        "bi,bi->b", block_w, block_finv_w[i]
                    )  # d/Q
                    scores[i] = (
                        score.unsqueeze(1)
                        .expand(-1, 4)
                        .reshape(self._params[i].data.shape)
                    )

            # make sure pruned ones will stay pruned
            for i, score in enumerate(scores):
                score[self._masks[i] == 0] = float("-inf")

        self._broadcast_list_from_main(scores)
        if self._mask_type == "block4":
            self._broadcast_list_from_main(block_finv_w)
            self._block_finv_w = block_finv_w  # cache for OBS weight update

        return scores

    @torch.no_grad()
    def pre_optim_step_update(self, masks: List[Tensor]):
        """
        Update the empirical inverse Fisher estimation based on the current gradients

        :param masks: latest masks that are applied to these parameters
        """
        if not self._enabled_grad_buffering:
            # only collect gradients when called during pruning step
            # this ignores calls invoked by manager during training
            return

        if self._finvs is None:
            self._setup_fisher_inverse(masks)

        for i, finv in enumerate(self._finvs):
            self._params[i].grad.mul_(masks[i])
            finv.add_grad(self._params[i].grad.reshape(-1).to(self._devices[i]))

    @torch.no_grad()
    def mask_update(self, masks: List[Tensor], mask_diffs: List[Tensor]):
        """
        Apply OBS weight update which zeros-out pruned weights and updates the
        remaining weights to preserve the loss.

        :param masks: latest masks to be applied to these parameters
        :param mask_diffs: mask diff values returned by mask_difference for these
            masks that describe how these masks changed since the last update
        """
        obs_updates = [None] * len(self._params)
        if self._is_main_proc:
            for i, param in enumerate(self._params):
                if self._mask_type == "unstructured":
                    obs_updates[i] = (
                        self._finvs[i]
                        .mul(
                            (param.data * (mask_diffs[i] == -1))
                            .reshape(-1)
                            .to(self._devices[i])
                            / (self._finvs[i].diag() + self._eps)
                        )
                        .reshape(param.data.shape)
                    )
                else:  # self._mask_type == "block4":
                    obs_updates[i] = (
                        self._finvs[i]
                        .mul(
                            self._block_finv_w[i].reshape(-1)
                            * (mask_diffs[i] == -1).reshape(-1).to(self._devices[i])
                        )
                        .reshape(param.data.shape)
                    )

        self._broadcast_list_from_main(obs_updates)
        self._obs_updates = obs_updates  # ADDED
        # apply OBS update and manually zero-out pruned weights
        for i, param in enumerate(self._params):
            param.data -= obs_updates[i].to(param.data.device)
            param.data[mask_diffs[i] == -1] = 0.0

        self._finvs = None

    def _validate(self):
        if self._mask_type == "block4":
            for param in self._params:
                if param.numel() % self._fisher_block_size != 0:
                    raise ValueError(
                        "number of elements in each param must be divisible \
                        by fisher_block_size"
                    )

    def _setup_fisher_inverse(self, masks: List[Tensor]):
        self._masks = masks  # to be used by score_parameters
        self._finvs = []
        for i, param in enumerate(self._params):
            self._finvs.append(
                EmpiricalBlockFisherInverse(
                    self._num_grads,
                    self._fisher_block_size,
                    param.numel(),
                    self._damp,
                    self._devices[i],
                )
            )


class EmpiricalBlockFisherInverse:
    def __init__(
        self,
        num_grads: int,
        fisher_block_size: int,
        num_weights: int,
        damp: float,
        device: torch.device,
    ):
        self.m = num_grads
        self.B = fisher_block_size
        self.d = num_weights
        self.damp = damp
        self.dev = device

        self.num_blocks = math.ceil(self.d / self.B)
        self.f_inv = (
            (1.0 / self.damp * torch.eye(n=self.B, device=self.dev))
            .unsqueeze(0)
            .repeat(self.num_blocks, 1, 1)
        )  # O(d x B) memory

    def add_grad(self, g: Tensor):
        """
        Updates empirical Fisher inverse with a new gradient
        :param g: a collected gradient
        """
        # if 'd / B' is not integer, pad with zeros for batch calculations
        if g.numel() < self.num_blocks * self.B:
            g = torch.cat(
                [g, torch.zeros(self.num_blocks * self.B - g.numel(), device=g.device)]
            )

        # prepare grad for batch calculations
        g = g.reshape(self.num_blocks, self.B)

        # batched f_inv x g: (batch, B, B) x (batch, B) -> (batch, B)
        finv_g = torch.einsum("bij,bj->bi", self.f_inv, g)

        # scalar denominator for each batch: (batch)
        alpha = (self.m + torch.einsum("bi,bi->b", g, finv_g)).sqrt().unsqueeze(1)
        finv_g /= alpha

        # update f_inv with new outer product: (batch, B) x (batch, B) -> (batch, B, B)
        self.f_inv.baddbmm_(finv_g.unsqueeze(2), finv_g.unsqueeze(1), alpha=-1)

    def diag(self) -> Tensor:
        """
        :return: diagonal of the Fisher inverse matrix
        """
        return self.f_inv.diagonal(dim1=1, dim2=2).flatten()[: self.d]

    def mul(self, v: Tensor) -> Tensor:
        """
        Computes matrix-vector product of the Fisher inverse matrix and a vector
        :param v: a vector to compute matrix-vector product with
        :return: result of the matrix-vector multiplication
        """
        if v.numel() < self.num_blocks * self.B:
            v = torch.cat(
                [v, torch.zeros(self.num_blocks * self.B - v.numel(), device=v.device)]
            )
        return torch.bmm(
            self.f_inv, v.reshape(self.num_blocks, self.B).unsqueeze_(2)
        ).flatten()[: self.d]


# =============================================================================================
# COPIED: src/sparseml/pytorch/utils/helpers.py l.687-699 (mask_difference) and l.1071-1100
# (MEMORY_BOUNDED, memory_aware_threshold), verbatim.
# =============================================================================================

def mask_difference(old_mask: Tensor, new_mask: Tensor) -> Tensor:
    """
    :param old_mask: the old mask to compare against for calculating the difference
    :param new_mask: the new mask to compare with for calculating the difference
    :return: a tensor representing the change from the old_mask to the new_mask
             specifically values returned as 1.0 are newly unmasked (0.0 => 1.0)
             values returned as -1.0 are newly masked (1.0 => 0.0)
             values returned as 0.0 had no change in (0.0 => 0.0 or 1.0 => 1.0)
    """
    newly_masked = ((old_mask != new_mask) & (new_mask == 0.0)).type(old_mask.type())
    newly_unmasked = ((old_mask != new_mask) & (new_mask == 1.0)).type(old_mask.type())

    return -1.0 * newly_masked + newly_unmasked


MEMORY_BOUNDED = "MEMORY_BOUNDED"


def memory_aware_threshold(tensor: torch.Tensor, idx: int) -> Tensor:
    """
    Finds a threshold at the lookup idx in the most efficient way with available
    resources. Will be phased out when GPU-memory overhead of torch.sort reduces,
    or when torch.kthvalue becomes faster than torch.sort.

    :param tensor: A tensor to find a k-th smallest value in, where k=idx+1
    :param idx: A lookup index
    :return: k-th smallest value from the given tensor, where k=idx+1
    """
    try:
        if (
            MEMORY_BOUNDED in os.environ
            and os.environ[MEMORY_BOUNDED].lower() == "true"
        ):
            return torch.kthvalue(tensor.reshape(-1), idx + 1)[0]
        else:
            return torch.sort(tensor.reshape(-1))[0][idx]
    except RuntimeError:
        _LOGGER.warning(
            "Finding threshold from sparsity failed due to lack of memory, "
            "will attempt to recover. Consider setting env variable "
            f"{MEMORY_BOUNDED}=True in future runs."
        )
        torch.cuda.empty_cache()
        os.environ[MEMORY_BOUNDED] = "True"
        return torch.kthvalue(tensor.view(-1), idx + 1)[0]


# =============================================================================================
# COPIED: src/sparseml/pytorch/sparsification/pruning/mask_creator.py l.42-262 (PruningMaskCreator,
# UnstructuredPruningMaskCreator = get_mask_creator_default("unstructured"), l.690-691), verbatim.
# =============================================================================================

class PruningMaskCreator(ABC):
    """
    Base abstract class for a sparsity mask creator.
    Subclasses should define all methods for creating masks
    """

    @abstractmethod
    def create_sparsity_masks(
        self,
        tensors: List[Tensor],
        target: Union[float, List[float]],
        global_sparsity: bool = False,
    ) -> List[Tensor]:
        """
        :param tensors: list of tensors to calculate a masks based on their contained
            values
        :param target: the desired sparsity (decimal fraction of zeros) to reach
            within the mask or other float target value to base sparsity masks on.
            Can also be a list where each element is a
            target for a tensor in the same position in the tensor list. If global
            sparsity is enabled, all values of the target list must be the same
        :param global_sparsity: if True, sparsity masks will be created such that the
            average sparsity across all given tensors is the target sparsity with the
            lowest global values masked. If False, each tensor will be masked to the
            target sparsity ranking values within each individual tensor. Default is
            False
        :return: list of masks (0.0 for values that are masked, 1.0 for values that are
            unmasked) calculated from the tensors such that the desired number of zeros
            matches the sparsity.
        """
        raise NotImplementedError()


class UnstructuredPruningMaskCreator(PruningMaskCreator):
    """
    Class for creating unstructured sparsity masks.
    Masks will be created using unstructured sparsity by pruning weights ranked
    by their value.  Each mask will correspond to the given tensor.
    """

    def create_sparsity_masks(
        self,
        tensors: List[Tensor],
        target: Union[float, List[float]],
        global_sparsity: bool = False,
    ) -> List[Tensor]:
        """
        :param tensors: list of tensors to calculate a mask from based on their
            contained values
        :param target: the desired sparsity (decimal fraction of zeros) to reach
            within the mask. Can also be a list where each element is a
            target for a tensor in the same position in the tensor list. If global
            sparsity is enabled, all values of the target list must be the same
        :param global_sparsity: if True, sparsity masks will be created such that the
            average sparsity across all given tensors is the target sparsity with the
            lowest global values masked. If False, each tensor will be masked to the
            target sparsity ranking values within each individual tensor. Default is
            False
        :return: list of masks (0.0 for values that are masked, 1.0 for values that are
            unmasked) calculated from the tensors such that the desired number of zeros
            matches the sparsity.  If there are more zeros than the desired sparsity,
            zeros will be randomly chosen to match the target sparsity
        """
        sparsity = target  # target should be desired sparsity level
        if isinstance(sparsity, float):
            sparsity = [sparsity] * len(tensors)
        if len(sparsity) != len(tensors):
            raise ValueError(
                "a sparsity target must be defined for every given Tensor. Received"
                f"{len(sparsity)} targets for {len(tensors)} Tensors."
            )

        if global_sparsity:
            # create tensor to make global mask with
            original_tensors = tensors
            tensors = [self._flatten_and_stack_tensors(tensors)]
            if not all(target == sparsity[0] for target in sparsity):
                raise ValueError(
                    "all sparsity targets must be the same for global pruning "
                    f"received targets: {sparsity}"
                )
            sparsity = [sparsity[0]]
        else:
            original_tensors = None

        masks = []

        for tensor, sparsity_target in zip(tensors, sparsity):
            threshold = self._threshold_from_sparsity(tensor, sparsity_target)

            if threshold.numel() < 1:
                masks.append(tensor.new_ones(tensor.shape))
                continue

            num_elem = tensor.numel()
            target_num_mask = round(num_elem * sparsity_target)
            min_val = tensor.min().item()

            if threshold.item() > min_val:
                threshold_mask = tensor > threshold

                num_masked = num_elem - torch.sum(threshold_mask).item()
                if num_masked != target_num_mask:
                    # attempt to reconcile expected number of masked weights
                    # may occur if multiple values have the threshold weight
                    num_to_flip = abs(num_masked - target_num_mask)
                    over_masked = num_masked > target_num_mask
                    threshold_mask = self._flip_threshold_mask_vals(
                        threshold_mask, tensor, threshold, num_to_flip, over_masked
                    )

                masks.append(threshold_mask.type(tensor.type()))
                continue

            # too many zeros so will go over the already given sparsity
            # and choose which zeros to not keep in mask at random
            zero_indices = (tensor == min_val).nonzero(as_tuple=False)
            rand_indices = list(range(zero_indices.shape[0]))
            local_rng = random.Random(42)
            local_rng.shuffle(rand_indices)
            rand_indices = rand_indices[:target_num_mask]
            rand_indices = tensor.new_tensor(rand_indices, dtype=torch.int64)
            zero_indices = zero_indices[rand_indices, :]
            mask = tensor.new_ones(tensor.shape).type(tensor.type())
            mask[zero_indices.split(1, dim=1)] = 0

            masks.append(mask.type(tensor.type()))

        if global_sparsity:
            # unpack global mask into tensor-masks with the original shapes
            global_mask = masks[0]
            masks = self._unstack_flattened_tensors(global_mask, original_tensors)
            del global_mask

        return masks

    def _threshold_from_sparsity(self, tensor: Tensor, sparsity: float) -> Tensor:
        """
        :param tensor: the tensor to find a value in for which setting
            all values < that value will give desired sparsity
        :param sparsity: the desired sparsity to reach within the mask
            (decimal fraction of zeros) can also be a list where each element is a
            sparsity for a tensor in the same position in the tensor list
        :return: the threshold to get to the desired sparsity or an empty tensor
            if it was not possible given the inputs
        """
        if tensor.numel() < 1 or sparsity <= 0.0 or sparsity > 1.0:
            return tensor.new_tensor([])

        lookup_index = round(sparsity * tensor.numel()) - 1
        if lookup_index < 0:
            lookup_index = 0
        elif lookup_index > tensor.numel():
            lookup_index = tensor.numel()

        return memory_aware_threshold(tensor, lookup_index)

    def _flatten_and_stack_tensors(self, tensors: List[Tensor]) -> Tensor:
        total_elements = sum(tensor.numel() for tensor in tensors)

        global_tensor = (
            tensors[0].new_zeros(total_elements).detach().requires_grad_(False)
        )

        curr_element = 0
        for idx, tensor in enumerate(tensors):
            global_tensor[
                curr_element : curr_element + tensor.numel()
            ] = tensor.reshape(-1)
            curr_element += tensor.numel()

        return global_tensor

    def _unstack_flattened_tensors(
        self, stacked_tensor: Tensor, original_tensors: List[Tensor]
    ) -> List[Tensor]:
        unstacked_tensors = []
        global_idx = 0
        for tensor in original_tensors:
            # unpack global tensor into masks matching original tensor shapes
            unstacked_tensor = (
                tensor.new_empty(tensor.numel()).detach().requires_grad_(False)
            )
            unstacked_tensor.copy_(
                stacked_tensor[global_idx : global_idx + tensor.numel()]
            ).type(tensor.type())
            unstacked_tensor = unstacked_tensor.reshape(tensor.shape)

            unstacked_tensors.append(unstacked_tensor)
            global_idx += tensor.numel()

        return unstacked_tensors

    def _flip_threshold_mask_vals(
        self,
        mask: Tensor,
        tensor: Tensor,
        threshold: Tensor,
        max_flip: int,
        over_masked: bool,
    ) -> Tensor:
        # flip mask values where tensor == threshold until mask has desired
        # number of 0s/1s
        threshold_idxs = torch.nonzero(tensor == threshold, as_tuple=False)
        num_flipped = 0
        for threshold_elem_idx in threshold_idxs:
            # make tensor returned by nonzero() indexable
            threshold_elem_idx = threshold_elem_idx.split(1)
            threshold_mask_elem = mask[threshold_elem_idx]

            # flip mask val at threshold index if necessary
            if over_masked and threshold_mask_elem == 0:
                mask[threshold_elem_idx] = 1
                num_flipped += 1
            elif not over_masked and threshold_mask_elem == 1:
                mask[threshold_elem_idx] = 0
                num_flipped += 1

            if num_flipped >= max_flip:
                break
        return mask


# =============================================================================================
# Driver: one one-shot OBS pruning step with num_recomputations = 1, as sparseml runs it
# =============================================================================================

def obs_prune(case, damp, target, dtype):
    """Re-enacts, call by call, OBSPruningModifier.check_mask_update (modifier_pruning_obs.py l.255-299)
    -> _collect_grad_samples (l.324-345) -> ModuleParamPruningMask.pre_optim_step_update / update_param_masks
    / set_param_masks / apply (mask_params.py l.434-440, l.343-385, l.310-341, l.387-423) for one step
    with num_recomputations = 1 (interpolate(1, 0, 1, start, target) returns target exactly).
    Returns a dict of tensors (see the key list in the module docstring)."""
    params = [Parameter(torch.from_numpy(w).to(dtype).clone()) for w in case["ws"]]
    # OBSPruningModifier._get_scorer, l.316-322
    scorer = OBSPruningParamsScorer(
        params=params, num_grads=case["m"], damp=damp,
        fisher_block_size=case["B"], mask_type="unstructured")
    # mask_params.py l.115: masks start as ones_like(param); here the prior mask of an earlier step
    masks = [torch.ones_like(p) if pm is None else torch.from_numpy(pm).to(dtype)
             for p, pm in zip(params, case["prior"])]
    with torch.no_grad():
        for p, mk in zip(params, masks):
            p.data.mul_(mk)                                    # apply(), mask_params.py l.422
    scorer._enabled_grad_buffering = True                      # modifier l.264
    for j in range(case["m"]):                                 # GradSampler yields m backward passes
        for p, g in zip(params, case["grads"]):
            # the raw gradient of backward pass j; in sparseml the param's grad hook (mask_params.py
            # l.575-584) has already multiplied it by the mask, and pre_optim_step_update l.494 does again.
            p.grad = torch.from_numpy(g[j]).to(dtype).clone()
        scorer.pre_optim_step_update(masks)                    # modifier l.341 -> mask_params l.440
    rec = dict(finv=[f.f_inv.clone() for f in scorer._finvs], diag=[f.diag().clone() for f in scorer._finvs],
               grads_seen=[p.grad.clone() for p in params])
    # update_param_masks, mask_params.py l.355-385 (no thinning, so target unchanged)
    scores = scorer.score_parameters()
    rec["scores"] = [s.clone() for s in scores]
    target_list = [target] * len(params)
    new_masks = UnstructuredPruningMaskCreator().create_sparsity_masks(
        scores, target=target_list, global_sparsity=True)
    # set_param_masks, l.315-339
    mask_diffs = [mask_difference(old, new) for old, new in zip(masks, new_masks)]
    w_before = [p.data.clone() for p in params]
    scorer.mask_update(new_masks, mask_diffs)
    rec["update"] = [u.clone() for u in scorer._obs_updates]
    with torch.no_grad():
        for p, mk in zip(params, new_masks):
            p.data.mul_(mk)                                    # apply(), l.339 -> l.422
    rec["mask"] = [mk != 0 for mk in new_masks]
    rec["newly_pruned"] = [d == -1 for d in mask_diffs]
    rec["w"] = [p.data.clone() for p in params]
    rec["w_before"] = w_before
    return rec


def run_all(cases):
    """{(case, damp, target, dt): rec}; float64 runs under torch.set_default_dtype(torch.float64)
    (EmpiricalBlockFisherInverse's torch.eye and add_grad's padding zeros take the default dtype)."""
    res = {}
    for C, case in cases.items():
        for damp in DAMPS:
            for target in TARGETS:
                for dt, dtype in DTYPES.items():
                    prev = torch.get_default_dtype()
                    torch.set_default_dtype(dtype)
                    try:
                        res[(C, damp, target, dt)] = obs_prune(case, damp, target, dtype)
                    finally:
                        torch.set_default_dtype(prev)
    return res


# =============================================================================================
# Facts (float64 numpy cross-checks, written into the docstring by hand)
# =============================================================================================

def block_view(x, B):
    x = np.asarray(x, np.float64).reshape(-1)
    nb = math.ceil(x.size / B)
    return np.concatenate([x, np.zeros(nb * B - x.size)]).reshape(nb, B)


def facts_of(cases, res):
    eps = float(np.finfo(np.float32).eps)
    lines = []
    for C, case in cases.items():
        B, m = case["B"], case["m"]
        for damp in DAMPS:
            r64 = res[(C, damp, TARGETS[0], "f64")]
            r32 = res[(C, damp, TARGETS[0], "f32")]
            for i, (w, g, pr) in enumerate(zip(case["ws"], case["grads"], case["prior"])):
                keep = np.ones(w.shape, bool) if pr is None else pr
                G = np.stack([block_view(gj * keep, B) for gj in g.astype(np.float64)])   # (m, nb, B)
                F = damp * np.eye(B)[None] + np.einsum("jbp,jbq->bpq", G, G) / m
                Finv = np.linalg.inv(F)
                f64 = r64["finv"][i].numpy()
                f32 = r32["finv"][i].double().numpy()
                sc = np.abs(Finv).max()
                lines.append(f"{C} damp={damp:g} w{i}: finv64 vs inv(damp I + G^T G / m): "
                             f"{np.abs(f64 - Finv).max() / sc:.1e}; finv f32 vs 64: {np.abs(f32 - f64).max() / sc:.1e}; "
                             f"diag(Finv) in [{np.diagonal(Finv, axis1=1, axis2=2).min():.4g}, "
                             f"{np.diagonal(Finv, axis1=1, axis2=2).max():.4g}] (1/damp = {1 / damp:g})")
                d = np.diagonal(f64, axis1=1, axis2=2).reshape(-1)[: w.size]
                s = (w.astype(np.float64).reshape(-1) ** 2 / (2 * d + eps)).reshape(w.shape)
                s[~keep] = -np.inf
                assert np.array_equal(np.isinf(s), np.isinf(r64["scores"][i].numpy()))
                fin = ~np.isinf(s)
                err = np.abs(s[fin] - r64["scores"][i].numpy()[fin]).max() / np.abs(s[fin]).max()
                assert err < 1e-12, err
            for target in TARGETS:
                r64 = res[(C, damp, target, "f64")]
                r32 = res[(C, damp, target, "f32")]
                allsc = np.concatenate([x.numpy().reshape(-1) for x in r64["scores"]])
                k = round(allsc.size * target)
                srt = np.sort(allsc)
                gap = (srt[k] - srt[k - 1]) / abs(srt[k])
                same = all(torch.equal(a, b) for a, b in zip(r32["mask"], r64["mask"]))
                npruned = sum(int((~mk).sum()) for mk in r64["mask"])
                wdiff = max((a.double() - b).abs().max().item() for a, b in zip(r32["w"], r64["w"]))
                # joint OBS solve over each block's newly pruned set, for comparison
                jd = 0.0
                for i, w in enumerate(case["ws"]):
                    f64 = r64["finv"][i].numpy()
                    wb = block_view(r64["w_before"][i].numpy(), B)
                    newp = block_view(r64["newly_pruned"][i].numpy().astype(np.float64), B) > 0
                    wj = wb.copy()
                    for b in range(wb.shape[0]):
                        Q = np.nonzero(newp[b])[0]
                        if Q.size:
                            wj[b] = wb[b] - f64[b][:, Q] @ np.linalg.solve(f64[b][np.ix_(Q, Q)], wb[b][Q])
                            wj[b][Q] = 0.0
                    wj = wj.reshape(-1)[: w.size].reshape(w.shape)
                    jd = max(jd, np.abs(wj - r64["w"][i].numpy()).max())
                    # sparseml's update = sum of single-weight OBS updates within a block
                    d = np.diagonal(f64, axis1=1, axis2=2)
                    v = wb * newp / (d + eps)
                    upd = np.einsum("bpq,bq->bp", f64, v).reshape(-1)[: w.size].reshape(w.shape)
                    e = np.abs(upd - r64["update"][i].numpy()).max() / max(np.abs(upd).max(), 1e-300)
                    assert e < 1e-12, e
                lines.append(f"{C} damp={damp:g} target={target}: k = {k} pruned ({npruned} in the mask), "
                             f"rel. gap at the threshold {gap:.1e}, mask f32 == f64: {same}, max|w f32 - w f64| "
                             f"= {wdiff:.1e}, max|w - w(joint OBS solve per block)| = {jd:.2e}")
    return lines


# =============================================================================================
# --check-against: the original sparseml files, imported with stand-ins for the heavy imports
# =============================================================================================

def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _defs_from(path, names, ns):
    """exec the named top-level defs / assignments of a source file (verbatim source) into ns."""
    src = open(path).read()
    tree = ast.parse(src)
    got = set()
    for node in tree.body:
        nm = getattr(node, "name", None)
        if nm is None and isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            nm = node.targets[0].id
        if nm in names:
            exec(compile(ast.Module([node], []), path, "exec"), ns)
            got.add(nm)
    assert got == set(names), (got, names)
    return ns


def load_originals(root):
    src = os.path.join(root, "src", "sparseml")
    pr = os.path.join(src, "pytorch", "sparsification", "pruning")
    for name in ("sparseml", "sparseml.pytorch", "sparseml.pytorch.sparsification",
                 "sparseml.pytorch.sparsification.pruning"):
        pkg = types.ModuleType(name)
        pkg.__path__ = []
        sys.modules[name] = pkg
    # stand-ins: sparseml.pytorch.sparsification.modifier (decorators only)
    mm = types.ModuleType("sparseml.pytorch.sparsification.modifier")
    mm.ModifierProp = lambda *a, **k: property
    mm.PyTorchModifierYAML = lambda *a, **k: (lambda cls: cls)
    sys.modules[mm.__name__] = mm
    # stand-in base modifier: takes the kwargs OBSPruningModifier.__init__ passes up
    mb = types.ModuleType("sparseml.pytorch.sparsification.pruning.modifier_pruning_base")

    class BaseGradualPruningModifier:
        def __init__(self, **kwargs):
            self._base_kwargs = kwargs
    mb.BaseGradualPruningModifier = BaseGradualPruningModifier
    sys.modules[mb.__name__] = mb
    # sparseml.pytorch.utils: the real defs from helpers.py (exec'd verbatim) + a GradSampler stand-in
    mu = types.ModuleType("sparseml.pytorch.utils")
    ns = dict(os=os, torch=torch, Tensor=Tensor, List=List, _LOGGER=_LOGGER)
    _defs_from(os.path.join(src, "pytorch", "utils", "helpers.py"),
               ["MEMORY_BOUNDED", "memory_aware_threshold", "mask_difference", "tensor_list_sparsity"], ns)
    for k in ("MEMORY_BOUNDED", "memory_aware_threshold", "mask_difference", "tensor_list_sparsity"):
        setattr(mu, k, ns[k])
    mu.GradSampler = type("GradSampler", (), {})
    sys.modules[mu.__name__] = mu
    ml = types.ModuleType("sparseml.pytorch.utils.logger")
    ml.BaseLogger = type("BaseLogger", (), {})
    sys.modules[ml.__name__] = ml
    su = types.ModuleType("sparseml.utils")
    su.interpolate = None          # only used by check_mask_update for num_recomputations
    sys.modules[su.__name__] = su
    P = "sparseml.pytorch.sparsification.pruning."
    scorer = _load(P + "scorer", os.path.join(pr, "scorer.py"))
    mc = _load(P + "mask_creator", os.path.join(pr, "mask_creator.py"))
    mp = _load(P + "mask_params", os.path.join(pr, "mask_params.py"))
    obs = _load(P + "modifier_pruning_obs", os.path.join(pr, "modifier_pruning_obs.py"))
    return scorer, mc, mp, obs


def original_prune(mods, case, damp, target, dtype):
    """The same step through the ORIGINAL classes: OBSPruningModifier (real __init__/_validate/
    _get_scorer/_get_mask_creator) + ModuleParamPruningMask (real hooks, pre_optim_step_update,
    update_param_masks) on nn.Linear layers; gradients come from real backward passes of
    loss = sum(W * g_j) (so dloss/dW = g_j exactly) through the param's mask-gradient hook."""
    _, mc, mp, obs = mods
    layers = []
    for w in case["ws"]:
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w).to(dtype))
        layers.append(lin)
    modifier = obs.OBSPruningModifier(
        init_sparsity=0.05, final_sparsity=target, start_epoch=0.0, end_epoch=1.0, update_frequency=1.0,
        params=["re:.*weight"], num_grads=case["m"], damp=damp, fisher_block_size=case["B"])
    params = [lin.weight for lin in layers]
    scorer = modifier._get_scorer(params)
    creator = modifier._get_mask_creator(["w"] * len(params), params)
    assert type(creator) is mc.UnstructuredPruningMaskCreator
    masks = mp.ModuleParamPruningMask(layers, mask_creator=creator, scorer=scorer, param_names="weight",
                                      layer_names=[f"l{i}" for i in range(len(layers))],
                                      global_sparsity=True, allow_reintroduction=False)
    for i, pm in enumerate(case["prior"]):
        if pm is not None:
            masks._param_masks[i] = torch.from_numpy(pm).to(dtype)   # state left by an earlier step
    masks.enabled = True
    masks.apply()
    scorer._enabled_grad_buffering = True
    for j in range(case["m"]):
        for lin in layers:
            lin.zero_grad()
        loss = sum((lin.weight * torch.from_numpy(g[j]).to(dtype)).sum() for lin, g in zip(layers, case["grads"]))
        loss.backward()
        masks.pre_optim_step_update()
    finv = [f.f_inv.clone() for f in scorer._finvs]
    got_scores = []
    orig_score = scorer.score_parameters
    scorer.score_parameters = lambda: got_scores.append(orig_score()) or got_scores[-1]
    masks.update_param_masks(target)
    out = dict(finv=finv, scores=[s.clone() for s in got_scores[0]],
               mask=[mk != 0 for mk in masks.param_masks], w=[lin.weight.data.clone() for lin in layers])
    masks.enabled = False
    return out


def check_against(root, cases, res):
    mods = load_originals(root)
    n = 0
    for C, case in cases.items():
        for damp in DAMPS:
            for target in TARGETS:
                for dt, dtype in DTYPES.items():
                    prev = torch.get_default_dtype()
                    torch.set_default_dtype(dtype)
                    try:
                        o = original_prune(mods, case, damp, target, dtype)
                    finally:
                        torch.set_default_dtype(prev)
                    r = res[(C, damp, target, dt)]
                    for key in ("finv", "scores", "mask", "w"):
                        for a, b in zip(o[key], r[key]):
                            assert a.dtype == b.dtype and torch.equal(a, b), (C, damp, target, dt, key)
                    n += 1
    print(f"copies agree (torch.equal) with the original sparseml modules in {n} runs "
          "(Finv blocks, scores, masks, pruned weights)")


# =============================================================================================
# main
# =============================================================================================

def dkey(damp):
    return f"damp{damp:g}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check-against", default=None, help="root of a sparseml checkout (has src/sparseml/...)")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.environ[MEMORY_BOUNDED] = "True"     # what OBSPruningModifier._validate l.364-365 sets: kthvalue

    cases = make_cases()
    res = run_all(cases)
    out = {}
    for C, case in cases.items():
        out[f"{C}/m"] = np.int64(case["m"])
        out[f"{C}/B"] = np.int64(case["B"])
        for i, (w, g, pr) in enumerate(zip(case["ws"], case["grads"], case["prior"])):
            out[f"{C}/w{i}"] = w
            out[f"{C}/grads{i}"] = g
            out[f"{C}/prior_mask{i}"] = np.ones(w.shape, bool) if pr is None else pr
        for damp in DAMPS:
            for dt in DTYPES:
                first = res[(C, damp, TARGETS[0], dt)]
                for target in TARGETS:
                    r = res[(C, damp, target, dt)]
                    for i in range(len(case["ws"])):
                        assert torch.equal(r["finv"][i], first["finv"][i])
                        assert torch.equal(r["scores"][i], first["scores"][i])
                        assert not torch.any(r["w"][i][~r["mask"][i]] != 0)
                        # previously pruned stay pruned; update is exactly 0 there
                        pr = case["prior"][i]
                        if pr is not None:
                            assert not torch.any(r["mask"][i][torch.from_numpy(~pr)])
                            assert torch.all(r["update"][i][torch.from_numpy(~pr)] == 0)
                        p = f"{C}/{dkey(damp)}/{dt}/s{target:.2f}"
                        out[f"{p}/mask{i}"] = r["mask"][i].numpy()
                        out[f"{p}/update{i}"] = r["update"][i].numpy()
                        out[f"{p}/w{i}"] = r["w"][i].numpy()
                p = f"{C}/{dkey(damp)}/{dt}"
                for i in range(len(case["ws"])):
                    out[f"{p}/finv{i}"] = first["finv"][i].numpy()
                    out[f"{p}/diag{i}"] = first["diag"][i].numpy()
                    out[f"{p}/scores{i}"] = first["scores"][i].numpy()
    for line in facts_of(cases, res):
        print(line)
    if args.check_against:
        check_against(args.check_against, cases, res)
    np.savez(args.out, **out)
    print(f"wrote {args.out}: {len(out)} arrays")
    for k in sorted(out):
        print(f"  {k} {out[k].shape} {out[k].dtype}")


if __name__ == "__main__":
    main()
