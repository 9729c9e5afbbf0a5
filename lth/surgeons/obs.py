"""OBS with weight updates in its blocked, scalable form: WoodFisher (Singh & Alistarh 2020) and
oBERT (Kurtic et al. 2022), as neuralmagic/sparseml implements them
(src/sparseml/pytorch/sparsification/pruning/modifier_pruning_obs.py: EmpiricalBlockFisherInverse,
OBSPruningParamsScorer).

The loss Hessian is approximated by the empirical Fisher F = λI + 1/m Σ g gᵀ of m gradients g (one
per mini-batch; a pruned weight's gradient counts as 0), block-diagonal in blocks of B consecutive
weights of each layer (flattened in PyTorch's order, (out, in[, kh, kw]), row-major; the last block
zero-padded). Its inverse is built one gradient at a time by the Sherman-Morrison identity,
u = F⁻¹g / √(m + gᵀF⁻¹g), F⁻¹ ← F⁻¹ − uuᵀ, from F⁻¹ = I/λ, never forming F (add_grad).

  * score (OBS saliency, the loss increase of removing w_q alone): ρ_q = w_q² / (2 [F⁻¹]_qq + ε),
    ε = float32's eps; already-pruned weights are never eligible;
  * selection: k = round(n · sparsity) (half to even) of the n weights of a group (global: all
    prunable weights; layerwise: each layer) are pruned, the already-pruned ones included; the
    lowest scores go, ties keeping the lower flat index (UnstructuredPruningMaskCreator);
  * update: the weights still kept move by δw = −Σ_q F⁻¹[:, q] w_q / ([F⁻¹]_qq + ε) over the
    weights q pruned in this step (within each block: sparseml sums the single-weight OBS updates
    rather than solving jointly over the pruned set), then the pruned ones are set to 0.
Not reproduced: sparseml's branch that, when the threshold equals the smallest score, picks the
pruned weights at random; its `num_recomputations` (several Fisher estimates within one step).

OBD (LeCun et al. 1990) is the diagonal special case, B = 1 (no update of the other weights).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lth.errors import UserError
from lth.pruning import masks as M
from lth.pruning.prune import keep_top_k


# ----- layout: lth's (Flax) kernels ↔ the reference's flattening order ----------------------------------
def to_torch_flat(x):
    """A Flax leaf flattened in PyTorch's order: Dense (in, out) → (out, in); Conv (kh, kw, in, out)
    → (out, in, kh, kw); anything else as is."""
    x = jnp.asarray(x)
    if x.ndim == 2:
        x = x.T
    elif x.ndim == 4:
        x = jnp.transpose(x, (3, 2, 0, 1))
    return x.reshape(-1)


def from_torch_flat(v, shape):
    """Inverse of `to_torch_flat` for a leaf of Flax `shape`."""
    if len(shape) == 2:
        return v.reshape(shape[1], shape[0]).T
    if len(shape) == 4:
        kh, kw, cin, cout = shape
        return jnp.transpose(v.reshape(cout, cin, kh, kw), (2, 3, 1, 0))
    return v.reshape(shape)


EPS = float(np.finfo(np.float32).eps)   # sparseml's torch.finfo(torch.float32).eps


def check_block(block: int, sizes: dict) -> None:
    """UserError unless 1 <= block <= every pruned layer's size (a block never spans two layers)."""
    if not (isinstance(block, (int, np.integer)) and block >= 1):
        raise UserError(f"OBS Fisher block {block!r}: allowed: an integer >= 1")
    for path, n in sizes.items():
        if block > n:
            raise UserError(f"OBS Fisher block {block} is larger than {path} ({n} weights); allowed: a block of at "
                            f"most the smallest pruned layer's size")


# ----- one flat weight vector --------------------------------------------------------------------------
def _blocks(v, nb: int, block: int):
    """A flat [n] vector zero-padded to nb · block and cut into [nb, block]."""
    return jnp.pad(v, (0, nb * block - v.shape[0])).reshape(nb, block)


