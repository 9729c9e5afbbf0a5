"""One-shot pruning of a trained or pretrained network, layer by layer on calibration inputs.

The network's prunable Dense kernels are visited in blocks, in network order. A block is the
layers that share a first path component: one transformer layer (`layer_3/...`), or a single
layer of an MLP. For each block, the calibration batch runs through the network as pruned so far.
Each layer's inputs are caught on the way (`flax.linen.intercept_methods`), so nothing about the
model is hard-coded. Every layer of the block is then pruned from its own Gram matrix. This is the
order of the references' drivers: IST-DASLab/sparsegpt opt.py `opt_sequential` and locuslab/wanda
lib/prune.py `prune_wanda`. Each prunes a decoder layer's linear layers from inputs through the
already-pruned earlier layers.

Methods (METHODS): `magnitude` (|W|), `wanda`, `sparsegpt` (which also updates the kept weights),
from calibration inputs alone; and, from gradients of the loss on labelled calibration batches,
`obs` (blocked OBS with its weight update: WoodFisher / oBERT one-shot, lth/surgeons/obs.py),
`obs_noupdate` (the same scores, no update) and `obd` (½·h_ii·w², the loss Hessian's diagonal:
lth.scores obd). Each takes `sparsity` or an N:M `pattern` (magnitude, wanda, sparsegpt).
`scope` (magnitude, obs, obs_noupdate, obd): layer (each layer at `sparsity`, as the references
of Wanda and SparseGPT prune) | global (one ranking over the prunable weights, oBERT's
global_sparsity). Returns (params, masks): new weights (only sparsegpt and obs change them) and
keep-masks, True = kept.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lth.errors import UserError, check_choice
from lth.pruning import masks as M
from lth.pruning.prune import prune
from lth.scores import obd as OBD
from lth.surgeons import layer as L
from lth.surgeons import obs as OBS

METHODS = ("magnitude", "wanda", "sparsegpt", "obs", "obs_noupdate", "obd")
LAYER_ONLY = ("wanda", "sparsegpt")          # prune each layer from its own Gram matrix
GRADIENT = ("obs", "obs_noupdate", "obd")   # need labels (a loss)
SCOPES = ("layer", "global")


def blocks(paths: list[str]) -> list[list[str]]:
    """Prunable kernel paths (in network order) grouped by their first path component."""
    out, seen = [], {}
    for p in paths:
        key = p.split("/")[0]
        if key not in seen:
            seen[key] = len(out)
            out.append([])
        out[seen[key]].append(p)
    return out


def layer_grams(apply_fn, variables, x, paths, nseq: int) -> dict:
    """{kernel path: H = 2/nseq · XᵀX} of the inputs each Dense layer in `paths` receives when `x`
    runs through `apply_fn(variables, x)` (rows: every position of every example)."""
    wanted = {p.rsplit("/", 1)[0]: p for p in paths}
    caught = {}

    def catch(next_fun, args, kwargs, context):
        mod = context.module
        if context.method_name == "__call__" and isinstance(mod, nn.Dense):
            where = "/".join(str(s) for s in mod.scope.path)
            if where in wanted:
                caught[wanted[where]] = args[0]
        return next_fun(*args, **kwargs)

    def run(variables, x):
        with nn.intercept_methods(catch):
            apply_fn(variables, x)
        return {p: L.gram(a.reshape(-1, a.shape[-1]), nseq) for p, a in caught.items()}

    grams = jax.jit(run)(variables, x)
    missing = [p for p in paths if p not in grams]
    if missing:
        raise UserError(f"one-shot pruning reaches only Dense layers; {', '.join(missing)} is not one "
                        f"(a convolution or an einsum); allowed: magnitude for those layers")
    return grams


def check(method: str, sparsity: float, pattern, kernels: dict, calibration: bool, blocksize: int,
          fisher_block: int = 50, scope: str = "layer") -> None:
    """UserError (one line) for a bad method, sparsity, scope, N:M pattern or Fisher block, before any work."""
    check_choice("one-shot method", method, METHODS)
    check_choice("one-shot scope", scope, SCOPES)
    if pattern is None and not (isinstance(sparsity, (int, float)) and 0.0 < float(sparsity) < 1.0):
        raise UserError(f"sparsity {sparsity!r} out of range; allowed: 0 < sparsity < 1 (the fraction pruned)")
    if method != "magnitude" and not calibration:
        raise UserError(f"method {method!r} needs calibration inputs; allowed without them: magnitude")
    if method in GRADIENT:
        if pattern is not None:
            raise UserError(f"method {method!r} with N:M pattern {pattern[0]}:{pattern[1]}: allowed: N:M with "
                            f"magnitude, wanda, sparsegpt; {method} prunes unstructured")
        if method.startswith("obs"):
            OBS.check_block(fisher_block, {p: int(np.size(k)) for p, k in kernels.items()})
        return
    for path, k in kernels.items():
        if np.ndim(k) != 2:
            raise UserError(f"{path} has shape {tuple(np.shape(k))}; allowed: Dense kernels (in, out) — one-shot "
                            f"surgeons do not take convolutions")
        if pattern is not None:
            L.check_nm(*pattern, np.shape(k)[0], f" for {path}")
    if method == "sparsegpt" and pattern is not None and blocksize % pattern[1]:
        raise UserError(f"sparsegpt blocksize {blocksize}: allowed: a multiple of M={pattern[1]}")


def _loss(apply_fn, variables):
    """(params, (x, y)) → mean cross-entropy of the network with `params` in `variables`."""
    rest = {k: v for k, v in variables.items() if k != "params"}

    def loss(params, batch):
        x, y = batch
        logits = apply_fn({"params": params, **rest}, x)
        return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=-1))
    return loss


def grad_batches(x, y, size: int) -> list:
    """The calibration set cut into consecutive batches of `size` (the last one dropped if short):
    one gradient each for the empirical Fisher."""
    n = (int(np.shape(x)[0]) // size) * size
    return [(x[i:i + size], y[i:i + size]) for i in range(0, n, size)]


def _prune_gradient(method, apply_fn, variables, masks, tree, sparsity, x, y, scope, fisher_block, damp,
                    grad_batch, rng):
    params = variables["params"]
    loss = _loss(apply_fn, variables)
    if method == "obd":
        rest = {k: v for k, v in variables.items() if k != "params"}
        score = OBD.obd(lambda v, xx: apply_fn(v, xx), {"params": params, **rest}, masks, (x, y), rng)
        score = jax.tree.map(lambda s, m: jnp.where(m, s, -jnp.inf), score, masks)
        new = prune(score, masks, tree, density=1.0 - sparsity, layerwise=scope == "layer")
        return M.apply(params, new), new
    batches = grad_batches(x, y, grad_batch)
    if not batches:
        raise UserError(f"{method}: {np.shape(x)[0]} calibration examples make no gradient batch of {grad_batch}; "
                        f"allowed: at least {grad_batch} examples")
    return OBS.prune_obs(jax.jit(jax.grad(loss)), params, masks, batches, sparsity=sparsity, prunable=tree,
                         block=fisher_block, damp=damp, scope="layerwise" if scope == "layer" else "global",
                         update_weights=method == "obs")


def prune_oneshot(apply_fn, variables, method: str, *, sparsity: float = 0.5, pattern: str = "", x=None,
                  prunable=".*kernel", masks=None, blocksize: int = 128, percdamp: float = 0.01, y=None,
                  scope: str = "layer", fisher_block: int = 50, damp: float = 1e-7, grad_batch: int = 8,
                  rng=None):
    """(params, masks) after one-shot `method` on `variables` (one network, no replicate axis).
    `x`: calibration inputs (a batch; a sequence counts as one example), `y` their labels (obs,
    obs_noupdate, obd); `pattern`: '' (unstructured, `sparsity` of each layer or, scope='global', of
    all) or 'N:M' (N kept of every M consecutive inputs). `masks`: weights already pruned stay
    pruned (they are 0 going in). OBS: `fisher_block` B, `damp` λ, one gradient per `grad_batch`
    calibration examples."""
    params = variables["params"]
    tree = M.prunable_tree(params, prunable) if isinstance(prunable, str) else prunable
    flat = dict(zip(M.leaf_paths(params), jax.tree.leaves(params)))
    paths = [p for p, on in zip(M.leaf_paths(tree), jax.tree.leaves(tree)) if on]
    if not paths:
        raise UserError(f"prunable {prunable!r} matches no parameter; params: {', '.join(flat)}")
    nm = L.parse_pattern(pattern)
    calibrated = x is not None and (method not in GRADIENT or y is not None)
    check(method, sparsity, nm, {p: flat[p] for p in paths}, calibrated, blocksize, fisher_block, scope)
    masks = M.ones_like(params) if masks is None else masks
    if method in GRADIENT:
        return _prune_gradient(method, apply_fn, variables, masks, tree, sparsity, jnp.asarray(x), jnp.asarray(y),
                               scope, fisher_block, damp, grad_batch,
                               jax.random.key(0) if rng is None else rng)
    if method == "magnitude" and scope == "global" and nm is None:
        score = jax.tree.map(lambda p, m: jnp.where(m, jnp.abs(p), -jnp.inf), params, masks)
        new = prune(score, masks, tree, density=1.0 - sparsity)
        return M.apply(params, new), new
    new_params, new_masks = dict(flat), dict(zip(M.leaf_paths(masks), jax.tree.leaves(masks)))
    treedef = jax.tree.structure(params)
    rest = {k: v for k, v in variables.items() if k != "params"}

    def current():
        p = jax.tree.unflatten(treedef, [new_params[k] for k in flat])
        m = jax.tree.unflatten(treedef, [new_masks[k] for k in flat])
        return {"params": M.apply(p, m), **rest}

    nseq = None if x is None else int(np.shape(x)[0])
    for group in blocks(paths):
        grams = layer_grams(apply_fn, current(), x, group, nseq) if method != "magnitude" else {}
        for p in group:
            k = jnp.where(new_masks[p], new_params[p], 0.0)
            if method == "magnitude":
                keep = L.magnitude_keep(k, sparsity, nm)
            elif method == "wanda":
                keep = L.wanda_keep(L.wanda_metric(k, grams[p]), sparsity, nm)
            else:
                k, keep, _ = L.sparsegpt(k, grams[p], sparsity, nm, blocksize, percdamp)
            new_params[p], new_masks[p] = k, keep & new_masks[p]
    return (jax.tree.unflatten(treedef, [new_params[k] for k in flat]),
            jax.tree.unflatten(treedef, [new_masks[k] for k in flat]))
