"""One layer at a time: the post-training surgeons' math on one linear layer and its calibration inputs.

Kernels are in lth's (Flax) layout, (in, out); the references work on PyTorch's W = kernel.T, (out, in).
Calibration enters through one statistic, the Gram H = 2/nseq · XᵀX of the layer's input rows X
(`gram`: nseq counts examples — a sequence of tokens is one — as the references' add_batch does):
Wanda reads its diagonal, SparseGPT all of it.

  * `nm_keep(scores, n, m)`: N:M — in each group of m consecutive inputs of an output, keep the n
    highest scores (NVIDIA's 2:4 is n=2, m=4). Groups run along the input axis (-2). It lives in
    lth/pruning/nm.py with `parse_pattern` and `check_nm` (IMP and pruning at init use them too).
  * `wanda`: |W| · ‖X_j‖ per weight, pruned per output (locuslab/wanda lib/prune.py prune_wanda,
    lib/layerwrapper.py WrappedGPT).
  * `sparsegpt`: OBS-style reconstruction column by column with lazy blocks (IST-DASLab/sparsegpt
    sparsegpt.py SparseGPT.fasterprune).

Masks are True = kept, as everywhere in lth (the references mark the pruned weights).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lth.errors import UserError
from lth.pruning.nm import check_nm, nm_keep, parse_pattern  # noqa: F401  (lth.surgeons.layer.NAME)


def gram(x, nseq: int):
    """H = 2/nseq · XᵀX of the input rows x (rows, in), in float32 (SparseGPT.add_batch's total)."""
    x = jnp.asarray(x, jnp.float32)
    return 2.0 / nseq * (x.T @ x)


# ----- Wanda ----------------------------------------------------------------------------------------------
def wanda_metric(kernel, h):
    """|W| · ‖X_j‖ with ‖X_j‖² = Σ x_j² / nseq = diag(H) / 2 (WrappedGPT.scaler_row), kernel layout."""
    return jnp.abs(kernel) * jnp.sqrt(jnp.diag(h) / 2.0)[:, None]


def wanda_keep(metric, sparsity: float = 0.5, nm=None):
    """Wanda's selection (prune_wanda, use_variant=False): per output, prune the int(in · sparsity)
    lowest (a stable sort: ties prune the lower input first), or N:M groups along the input."""
    if nm is not None:
        return nm_keep(metric, *nm)
    fan_in = metric.shape[0]
    k = int(fan_in * sparsity)
    order = jnp.argsort(metric, axis=0, stable=True)            # per output column, ascending
    pruned = jnp.zeros(metric.shape, bool).at[order[:k], jnp.arange(metric.shape[1])[None, :]].set(True)
    return ~pruned


def magnitude_keep(kernel, sparsity: float = 0.5, nm=None):
    """The references' layerwise magnitude baseline: |W| ≤ the int(numel · sparsity)-th smallest is
    pruned (locuslab/wanda prune_magnitude; so k + 1 weights unless tied), or N:M groups of |W|."""
    score = jnp.abs(kernel)
    if nm is not None:
        return nm_keep(score, *nm)
    thresh = jnp.sort(score.ravel())[int(score.size * sparsity)]
    return score > thresh


# ----- SparseGPT ---------------------------------------------------------------------------------------
def hinv_upper(h, percdamp: float = 0.01):
    """(U, damp, dead): U the upper Cholesky factor of (H' + damp·I)⁻¹, H' = H with a dead input's
    diagonal set to 1 and damp = percdamp · mean(diag H') (fasterprune's preamble)."""
    h = jnp.asarray(h, jnp.float32)
    d = jnp.diag(h)
    dead = d == 0
    h = h.at[jnp.arange(h.shape[0]), jnp.arange(h.shape[0])].set(jnp.where(dead, 1.0, d))
    damp = percdamp * jnp.mean(jnp.diag(h))
    h = h + damp * jnp.eye(h.shape[0], dtype=h.dtype)
    low = jnp.linalg.cholesky(h)
    inv = jax.scipy.linalg.cho_solve((low, True), jnp.eye(h.shape[0], dtype=h.dtype))
    return jnp.linalg.cholesky(inv).T, damp, dead


def _block(w, pruned, losses, hinv, i1, size, sparsity, nm):
    """One lazy block of `size` columns starting at i1 (traced): its columns pruned one at a time
    with the OBS update inside the block, then the block's error pushed onto the later columns."""
    rows, cols = w.shape
    w1 = jax.lax.dynamic_slice_in_dim(w, i1, size, axis=1)
    h1 = jax.lax.dynamic_slice(hinv, (i1, i1), (size, size))
    d1 = jnp.diag(h1)
    if nm is None:   # one mask for the whole block: score <= the int(numel * sparsity)-th smallest
        tmp = w1 ** 2 / d1[None, :] ** 2
        mask1 = tmp <= jnp.sort(tmp.ravel())[int(tmp.size * sparsity)]
    else:
        mask1 = jnp.zeros(w1.shape, bool)

    def column(i, carry):
        w1, q1, err1, loss1, mask1 = carry
        if nm is not None:   # a group's mask is chosen at its first column, on the updated weights
            n, m = nm

            def choose(mask1):
                tmp = (jax.lax.dynamic_slice_in_dim(w1, i, m, axis=1) ** 2
                       / jax.lax.dynamic_slice_in_dim(d1, i, m)[None, :] ** 2)
                return jax.lax.dynamic_update_slice_in_dim(mask1, ~nm_keep(tmp.T, n, m).T, i, axis=1)
            mask1 = jax.lax.cond(i % m == 0, choose, lambda x: x, mask1)
        col = jax.lax.dynamic_index_in_dim(w1, i, axis=1, keepdims=False)
        d = h1[i, i]
        q = jnp.where(jax.lax.dynamic_index_in_dim(mask1, i, axis=1, keepdims=False), 0.0, col)
        q1 = q1.at[:, i].set(q)
        loss1 = loss1.at[:, i].set((col - q) ** 2 / d ** 2)
        err = (col - q) / d
        w1 = w1 - err[:, None] * h1[i][None, :]   # U is upper triangular: columns < i are unchanged
        err1 = err1.at[:, i].set(err)
        return w1, q1, err1, loss1, mask1

    zeros = jnp.zeros_like(w1)
    _, q1, err1, loss1, mask1 = jax.lax.fori_loop(0, size, column, (w1, zeros, zeros, zeros, mask1))
    later = jnp.arange(cols) >= i1 + size
    w = jnp.where(later[None, :], w - err1 @ jax.lax.dynamic_slice_in_dim(hinv, i1, size, axis=0), w)
    w = jax.lax.dynamic_update_slice_in_dim(w, q1, i1, axis=1)
    pruned = jax.lax.dynamic_update_slice_in_dim(pruned, mask1, i1, axis=1)
    return w, pruned, losses + jnp.sum(loss1, axis=1) / 2


@functools.partial(jax.jit, static_argnames=("sparsity", "nm", "blocksize"))
def _fasterprune(w, hinv, sparsity, nm, blocksize):
    """fasterprune's loop on W (out, in) with Hinv = U; returns (W, pruned mask, losses). The full
    blocks run in a loop (one compiled block), a shorter last block after it."""
    cols = w.shape[1]
    full, rest = divmod(cols, blocksize)
    carry = (w, jnp.zeros(w.shape, bool), jnp.zeros(w.shape[0], w.dtype))
    if full:
        carry = jax.lax.fori_loop(0, full, lambda b, c: _block(*c, hinv, b * blocksize, blocksize, sparsity, nm),
                                  carry)
    if rest:
        carry = _block(*carry, hinv, full * blocksize, rest, sparsity, nm)
    return carry


def sparsegpt(kernel, h, sparsity: float = 0.5, nm=None, blocksize: int = 128, percdamp: float = 0.01):
    """SparseGPT on one layer (SparseGPT.fasterprune): (new kernel, keep-mask, per-output losses).
    The kernel is pruned and its remaining weights updated to reconstruct the layer's outputs on the
    calibration inputs behind `h`. Unstructured: each block of `blocksize` columns prunes its
    int(numel · sparsity) + 1 lowest w²/[H⁻¹]²_jj together; N:M needs blocksize % M == 0."""
    w = jnp.asarray(kernel, jnp.float32).T
    if nm is not None:
        check_nm(*nm, w.shape[1])
        if blocksize % nm[1]:
            raise UserError(f"sparsegpt blocksize {blocksize}: allowed: a multiple of M={nm[1]}")
    u, _, dead = hinv_upper(h, percdamp)
    w = jnp.where(dead[None, :], 0.0, w)
    w, pruned, losses = _fasterprune(w, u, float(sparsity), None if nm is None else tuple(nm), int(blocksize))
    return w.T.astype(np.asarray(kernel).dtype), ~pruned.T, losses
