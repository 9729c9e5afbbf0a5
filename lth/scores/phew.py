"""PHEW (Patil & Dovrolis, ICML 2021, "PHEW: Constructing sparse networks that learn fast and
generalize well without training data"): a data-free mask of random walks biased by the init's
weight magnitudes, as ShreyasMalakarjunPatil/PHEW PHEW/phew.py (`phew_masks`, the same as the
Prune/phew_utils.py its experiments use) builds it.

The prunable kernels in network order are the layers of a chain; units are neurons (dense) and
channels (conv). An edge j → i has strength ‖W[i, j]‖₁ (the kernel's L1 norm; |w| for a dense
weight). Walks alternate, forward first: a forward walk starts at input unit 0, 1, … (round robin)
and at every layer moves to output unit i with probability ∝ the strength of its edges out of the
current unit; a backward walk starts at output class 0, 1, … and moves to input j ∝ the strengths
into the current unit. Traversing a conv edge keeps ONE weight of its kernel, drawn ∝ |w| within
it; a dense edge keeps its weight. From a conv to a dense layer a forward walk picks one of the
channel's flattened features uniformly (the reference's torch (C, H, W) order: lth's (H, W, C)
flatten is mapped to it), a backward walk maps the feature back to its channel. Walks go on until
int(density · n) distinct weights are kept (n: all prunable weights), checked after each walk.
The probabilities are the init's, fixed throughout; the weights are not rescaled.

lth returns the walk at which each weight was first kept, negated, as its score, so the top-k at the
density keeps the walks' weights in order: the reference's mask, less the part of the last walk that
passes the target (at most one weight per layer). The reference draws from numpy's and Python's global
generators (unseeded); lth from a RandomState and a random.Random seeded from the round's key, with
the reference's exact sequence of draws (tests/test_phew.py: the same seeds give the same masks).
Residual networks (1×1 shortcut kernels) are refused: the reference's branching rule there is not
ported.
"""
from __future__ import annotations

import random
import re

import jax
import numpy as np

from lth.errors import UserError
from lth.options import options

OPTIONS = options(
    phew_kernel_conserved=(False, "PHEW: a traversed conv edge keeps its whole kernel (kernel_conserved; the "
                                  "reference's default: one weight)"),
)
READS = {"kernel_conserved": "phew_kernel_conserved"}


def _pvals(par) -> np.ndarray:
    """The reference's `[float(float(o) / float(sum(par))) for o in par]` (uniform when the sum is 0)."""
    s = sum(par)
    if s != 0:
        return np.asarray([float(float(o) / float(s)) for o in par])
    return np.full(len(par), 1.0 / len(par))


def _cdf(p) -> np.ndarray:
    """numpy's RandomState.choice(n, 1, p=p) is cdf.searchsorted(random_sample(1), 'right') with
    this cdf (numpy/random/mtrand.pyx)."""
    cdf = np.asarray(p, np.float64).cumsum()
    return cdf / cdf[-1]


class Walker:
    """The walks over kernels in the reference's layout: conv [out, in, kh, kw], dense [out, in]
    (float32, the init's values)."""

    def __init__(self, kernels: list[np.ndarray]):
        self.k = [np.asarray(w, np.float32) for w in kernels]
        self.fwd, self.bwd, self.kern = [], [], []
        for w in self.k:
            p2 = np.abs(w)
            norm = np.zeros((p2.shape[0], p2.shape[1]))          # get_norm: float32 sums into float64
            for i in range(p2.shape[0]):
                for j in range(p2.shape[1]):
                    norm[i][j] = np.sum(np.absolute(p2[i][j]))
            self.bwd.append([_cdf(_pvals(norm[i])) for i in range(norm.shape[0])])
            self.fwd.append([_cdf(_pvals(norm.T[j])) for j in range(norm.shape[1])])
            if w.ndim == 4:   # kernel_probability: each [kh, kw] kernel over its own L1 sum, in float32
                kp = p2 / np.sum(np.absolute(p2), axis=(2, 3), keepdims=True, dtype=np.float32)
                self.kern.append(kp)
            else:
                self.kern.append(None)

    def _pick(self, cdf, rng) -> int:
        return int(cdf.searchsorted(rng.random_sample(1), side="right")[0])

    def _in_kernel(self, k, i, j, rng):
        kp = self.kern[k][i, j]
        inds = self._pick(_cdf(kp.reshape(-1)), rng)
        return inds // kp.shape[0], inds % kp.shape[0]

    def run(self, target: int, np_rng, py_rng, conserved: bool = False):
        """(masks, first): bool masks in the reference's layout after walks until `target` distinct
        weights are kept, and the walk at which each was first kept (-1: never)."""
        masks = [np.zeros(w.shape, bool) for w in self.k]
        first = [np.full(w.shape, -1, np.int64) for w in self.k]
        num = len(self.k)
        count, walk = 0, 0
        in_robin = out_robin = -1
        conv_length = 0

        def keep(k, idx):
            nonlocal count
            if not masks[k][idx]:
                masks[k][idx] = True
                first[k][idx] = walk
                count += 1

        while count < target:
            if walk % 2 == 0:   # forward, from input unit 0, 1, … (round robin)
                n_in = self.k[0].shape[1]
                prev = in_robin + 1 if in_robin < n_in - 1 else 0
                in_robin = prev
                from_conv = False
                for k in range(num):
                    w = self.k[k]
                    if w.ndim == 4:
                        i = self._pick(self.fwd[k][prev], np_rng)
                        a, b = self._in_kernel(k, i, prev, np_rng)
                        if conserved:
                            for aa in range(w.shape[2]):
                                for bb in range(w.shape[3]):
                                    keep(k, (i, prev, aa, bb))
                        else:
                            keep(k, (i, prev, a, b))
                        conv_length = w.shape[0]
                        prev, from_conv = i, True
                    else:
                        if from_conv:   # conv_to_linear_unit, forward: a uniform spatial position
                            ratio = int(w.shape[1] / conv_length)
                            prev = py_rng.choice(list(range(ratio))) + ratio * prev
                            from_conv = False
                        i = self._pick(self.fwd[k][prev], np_rng)
                        keep(k, (i, prev))
                        prev = i
            else:               # backward, from output class 0, 1, …
                n_out = self.k[-1].shape[0]
                prev = out_robin + 1 if out_robin < n_out - 1 else 0
                out_robin = prev
                from_linear, linear_length = False, 0
                for k in reversed(range(num)):
                    w = self.k[k]
                    if w.ndim == 2:
                        j = self._pick(self.bwd[k][prev], np_rng)
                        keep(k, (prev, j))
                        linear_length = w.shape[1]
                        prev, from_linear = j, True
                    else:
                        if from_linear:   # conv_to_linear_unit, backward: the feature's channel
                            prev = int(prev / int(linear_length / conv_length))
                            from_linear = False
                        j = self._pick(self.bwd[k][prev], np_rng)
                        a, b = self._in_kernel(k, prev, j, np_rng)
                        if conserved:
                            for aa in range(w.shape[2]):
                                for bb in range(w.shape[3]):
                                    keep(k, (prev, j, aa, bb))
                        else:
                            keep(k, (prev, j, a, b))
                        prev = j
            walk += 1
        return masks, first


