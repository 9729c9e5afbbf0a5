"""Stored PyTorch reference outputs for SparseGPT and Wanda (one-shot pruning of linear layers).

Run once by hand, with torch and numpy in a scratch environment outside the project (lth never
imports torch):

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/torchvenv/bin/pip install numpy
    /tmp/torchvenv/bin/python tests/data/make_oneshot_reference.py   # writes tests/data/oneshot_reference.npz

(made with torch 2.13.0+cpu, numpy 2.4.6, Python 3.11, one CPU thread; runs in a few seconds.)

Optionally `--check-against DIR`, DIR holding the references' own files
(DIR/sparsegpt.py and DIR/quant.py from github:IST-DASLab/sparsegpt @147d215,
 DIR/lib/{prune,layerwrapper,sparsegpt,data,ablate}.py from github:locuslab/wanda @8e8fc87):
the script then also imports the original modules (with a stand-in `transformers` module holding
only a Conv1D class, a stand-in `datasets` module, torch.cuda.synchronize made a no-op and
Tensor.cuda the identity, since torch here is CPU-only) and asserts torch.equal between them and
the copies below: SparseGPT.add_batch's H and the pruned W of every fasterprune run (for
IST-DASLab sparsegpt.py AND for wanda's own lib/sparsegpt.py, which differs only in the names
prune_n/prune_m and the quantizer/DEBUG lines), WrappedGPT's scaler_row, and the pruned W of
lib/prune.py prune_wanda and prune_magnitude run end to end on a one-layer stand-in model (get_loaders
and prepare_calibration_input replaced to hand over the same calibration batches). The file was
made with --check-against on the fetched files, and it passed.

The reference logic is COPIED from
  * github:IST-DASLab/sparsegpt @147d2159dc4f3e9f73e47b32c04d7b3708f44436 (sparsegpt.py last
    changed in 54c84435482f68967d796a894bb4e11d1f2c21f2): sparsegpt.py l.11 (DEBUG = False) and
    l.17-151 (class SparseGPT: __init__, add_batch, fasterprune, free) verbatim, except l.136-138
    dropped (torch.cuda.synchronize() and the prints of time and error); lines marked "# ADDED"
    only record values (self.Hinv, self.damp, self.mask = the mask1 of every block, self.scores =
    the tmp arrays it sorts / takes topk of, self.Losses). The quantizer branches are dead.
    Driven as opt.py l.98-116 drives it: add_batch(inp[0].data, out.data) from the layer's forward
    hook, then fasterprune(sparsity, prunen=, prunem=, percdamp=, blocksize=).
  * github:locuslab/wanda @8e8fc87b4a2f9955baa7e76e64d5fce7fa8724a6 (lib/prune.py and
    lib/layerwrapper.py last changed in 4651156a2650aea5f10585d6f0298e9ec3619480):
    lib/layerwrapper.py l.4-35 (class WrappedGPT) verbatim; lib/prune.py l.97-103
    (return_given_alpha) verbatim; lib/prune.py l.164-202 (the per-layer part of prune_wanda:
    metric, mask selection, zeroing) verbatim but dedented, prints l.165/l.196 dropped, wrapped in a
    def that returns (W_metric, W_mask); lib/prune.py l.112-125 (per-layer part of prune_magnitude)
    likewise, with `.cuda()`/`.cpu()` dropped from l.122.
  * The float64 runs (keys .../w64, mask64, H64, hinv64) use the same SparseGPT class source with
    its two `.float()` casts replaced by `.double()` (exec'd), under
    torch.set_default_dtype(torch.float64), on a float64 layer and float64 inputs (the float32
    values of w and x, widened).

Model and data (all stored; float32; W in PyTorch layout (out, in); nn.Linear without bias):
  From np.random.default_rng(0), in this order:
  layer A: W = standard_normal((16, 32)) / sqrt(32); X = standard_normal((64, 32)).
           Calibration = 8 sequences of seqlen 8 tokens (rows of X in order), fed to add_batch in
           2 calls holding 3 and 5 sequences: X[:24].reshape(3, 8, 32), X[24:].reshape(5, 8, 32).
  layer B: W = standard_normal((24, 48)) / sqrt(48); scale = exp(standard_normal(48));
           X = standard_normal((128, 48)) * scale (per input column); then X[:, 13] = 0 (a dead
           input). 8 sequences of 16 tokens, add_batch in 3 calls of 2, 2, 4 sequences.
  The same batches feed SparseGPT.add_batch and WrappedGPT.add_batch. (In the references' own
  drivers every call holds ONE sequence, (1, seqlen, in); the formulas below are the same, only the
  float32 roundoff order differs.)

Keys (<L> in A, B; masks are bool with True = PRUNED, i.e. set to zero, in all three methods):
  <L>/w (out, in), <L>/x (n, in)          the layer weight and the calibration rows.
  <L>/seqlen (), <L>/batches (k,) int64   tokens per sequence; sequences per add_batch call.
  <L>/dead (in,) bool                     input columns that are all zero in x (B: column 13).

  sparsegpt/<L>/H (in, in)                self.H after all add_batch calls (before fasterprune,
                                          which modifies it in place): 2/nseq * X^T X with nseq =
                                          the number of SEQUENCES (8), not rows, accumulated with
                                          the running rescale (see below).
  sparsegpt/<L>/H64                       the same in float64.
  sparsegpt/<L>/damp ()                   0.01 * mean(diag(H')), H' = H with diag := 1 at dead cols.
  sparsegpt/<L>/hinv, hinv64 (in, in)     the "Hinv" fasterprune uses: the UPPER Cholesky factor U
                                          of (H' + damp*I)^-1 (U^T U = inverse), via cholesky ->
                                          cholesky_inverse -> cholesky(upper=True).
  sparsegpt/<L>/<cfg>/w (out, in)         the pruned weight (float32 run).
  sparsegpt/<L>/<cfg>/mask                the mask the code selected (mask1 of every block), True =
                                          pruned (q = 0); w == 0 wherever mask.
  sparsegpt/<L>/<cfg>/losses (out,)       the per-row Losses (sum over columns of (w-q)^2/d^2, / 2).
  sparsegpt/<L>/<cfg>/w64, mask64         the same computed in float64.
  <cfg>, all with percdamp = 0.01:
    unstr0.5_b128   sparsity 0.5, prunen = prunem = 0, blocksize 128 (one block for 32/48 columns)
    unstr0.5_b8     sparsity 0.5, blocksize 8 (lazy blocks of 8 columns)
    unstr0.7_b8     sparsity 0.7, blocksize 8
    2of4_b8         prunen 2, prunem 4, blocksize 8 (sparsity argument 0.5, unused for N:M)
    4of8_b16        prunen 4, prunem 8, blocksize 16

  wanda/<L>/scaler_row (in,)              WrappedGPT.scaler_row after all add_batch calls:
                                          sum over rows of x_j^2 / nseq (nseq = 8 sequences),
                                          accumulated as torch.norm(inp, p=2, dim=1)**2 / nsamples
                                          with the running rescale.
  wanda/<L>/metric (out, in)              W_metric = |W| * sqrt(scaler_row) (broadcast over rows).
  wanda/<L>/mask_unstr0.5, mask_unstr0.7  use_variant=False: each output row prunes its
                                          int(in * ratio) smallest metric entries (stable sort).
  wanda/<L>/mask_2of4, mask_4of8          N:M: in each group of M consecutive input columns of each
                                          row, the N smallest metric entries (topk largest=False).
  magnitude/<L>/mask_2of4                 prune_magnitude N:M on |W|, same grouping.
  magnitude/<L>/mask_unstr0.5             prune_magnitude unstructured: ONE threshold over the whole
                                          layer, |W| <= sort(|W|.flatten())[int(numel*0.5)]
                                          (so numel*0.5 + 1 entries pruned).

Conventions and quirks a re-implementation must match:
  * N:M groups run along the INPUT dimension: columns [g*M, (g+1)*M) of each output row of W in
    PyTorch layout (out, in), i.e. `ii % prune_m == 0` over W.shape[1] (Wanda, magnitude) and
    `i % prunem == 0` over the columns of each SparseGPT block (block starts are multiples of the
    blocksize, so groups align with blocks only when prunem divides blocksize, as here).
  * SparseGPT N:M picks each group's mask when the loop reaches the group's first column, from the
    CURRENT W1 (already updated by the OBS corrections of the earlier columns of the block), with
    scores W1^2 / diag(Hinv1)^2 over the group's columns.
  * SparseGPT unstructured picks a block's mask once at the block start, from W1 = W[:, i1:i2] as
    updated by the previous blocks, over ALL rows x block columns together (not per row):
    tmp <= sort(tmp.flatten())[int(tmp.numel() * sparsity)] -> int(numel*sparsity) + 1 entries per
    block when there are no ties (A: 257 of 512 at b128; 4 x 65 = 260 at 0.5/b8; 4 x 90 = 360 at
    0.7/b8; B: 577; 6 x 97 = 582; 6 x 135 = 810). int() of the Python float product (0.7*192 =
    134.4 -> 134). So the blocksize changes the result.
  * Wanda unstructured prunes exactly int(in * sparsity_ratio) per row (A: 16/22, B: 24/33 for
    0.5/0.7; 48*0.7 = 33.6 -> 33), from torch.sort(stable=True): ties would go to the lower column
    index first. torch.topk(largest=False) (N:M in all three) has no documented tie order; the
    inputs here have no ties at any decision (relative gaps below), so no tie rule is exercised.
  * Running rescale (both add_batch): before adding a call holding tmp = inp.shape[0] sequences
    (a 2-D input counts as ONE), H *= nsamples/(nsamples+tmp); nsamples += tmp; then SparseGPT
    adds (sqrt(2/nsamples) * inp)(sqrt(2/nsamples) * inp)^T with inp (in, tokens), Wanda adds
    ||inp_j||_2^2 / nsamples. Net: H = 2/nseq * sum X^T X, scaler_row = sum x^2 / nseq, whatever
    the batching. Scalars (python floats) enter float32 tensors as float32.
  * Dead inputs (diag(H) == 0): fasterprune sets H[dead, dead] = 1 (the diagonal entries) and
    W[:, dead] = 0 BEFORE computing damp, so the dead columns count as 1 in mean(diag(H)). The
    dead column's row/column of Hinv are then exactly 0 off the diagonal (stored), so W[:, dead]
    stays exactly 0; those zeros have score 0 and are always selected as pruned (B: column 13 is
    in every SparseGPT mask, it takes one of the N slots in its N:M group and counts toward the
    unstructured budget). Wanda: scaler_row = 0 there, metric = 0, so it is pruned in every Wanda
    mask too (W itself is not zeroed by Wanda before masking; magnitude ignores x).
  * damp = percdamp * mean(diag) is added to every diagonal entry (also the dead ones).

Facts about the stored data (checked when it was made):
  * H vs 2/nseq X^T X computed in float64: max abs difference / max|H| = 1.4e-7 (A), 9.0e-8 (B);
    H64 vs it: 3e-16. scaler_row vs sum x^2 / nseq: max relative difference 2.8e-7 (A), 1.5e-7 (B).
  * SparseGPT, all 10 runs: mask64 == mask; max|w - w64| <= 1.4e-7 (max|w| <= 0.74), i.e. float32
    roundoff moves the pruned weights by ~1e-7; no kept weight ended exactly 0, so mask == (w == 0)
    here (the instrumented mask is still the one to compare). Pruned counts: A 257, 260, 360, 256,
    256 of 512; B 577, 582, 810, 576, 576 of 1152 (cfg order as listed above). sum(losses):
    A 9.37839, 8.91613, 26.4352, 13.6372, 11.0737; B 22.1784, 30.3895, 107.935, 64.3607, 44.3935.
  * No decision is near a tie: the smallest relative gap between the last pruned and the first
    kept score of any selection (SparseGPT block threshold / N:M group, same in float64) is 1.3e-3
    (A unstr0.5_b8; all others >= 8e-3); Wanda 2.3e-4 (A unstr0.5; others >= 1.1e-3); magnitude
    1.2e-3. Every row of the Wanda metric has distinct values.
  * 2:4 masks: Wanda != magnitude at 18 (A) and 292 (B) entries (B's column scales matter);
    SparseGPT 2of4_b8 != Wanda at 44 (A) and 100 (B).
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import math
import os
import sys
import time
import types

import numpy as np
import torch
import torch.nn as nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "oneshot_reference.npz")
LAYERS = ("A", "B")
# SparseGPT runs: name -> (sparsity, prunen, prunem, blocksize); percdamp = 0.01 for all.
SPARSEGPT_CONFIGS = {
    "unstr0.5_b128": (0.5, 0, 0, 128),
    "unstr0.5_b8": (0.5, 0, 0, 8),
    "unstr0.7_b8": (0.7, 0, 0, 8),
    "2of4_b8": (0.5, 2, 4, 8),
    "4of8_b16": (0.5, 4, 8, 16),
}
PERCDAMP = 0.01
# Wanda runs: name -> (sparsity_ratio, prune_n, prune_m); use_variant = False.
WANDA_CONFIGS = {
    "unstr0.5": (0.5, 0, 0),
    "unstr0.7": (0.7, 0, 0),
    "2of4": (0.5, 2, 4),
    "4of8": (0.5, 4, 8),
}
# Magnitude runs (wanda prune_magnitude): name -> (sparsity_ratio, prune_n, prune_m).
MAGNITUDE_CONFIGS = {
    "unstr0.5": (0.5, 0, 0),
    "2of4": (0.5, 2, 4),
}

# The references import transformers only for isinstance(layer, transformers.Conv1D) (GPT-2's
# transposed linear); a stand-in class that no layer here is an instance of keeps the copies verbatim.
transformers = types.ModuleType("transformers")
transformers.Conv1D = type("Conv1D", (), {})


# =============================================================================================
# Model and data
# =============================================================================================

def layer_data():
    """Two linear layers and their calibration inputs, all float32, W in PyTorch layout (out, in).

    Returns {name: dict(w, x, seqlen, batches, dead)}; x has n = seqlen * sum(batches) rows, fed to
    add_batch as consecutive chunks x[...].reshape(b, seqlen, in), b in batches."""
    rng = np.random.default_rng(0)
    out = {}
    # layer A: W (16, 32), X (64, 32) standard normal; 8 sequences of 8 tokens, add_batch calls of 3 and 5.
    w = rng.standard_normal((16, 32)) / np.sqrt(32)
    x = rng.standard_normal((64, 32))
    out["A"] = dict(w=w.astype(np.float32), x=x.astype(np.float32), seqlen=8, batches=(3, 5), dead=None)
    # layer B: W (24, 48), X (128, 48) with column scales exp(N(0,1)) and column 13 exactly zero;
    # 8 sequences of 16 tokens, add_batch calls of 2, 2 and 4.
    w = rng.standard_normal((24, 48)) / np.sqrt(48)
    scale = np.exp(rng.standard_normal(48))
    x = rng.standard_normal((128, 48)) * scale
    x[:, 13] = 0.0
    out["B"] = dict(w=w.astype(np.float32), x=x.astype(np.float32), seqlen=16, batches=(2, 2, 4), dead=13)
    return out


def batches_of(d, dtype=torch.float32):
    """The add_batch inputs: tensors (b, seqlen, in) for b in d['batches'] (consecutive rows of x)."""
    x = torch.from_numpy(d["x"]).to(dtype)
    res, start = [], 0
    for b in d["batches"]:
        n = b * d["seqlen"]
        res.append(x[start:start + n].reshape(b, d["seqlen"], x.shape[1]))
        start += n
    assert start == x.shape[0]
    return res


def linear_of(w, dtype=torch.float32):
    layer = nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w).to(dtype))
    return layer


# =============================================================================================
# SparseGPT — copied from github:IST-DASLab/sparsegpt @147d215 (sparsegpt.py last changed in 54c8443)
# sparsegpt.py l.11 and l.17-151, verbatim except: l.136-138 dropped (torch.cuda.synchronize() and
# the two prints of time and error); lines marked "# ADDED" record what the code selects (the
# mask, the scores it sorts / takes topk of, the Hinv factor, the losses) and change nothing else.
# The quantizer branches are dead here (no layer has a .quantizer; quant.py's `quantize` is not
# imported).
# =============================================================================================

DEBUG = False 


class SparseGPT:

    def __init__(self, layer):
        self.layer = layer
        self.dev = self.layer.weight.device
        W = layer.weight.data.clone()
        if isinstance(self.layer, nn.Conv2d):
            W = W.flatten(1)
        if isinstance(self.layer, transformers.Conv1D):
            W = W.t()
        self.rows = W.shape[0]
        self.columns = W.shape[1]
        self.H = torch.zeros((self.columns, self.columns), device=self.dev)
        self.nsamples = 0

    def add_batch(self, inp, out, blocksize=1024):
        if DEBUG:
            self.inp1 = inp
            self.out1 = out
        if len(inp.shape) == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        if isinstance(self.layer, nn.Linear) or isinstance(self.layer, transformers.Conv1D):
            if len(inp.shape) == 3:
                inp = inp.reshape((-1, inp.shape[-1]))
            inp = inp.t()
        self.H *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = math.sqrt(2 / self.nsamples) * inp.float()
        self.H += inp.matmul(inp.t())

    def fasterprune(
        self, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=.01
    ):
        W = self.layer.weight.data.clone()
        if isinstance(self.layer, nn.Conv2d):
            W = W.flatten(1)
        if isinstance(self.layer, transformers.Conv1D):
            W = W.t()
        W = W.float()

        if hasattr(self, 'quantizer'):
            if not self.quantizer.ready():
                self.quantizer.find_params(W, weight=True)

        tick = time.time()

        H = self.H
        del self.H
        dead = torch.diag(H) == 0
        H[dead, dead] = 1
        W[:, dead] = 0

        Losses = torch.zeros(self.rows, device=self.dev)

        damp = percdamp * torch.mean(torch.diag(H))
        self.damp = damp.clone()  # ADDED
        diag = torch.arange(self.columns, device=self.dev)
        H[diag, diag] += damp
        H = torch.linalg.cholesky(H)
        H = torch.cholesky_inverse(H)
        H = torch.linalg.cholesky(H, upper=True)
        Hinv = H
        self.Hinv = Hinv.clone()  # ADDED

        mask = None
        self.mask = torch.zeros_like(W) == 1  # ADDED
        self.scores = []  # ADDED

        for i1 in range(0, self.columns, blocksize):
            i2 = min(i1 + blocksize, self.columns)
            count = i2 - i1

            W1 = W[:, i1:i2].clone()
            Q1 = torch.zeros_like(W1)
            Err1 = torch.zeros_like(W1)
            Losses1 = torch.zeros_like(W1)
            Hinv1 = Hinv[i1:i2, i1:i2]

            if prunen == 0: 
                if mask is not None:
                    mask1 = mask[:, i1:i2]
                else:
                    tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
                    thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
                    mask1 = tmp <= thresh
                    self.scores.append(tmp.clone())  # ADDED
            else:
                mask1 = torch.zeros_like(W1) == 1

            for i in range(count):
                w = W1[:, i]
                d = Hinv1[i, i]

                if prunen != 0 and i % prunem == 0:
                    tmp = W1[:, i:(i + prunem)] ** 2 / (torch.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
                    mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
                    self.scores.append(tmp.clone())  # ADDED

                q = w.clone()
                q[mask1[:, i]] = 0

                if hasattr(self, 'quantizer'):
                    q = quantize(
                        q.unsqueeze(1), self.quantizer.scale, self.quantizer.zero, self.quantizer.maxq
                    ).flatten()

                Q1[:, i] = q
                Losses1[:, i] = (w - q) ** 2 / d ** 2

                err1 = (w - q) / d
                W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
                Err1[:, i] = err1

            W[:, i1:i2] = Q1
            Losses += torch.sum(Losses1, 1) / 2
            self.mask[:, i1:i2] = mask1  # ADDED

            W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])

            if DEBUG:
                self.layer.weight.data[:, :i2] = W[:, :i2]
                self.layer.weight.data[:, i2:] = W[:, i2:]
                print(torch.sum((self.layer(self.inp1) - self.out1) ** 2))
                print(torch.sum(Losses))

        self.Losses = Losses  # ADDED

        if isinstance(self.layer, transformers.Conv1D):
            W = W.t()
        self.layer.weight.data = W.reshape(self.layer.weight.shape).to(self.layer.weight.data.dtype)
        if DEBUG:
            print(torch.sum((self.layer(self.inp1) - self.out1) ** 2))

    def free(self):
        if DEBUG:
            self.inp1 = None
            self.out1 = None
        self.H = None
        torch.cuda.empty_cache()


def sparsegpt64_class():
    """The same class, computing in float64: its source with `.float()` -> `.double()` (the only two
    casts, in add_batch and fasterprune); run under torch.set_default_dtype(torch.float64) so that the
    torch.zeros for H and Losses are float64 too, on a float64 layer and float64 inputs."""
    src = inspect.getsource(SparseGPT)
    assert src.count(".float()") == 2
    assert src.count("# ADDED") == 8
    ns = dict(globals())
    exec(src.replace(".float()", ".double()"), ns)
    return ns["SparseGPT"]


def run_sparsegpt(cls, d, cfg, dtype=torch.float32):
    """Driven as opt.py l.97-116 drives it: add_batch(inp[0].data, out.data) per forward, then
    fasterprune(sparsity, prunen=, prunem=, percdamp=, blocksize=). Returns the object and H after
    add_batch (cloned before fasterprune, which overwrites it in place)."""
    sparsity, prunen, prunem, blocksize = cfg
    layer = linear_of(d["w"], dtype)
    gpt = cls(layer)
    with torch.no_grad():
        for inp in batches_of(d, dtype):
            gpt.add_batch(inp, layer(inp))
        H = gpt.H.clone()
        gpt.fasterprune(sparsity, prunen=prunen, prunem=prunem, percdamp=PERCDAMP, blocksize=blocksize)
    return gpt, layer, H


# =============================================================================================
# Wanda — copied from github:locuslab/wanda @8e8fc87 (lib/prune.py, lib/layerwrapper.py last
# changed in 4651156)
# =============================================================================================

# ---- lib/layerwrapper.py l.4-35 (verbatim) ----
# Define WrappedGPT class
class WrappedGPT:
    """
    This class wraps a GPT layer for specific operations.
    """

    def __init__(self, layer, layer_id=0, layer_name="none"):
        self.layer = layer
        self.dev = self.layer.weight.device
        self.rows = layer.weight.data.shape[0]
        self.columns = layer.weight.data.shape[1]

        self.scaler_row = torch.zeros((self.columns), device=self.dev)
        self.nsamples = 0

        self.layer_id = layer_id 
        self.layer_name = layer_name

    def add_batch(self, inp, out):
        if len(inp.shape) == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        if isinstance(self.layer, nn.Linear):
            if len(inp.shape) == 3:
                inp = inp.reshape((-1, inp.shape[-1]))
            inp = inp.t()

        self.scaler_row *= self.nsamples / (self.nsamples+tmp)
        self.nsamples += tmp

        inp = inp.type(torch.float32)
        self.scaler_row += torch.norm(inp, p=2, dim=1) ** 2  / self.nsamples


# ---- lib/prune.py l.97-103 (verbatim; only reached with use_variant=True) ----
def return_given_alpha(alpha, sort_res, W_metric, tmp_metric, sum_before):
    thres_cumsum = sum_before * alpha 
    sort_mask = tmp_metric <= thres_cumsum.reshape((-1,1))
    thres = torch.gather(sort_res[0], dim=1, index=sort_mask.sum(dim=1, keepdims=True)-1)
    W_mask = (W_metric <= thres)
    cur_sparsity = (W_mask==True).sum() / W_mask.numel()
    return W_mask, cur_sparsity


# ---- lib/prune.py l.164-202: the per-layer part of prune_wanda (the body of `for name in subset`
# after calibration), verbatim but dedented, without the prints of l.165 and l.196; the wrapping
# def and the final return are ADDED ----
def wanda_prune_layer(args, subset, wrapped_layers, prune_n=0, prune_m=0):
    for name in subset:
        W_metric = torch.abs(subset[name].weight.data) * torch.sqrt(wrapped_layers[name].scaler_row.reshape((1,-1)))

        W_mask = (torch.zeros_like(W_metric) == 1)  ## initialize a mask to be all False
        if prune_n != 0:
            # structured n:m sparsity
            for ii in range(W_metric.shape[1]):
                if ii % prune_m == 0:
                    tmp = W_metric[:,ii:(ii+prune_m)].float()
                    W_mask.scatter_(1,ii+torch.topk(tmp, prune_n,dim=1, largest=False)[1], True)
        else:
            sort_res = torch.sort(W_metric, dim=-1, stable=True)

            if args.use_variant:
                # wanda variant 
                tmp_metric = torch.cumsum(sort_res[0], dim=1)
                sum_before = W_metric.sum(dim=1)

                alpha = 0.4
                alpha_hist = [0., 0.8]
                W_mask, cur_sparsity = return_given_alpha(alpha, sort_res, W_metric, tmp_metric, sum_before)
                while (torch.abs(cur_sparsity - args.sparsity_ratio)>0.001) and (alpha_hist[1]-alpha_hist[0]>=0.001):
                    if cur_sparsity > args.sparsity_ratio:
                        alpha_new = (alpha + alpha_hist[0]) / 2.0
                        alpha_hist[1] = alpha
                    else:
                        alpha_new = (alpha + alpha_hist[1]) / 2.0
                        alpha_hist[0] = alpha

                    alpha = alpha_new 
                    W_mask, cur_sparsity = return_given_alpha(alpha, sort_res, W_metric, tmp_metric, sum_before)
            else:
                # unstructured pruning
                indices = sort_res[1][:,:int(W_metric.shape[1]*args.sparsity_ratio)]
                W_mask.scatter_(1, indices, True)

        subset[name].weight.data[W_mask] = 0  ## set weights to zero 
    return W_metric, W_mask  # ADDED


# ---- lib/prune.py l.112-125: the per-layer part of prune_magnitude, verbatim but dedented and with
# `.cuda()` / `.cpu()` dropped from l.122; the wrapping def and the final return are ADDED ----
def magnitude_prune_layer(args, subset, prune_n=0, prune_m=0):
    for name in subset:
        W = subset[name].weight.data 
        W_metric = torch.abs(W)
        if prune_n != 0:
            W_mask = (torch.zeros_like(W)==1)
            for ii in range(W_metric.shape[1]):
                if ii % prune_m == 0:
                    tmp = W_metric[:,ii:(ii+prune_m)].float()
                    W_mask.scatter_(1,ii+torch.topk(tmp, prune_n,dim=1, largest=False)[1], True)
        else:
            thresh = torch.sort(W_metric.flatten())[0][int(W.numel()*args.sparsity_ratio)]
            W_mask = (W_metric<=thresh)

        W[W_mask] = 0
    return W_metric, W_mask  # ADDED


def wanda_args(sparsity_ratio, nsamples):
    return types.SimpleNamespace(sparsity_ratio=sparsity_ratio, use_variant=False, nsamples=nsamples, seed=0)


def run_wanda(d, cfg, wrapped_cls=WrappedGPT, prune_layer=wanda_prune_layer):
    """Calibration as prune_wanda's forward hook does it (add_batch(inp[0].data, out.data)), with the
    same (b, seqlen, in) batches as SparseGPT; then the per-layer pruning."""
    ratio, n, m = cfg
    layer = linear_of(d["w"])
    subset = {"lin": layer}
    wrapped_layers = {"lin": wrapped_cls(layer)}
    with torch.no_grad():
        for inp in batches_of(d):
            wrapped_layers["lin"].add_batch(inp, layer(inp))
    scaler_row = wrapped_layers["lin"].scaler_row.clone()
    metric, mask = prune_layer(wanda_args(ratio, len(d["batches"])), subset, wrapped_layers, prune_n=n, prune_m=m)
    return scaler_row, metric, mask, layer.weight.data.clone()


def run_magnitude(d, cfg):
    ratio, n, m = cfg
    layer = linear_of(d["w"])
    metric, mask = magnitude_prune_layer(wanda_args(ratio, 0), {"lin": layer}, prune_n=n, prune_m=m)
    return metric, mask, layer.weight.data.clone()


# =============================================================================================
# Checks on the stored data
# =============================================================================================

def min_rel_gap_sorted(v, k):
    """Relative gap between the k-th and (k+1)-th smallest of v (0-based k): how far roundoff
    would have to move a value to change a threshold selection `v <= sort(v)[k]`."""
    s = np.sort(v.astype(np.float64).ravel())
    return (s[k + 1] - s[k]) / max(abs(s[k + 1]), 1e-300)


def nm_gap(scores, n):
    """Smallest relative gap, over the rows of a (rows, m) score block, between the n-th and
    (n+1)-th smallest entry (topk(largest=False) picks the n smallest)."""
    s = np.sort(scores.astype(np.float64), axis=1)
    return float(np.min((s[:, n] - s[:, n - 1]) / np.maximum(np.abs(s[:, n]), 1e-300)))


def sparsegpt_gaps(gpt, cfg):
    sparsity, prunen, prunem, _ = cfg
    if prunen == 0:
        return min(min_rel_gap_sorted(t.numpy(), int(t.numel() * sparsity)) for t in gpt.scores)
    return min(nm_gap(t.numpy(), prunen) for t in gpt.scores)


def nm_groups(metric, m):
    rows, cols = metric.shape
    return metric.reshape(rows, cols // m, m).reshape(-1, m)


# =============================================================================================
# --check-against: the references' own modules
# =============================================================================================

class FakeDecoderLayer(nn.Module):
    """One 'decoder layer' holding the linear layer; called by prune_wanda / opt.py style loops as
    layer(inps[j].unsqueeze(0), attention_mask=, position_ids=)[0]. Here inps[j] is a whole add_batch
    input (b, seqlen, in), so the linear layer (and its forward hook) sees (b, seqlen, in)."""

    def __init__(self, w):
        super().__init__()
        self.lin = linear_of(w)

    def forward(self, x, attention_mask=None, position_ids=None):
        return (self.lin(x.squeeze(0)),)


def load_originals(root):
    sys.modules.setdefault("transformers", transformers)       # only isinstance(.., Conv1D) is used
    if "datasets" not in sys.modules:                           # lib/data.py: from datasets import load_dataset
        ds = types.ModuleType("datasets")
        ds.load_dataset = None
        sys.modules["datasets"] = ds
    sys.path.insert(0, root)
    sg = importlib.import_module("sparsegpt")                   # IST-DASLab sparsegpt.py (+ quant.py)
    wprune = importlib.import_module("lib.prune")              # locuslab/wanda lib/ (namespace package)
    wlayer = importlib.import_module("lib.layerwrapper")
    wsg = importlib.import_module("lib.sparsegpt")
    return sg, wprune, wlayer, wsg


def check_against(root, data, results):
    sg, wprune, wlayer, wsg = load_originals(root)
    saved_sync, saved_cuda = torch.cuda.synchronize, torch.Tensor.cuda
    torch.cuda.synchronize = lambda *a, **k: None               # fasterprune l.136 (CPU-only torch)
    torch.Tensor.cuda = lambda self, *a, **k: self              # prune_magnitude l.122
    try:
        for L, d in data.items():
            for name, cfg in SPARSEGPT_CONFIGS.items():
                sparsity, prunen, prunem, blocksize = cfg
                ours_w, ours_H = results[("sparsegpt", L, name)]
                # IST-DASLab sparsegpt.py, driven as opt.py does
                layer = linear_of(d["w"])
                gpt = sg.SparseGPT(layer)
                with torch.no_grad():
                    for inp in batches_of(d):
                        gpt.add_batch(inp, layer(inp))
                    assert torch.equal(gpt.H, ours_H), (L, name)
                    gpt.fasterprune(sparsity, prunen=prunen, prunem=prunem, percdamp=PERCDAMP, blocksize=blocksize)
                assert torch.equal(layer.weight.data, ours_w), (L, name)
                # wanda's lib/sparsegpt.py (prune_n/prune_m names), driven as its prune_sparsegpt does
                layer = linear_of(d["w"])
                gpt = wsg.SparseGPT(layer)
                with torch.no_grad():
                    for inp in batches_of(d):
                        gpt.add_batch(inp, layer(inp))
                    gpt.fasterprune(sparsity, prune_n=prunen, prune_m=prunem, percdamp=PERCDAMP, blocksize=blocksize)
                assert torch.equal(layer.weight.data, ours_w), ("wanda lib/sparsegpt.py", L, name)

            # wanda: WrappedGPT.add_batch directly
            layer = linear_of(d["w"])
            wr = wlayer.WrappedGPT(layer)
            with torch.no_grad():
                for inp in batches_of(d):
                    wr.add_batch(inp, layer(inp))
            assert torch.equal(wr.scaler_row, results[("wanda_scaler", L)]), L

            # wanda: prune_wanda / prune_magnitude end to end on a one-layer fake model
            for method, configs in (("wanda", WANDA_CONFIGS), ("magnitude", MAGNITUDE_CONFIGS)):
                for name, (ratio, n, m) in configs.items():
                    dec = FakeDecoderLayer(d["w"])
                    model = types.SimpleNamespace(
                        config=types.SimpleNamespace(use_cache=False), seqlen=d["seqlen"], hf_device_map={},
                        model=types.SimpleNamespace(layers=[dec]))
                    inps = batches_of(d)
                    recorded = []

                    class Recorder(wlayer.WrappedGPT):
                        def __init__(self, *a, **k):
                            super().__init__(*a, **k)
                            recorded.append(self)

                    saved = (wprune.get_loaders, wprune.prepare_calibration_input, wprune.WrappedGPT)
                    wprune.get_loaders = lambda *a, **k: (None, None)
                    wprune.prepare_calibration_input = lambda model, dl, dev: (list(inps), [None] * len(inps), None, None)
                    wprune.WrappedGPT = Recorder
                    try:
                        fn = wprune.prune_wanda if method == "wanda" else wprune.prune_magnitude
                        fn(wanda_args(ratio, len(inps)), model, None, device=torch.device("cpu"), prune_n=n, prune_m=m)
                    finally:
                        wprune.get_loaders, wprune.prepare_calibration_input, wprune.WrappedGPT = saved
                    ours_w = results[(method, L, name)]
                    assert torch.equal(dec.lin.weight.data, ours_w), (method, L, name)
                    if method == "wanda":
                        assert len(recorded) == 1
                        assert torch.equal(recorded[0].scaler_row, results[("wanda_scaler", L)]), (L, name)
    finally:
        torch.cuda.synchronize, torch.Tensor.cuda = saved_sync, saved_cuda
    print("copies agree with the original reference modules "
          "(sparsegpt.py, wanda lib/sparsegpt.py, lib/layerwrapper.py, lib/prune.py prune_wanda/prune_magnitude)")


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

    data = layer_data()
    out, results, facts = {}, {}, []
    SparseGPT64 = sparsegpt64_class()
    for L, d in data.items():
        out[f"{L}/w"], out[f"{L}/x"] = d["w"], d["x"]
        out[f"{L}/seqlen"] = np.int64(d["seqlen"])
        out[f"{L}/batches"] = np.array(d["batches"], np.int64)
        dead = np.zeros(d["w"].shape[1], bool)
        if d["dead"] is not None:
            dead[d["dead"]] = True
        assert np.array_equal(dead, ~np.any(d["x"] != 0, axis=0))
        out[f"{L}/dead"] = dead

        # ---- SparseGPT ----
        H_first = None
        for name, cfg in SPARSEGPT_CONFIGS.items():
            gpt, layer, H = run_sparsegpt(SparseGPT, d, cfg)
            prev = torch.get_default_dtype()
            torch.set_default_dtype(torch.float64)
            try:
                gpt64, layer64, H64 = run_sparsegpt(SparseGPT64, d, cfg, torch.float64)
            finally:
                torch.set_default_dtype(prev)
            assert layer64.weight.dtype == torch.float64 and H64.dtype == torch.float64
            if H_first is None:
                H_first = H
                out[f"sparsegpt/{L}/H"] = H.numpy()
                out[f"sparsegpt/{L}/H64"] = H64.numpy()
                out[f"sparsegpt/{L}/hinv"] = gpt.Hinv.numpy()
                out[f"sparsegpt/{L}/hinv64"] = gpt64.Hinv.numpy()
                out[f"sparsegpt/{L}/damp"] = gpt.damp.numpy()
                xd = d["x"].astype(np.float64)
                nseq = sum(d["batches"])
                facts.append(f"{L}: max|H - 2/nseq X^T X (float64)| / max|H| = "
                             f"{np.abs(H.numpy() - 2 / nseq * xd.T @ xd).max() / np.abs(H.numpy()).max():.2e}; "
                             f"H64 vs that: {np.abs(H64.numpy() - 2 / nseq * xd.T @ xd).max() / np.abs(H.numpy()).max():.2e}")
            assert torch.equal(H, H_first)
            Wp, mask = layer.weight.data.clone(), gpt.mask.clone()
            results[("sparsegpt", L, name)] = (Wp, H)
            assert not torch.any(Wp[mask] != 0)
            p = f"sparsegpt/{L}/{name}"
            out[f"{p}/w"] = Wp.numpy()
            out[f"{p}/mask"] = mask.numpy()
            out[f"{p}/losses"] = gpt.Losses.numpy()
            out[f"{p}/w64"] = layer64.weight.data.numpy()
            out[f"{p}/mask64"] = gpt64.mask.numpy()
            zeros_kept = int(((Wp == 0) & ~mask).sum())
            facts.append(
                f"{L} {name}: pruned {int(mask.sum())}/{mask.numel()}, mask64 == mask: "
                f"{bool(torch.equal(gpt64.mask, mask))}, max|w - w64| = "
                f"{(Wp.double() - layer64.weight.data).abs().max().item():.2e} (max|w64| "
                f"{layer64.weight.data.abs().max().item():.2f}), kept-but-zero {zeros_kept}, "
                f"min rel. selection gap {sparsegpt_gaps(gpt, cfg):.2e} (float64 run "
                f"{sparsegpt_gaps(gpt64, cfg):.2e}), error sum(Losses) {gpt.Losses.sum().item():.6g}")

        # ---- Wanda ----
        scaler_first = None
        for name, cfg in WANDA_CONFIGS.items():
            scaler_row, metric, mask, Wp = run_wanda(d, cfg)
            if scaler_first is None:
                scaler_first = scaler_row
                results[("wanda_scaler", L)] = scaler_row
                out[f"wanda/{L}/scaler_row"] = scaler_row.numpy()
                out[f"wanda/{L}/metric"] = metric.numpy()
                xd = d["x"].astype(np.float64)
                ref = (xd ** 2).sum(0) / sum(d["batches"])
                facts.append(f"{L}: max rel |scaler_row - sum_rows x^2 / nseq| = "
                             f"{np.max(np.abs(scaler_row.numpy() - ref) / np.maximum(ref, 1e-300)):.2e}")
                # no ties in any row or group of the metric
                mn = metric.numpy()
                assert all(len(np.unique(r)) == len(r) for r in mn)
            assert torch.equal(scaler_row, scaler_first)
            results[("wanda", L, name)] = Wp
            out[f"wanda/{L}/mask_{name}"] = mask.numpy()
            ratio, n, m = cfg
            mn = metric.numpy()
            if n == 0:
                k = int(mn.shape[1] * ratio)
                gap = min(min_rel_gap_sorted(r, k - 1) for r in mn)
            else:
                gap = nm_gap(nm_groups(mn, m), n)
            facts.append(f"{L} wanda {name}: pruned {int(mask.sum())}/{mask.numel()}, min rel. gap {gap:.2e}")

        # ---- magnitude ----
        for name, cfg in MAGNITUDE_CONFIGS.items():
            metric, mask, Wp = run_magnitude(d, cfg)
            results[("magnitude", L, name)] = Wp
            out[f"magnitude/{L}/mask_{name}"] = mask.numpy()
            ratio, n, m = cfg
            mn = metric.numpy()
            gap = (min_rel_gap_sorted(mn, int(mn.size * ratio)) if n == 0 else nm_gap(nm_groups(mn, m), n))
            facts.append(f"{L} magnitude {name}: pruned {int(mask.sum())}/{mask.numel()}, min rel. gap {gap:.2e}")
        for name in ("2of4",):
            facts.append(f"{L} {name}: wanda mask != magnitude mask at "
                         f"{int((out[f'wanda/{L}/mask_{name}'] != out[f'magnitude/{L}/mask_{name}']).sum())} entries; "
                         f"sparsegpt mask != wanda mask at "
                         f"{int((out[f'sparsegpt/{L}/{name}_b8/mask'] != out[f'wanda/{L}/mask_{name}']).sum())}")

    for f in facts:
        print(f)

    if args.check_against:
        check_against(args.check_against, data, results)

    for k, v in out.items():
        assert v.dtype in (np.float32, np.float64, np.int64, np.bool_), (k, v.dtype)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes, {len(out)} arrays); "
          f"torch {torch.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