def fisher_inverse_init(n: int, block: int, damp: float, dtype=jnp.float32):
    """F⁻¹ = I/λ in ceil(n / block) blocks [nb, block, block] (EmpiricalBlockFisherInverse.__init__)."""
    return jnp.broadcast_to(jnp.eye(block, dtype=dtype) / damp, (-(-n // block), block, block))


def fisher_inverse_add(finv, g, num_grads: int):
    """One gradient g [n] into the blocked inverse (EmpiricalBlockFisherInverse.add_grad)."""
    g = _blocks(g.astype(finv.dtype), *finv.shape[:2])
    fg = jnp.einsum("bij,bj->bi", finv, g)
    fg = fg / jnp.sqrt(num_grads + jnp.sum(g * fg, axis=-1))[:, None]
    return finv - fg[:, :, None] * fg[:, None, :]


def fisher_inverse(grads, block: int, damp: float):
    """The blocked inverse of λI + 1/m Σ g gᵀ from grads [m, n] (torch order), one gradient at a time."""
    grads = jnp.asarray(grads)
    m, n = grads.shape
    return jax.lax.scan(lambda f, g: (fisher_inverse_add(f, g, m), None),
                        fisher_inverse_init(n, block, damp, grads.dtype), grads)[0]


def diag(finv, n: int):
    """diag(F⁻¹) of the n real weights, flat (the padding dropped)."""
    return jnp.diagonal(finv, axis1=-2, axis2=-1).reshape(-1)[:n]


def scores(w, finv, alive=None):
    """OBS saliency w² / (2 diag F⁻¹ + ε) of the flat weights w [n]; −inf where not `alive`."""
    s = w ** 2 / (2.0 * diag(finv, w.shape[0]) + EPS)
    return s if alive is None else jnp.where(alive, s, -jnp.inf)


def update(w, finv, pruned):
    """w after pruning `pruned` [n] (bool) with the OBS update of the rest: w − F⁻¹ (w ⊙ pruned / (diag F⁻¹ + ε)),
    blockwise; the pruned entries are then exactly 0."""
    n = w.shape[0]
    q = _blocks(jnp.where(pruned, w / (diag(finv, n) + EPS), 0.0), *finv.shape[:2])
    return jnp.where(pruned, 0.0, w - jnp.einsum("bij,bj->bi", finv, q).reshape(-1)[:n])


def select(score_list, alive_list, sparsity: float):
    """Keep-masks (flat, one per entry) pruning round(n · sparsity) of the n weights of the group, the
    lowest scores first, ties keeping the lower flat index; dead weights stay dead."""
    sizes = [int(s.shape[0]) for s in score_list]
    n = sum(sizes)
    keep = keep_top_k(jnp.concatenate(score_list), jnp.concatenate(alive_list), n - round(n * sparsity))
    return list(jnp.split(keep, np.cumsum(sizes)[:-1]))


# ----- a network ---------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("num_grads",))
def _add_all(finvs, grads, masks, num_grads):
    return [fisher_inverse_add(f, to_torch_flat(jnp.where(m, g, 0.0)), num_grads)
            for f, g, m in zip(finvs, grads, masks)]


def fisher_inverses(grad_fn, params, masks, batches, paths, block: int, damp: float) -> dict:
    """{path: blocked F⁻¹} of the prunable leaves `paths` from one gradient per batch
    (`grad_fn(params, batch)` → grads tree, taken at the masked params; a pruned weight's gradient
    counts as 0)."""
    flat_p = dict(zip(M.leaf_paths(params), jax.tree.leaves(params)))
    flat_m = dict(zip(M.leaf_paths(masks), jax.tree.leaves(masks)))
    finvs = [fisher_inverse_init(int(np.size(flat_p[p])), block, damp) for p in paths]
    batches = list(batches)
    for batch in batches:
        g = dict(zip(M.leaf_paths(params), jax.tree.leaves(grad_fn(M.apply(params, masks), batch))))
        finvs = _add_all(finvs, [g[p] for p in paths], [flat_m[p] for p in paths], len(batches))
    return dict(zip(paths, finvs))


def prune_obs(grad_fn, params, masks, batches, *, sparsity: float, prunable, block: int = 50, damp: float = 1e-7,
              scope: str = "global", update_weights: bool = True):
    """(params, masks) after one OBS step to `sparsity` (the fraction of the prunable weights pruned;
    one replicate). Scores from the blocked empirical Fisher of one gradient per batch of `batches`;
    `scope`: global (one ranking, oBERT's global_sparsity) | layerwise. `update_weights=False`: the
    scores alone (prune without moving the kept weights)."""
    if scope not in ("global", "layerwise"):
        raise UserError(f"OBS scope {scope!r}: allowed: global, layerwise")
    paths = [p for p, on in zip(M.leaf_paths(params), jax.tree.leaves(prunable)) if on]
    flat_p = dict(zip(M.leaf_paths(params), jax.tree.leaves(params)))
    check_block(block, {p: int(np.size(flat_p[p])) for p in paths})
    finvs = fisher_inverses(grad_fn, params, masks, batches, paths, block, damp)
    flat_m = dict(zip(M.leaf_paths(masks), jax.tree.leaves(masks)))
    alive = {p: to_torch_flat(flat_m[p]) for p in paths}
    w = {p: jnp.where(alive[p], to_torch_flat(flat_p[p]), 0.0) for p in paths}
    s = {p: scores(w[p], finvs[p], alive[p]) for p in paths}
    groups = [paths] if scope == "global" else [[p] for p in paths]
    keep = {}
    for g in groups:
        keep.update(zip(g, select([s[p] for p in g], [alive[p] for p in g], sparsity)))
    out_p, out_m = dict(flat_p), dict(flat_m)
    for p in paths:
        gone = alive[p] & ~keep[p]
        new_w = update(w[p], finvs[p], gone) if update_weights else w[p]
        out_p[p] = from_torch_flat(jnp.where(keep[p], new_w, 0.0), np.shape(flat_p[p])).astype(flat_p[p].dtype)
        out_m[p] = from_torch_flat(keep[p], np.shape(flat_p[p]))
    treedef = jax.tree.structure(params)
    return (jax.tree.unflatten(treedef, [out_p[p] for p in flat_p]),
            jax.tree.unflatten(jax.tree.structure(masks), [out_m[p] for p in flat_m]))