def to_reference(kernels: list[np.ndarray]) -> tuple[list[np.ndarray], list]:
    """lth's kernels in network order → the reference's layouts, with each dense layer after a conv
    re-ordered from lth's (H, W, C) flatten to torch's (C, H, W); and the inverse maps."""
    out, undo, channels = [], [], None
    for w in kernels:
        w = np.asarray(w, np.float32)
        if w.ndim == 4:
            if w.shape[0] == 1 and w.shape[1] == 1:
                raise UserError("phew on a residual network (1×1 shortcut kernels): the reference's branching "
                                "rule is not ported; allowed: chain networks (MLP, LeNet, VGG)")
            out.append(w.transpose(3, 2, 0, 1))
            undo.append(lambda m: m.transpose(2, 3, 1, 0))
            channels = w.shape[3]
        elif w.ndim == 2:
            perm = None
            if channels is not None and w.shape[0] != channels and w.shape[0] % channels == 0:
                hw = w.shape[0] // channels   # torch row c·hw + r  ←  lth row r·C + c
                perm = np.arange(w.shape[0]).reshape(hw, channels).T.reshape(-1)
            wt = w[perm] if perm is not None else w
            out.append(wt.T)
            undo.append((lambda m, perm=perm: _unpermute(m.T, perm)))
            channels = None
        else:
            raise UserError(f"phew needs dense or conv kernels; got a prunable leaf of shape {w.shape}")
    return out, undo


def _natural(path: str):
    """'conv_10/kernel' after 'conv_2/kernel': the order of lth's layer names without a model to trace."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def _unpermute(m, perm):
    if perm is None:
        return m
    out = np.empty_like(m)
    out[perm] = m
    return out


def phew(apply_fn, variables, masks, batch, rng, *, density=1.0, order=None, prunable=None, kernel_conserved=False):
    """Scores: −(the walk at which each weight was first kept), -inf for weights never kept; the
    top-k at `density` is PHEW's mask (module docstring). Host code (no jit)."""
    from flax import traverse_util
    flat = traverse_util.flatten_dict(jax.tree.map(np.asarray, variables["params"]), sep="/")
    on = traverse_util.flatten_dict(prunable, sep="/")
    paths = list(order) if order else sorted((q for q in flat if on[q]), key=_natural)   # network order
    ref, undo = to_reference([flat[p] for p in paths])
    total = sum(w.size for w in ref)
    seed = int(jax.random.randint(rng, (), 0, 2 ** 31 - 1))
    _, first = Walker(ref).run(int(density * total), np.random.RandomState(seed), random.Random(seed),
                               bool(kernel_conserved))
    scores = {p: np.zeros(x.shape, np.float32) for p, x in flat.items()}
    for p, f, u in zip(paths, first, undo):
        f = u(f)
        scores[p] = np.where(f >= 0, -f.astype(np.float32), -np.inf).astype(np.float32)
    out = traverse_util.unflatten_dict(scores, sep="/")
    return jax.tree.map(lambda s, m: np.where(np.asarray(m), s, -np.inf), out, masks)


def prepare(apply_fn, variables, prunable, input_shape, options) -> dict:
    return {**options, "prunable": prunable}
