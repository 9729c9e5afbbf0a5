"""NTK-SAP (Wang et al., ICLR 2023, "NTK-SAP: Improving neural network pruning by aligning training
dynamics"): data-free pruning at init by the saliency of a finite-difference estimate of the NTK's
trace, as YiteWang/NTK-SAP Pruners/pruners.py `class NTKSAP` computes it.

Each round sums, over `ntksap_r` passes of the reference's prune set (10 × classes inputs in
batches of `pai.batch_size`; CIFAR-10: one batch of 100), one sample per batch of

    L(m) = Σ_batch ‖f(x; m ⊙ θ) − f(x; m ⊙ (θ + ε z))‖²      (squared L2 over the logits)

and scores |Σ_samples ∂L/∂m| (the absolute value after the sum; pruned weights stay pruned), where
for every sample, as the reference:
- θ is a fresh init: every prunable kernel redrawn Kaiming-normal (fan_in, gain √2: the models'
  `_initialize_weights`), the other parameters the model's own init (the reference leaves biases,
  and sets BatchNorm to γ = 1, β = 0: lth's default bn_init);
- x is N(0, 1) noise of the data's shape (the data itself is never read);
- z ~ N(0, I) on the prunable kernels only, ε = `ntksap_epsilon` (0.01, its standard deviation);
- BatchNorm normalizes both passes with the unperturbed masked network's batch statistics on x
  (unbiased variance), held constant (the reference's momentum-1 calibration pass in train mode,
  then eval mode; its --prune-train-mode True, as scripts/run.sh and the README ask).
The gradient reaches m through both terms. Rounds: 20 (scripts/run.sh --prune-epochs 20) on
lth's exponential schedule, the reference's default; `ntksap_r` 1 (main.py; run.sh uses 5 on
CIFAR-10). The draws are from the round's key (the reference draws from torch's global RNG).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from lth.errors import UserError
from lth.options import options
from lth.scores.common import keep_masked_out

OPTIONS = options(
    ntksap_epsilon=(0.01, "NTK-SAP: standard deviation of the Gaussian weight perturbation (--ntksap_epsilon)"),
    ntksap_r=(1, "NTK-SAP: passes over its prune set of 10 × classes noise inputs per round (--ntksap_R; "
                 "the reference's CIFAR-10 script: 5)"),
)

READS = {"epsilon": "ntksap_epsilon", "r": "ntksap_r", "batch_size": "batch_size"}   # fn keyword → pai field


def fan_in(kernel) -> int:
    """torch's fan_in of a Flax kernel [..., in, out]: every axis but the last."""
    return int(math.prod(kernel.shape[:-1]))


def redraw(params, prunable, key):
    """`params` with every prunable kernel drawn afresh, Kaiming-normal (fan_in, gain √2)."""
    leaves, treedef = jax.tree.flatten(params)
    on = jax.tree.leaves(prunable)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [
        jax.random.normal(k, p.shape, p.dtype) * jnp.sqrt(2.0 / fan_in(p)).astype(p.dtype) if o and p.ndim >= 2
        else p for p, o, k in zip(leaves, on, keys)])


def perturb(params, prunable, key, epsilon):
    """θ + ε z on the prunable kernels (z ~ N(0, I)), the other parameters as they are."""
    leaves, treedef = jax.tree.flatten(params)
    on = jax.tree.leaves(prunable)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [p + epsilon * jax.random.normal(k, p.shape, p.dtype) if o and p.ndim >= 2
                                        else p for p, o, k in zip(leaves, on, keys)])


def calibrated(stats_fn, variables, x):
    """The batch statistics (mean, unbiased var) of the network `variables` on `x`, as constants.
    `stats_fn(variables, x)` is one train-mode pass returning the updated `batch_stats`; whatever the
    layers' momentum, running stats r = (1 − μ) r₀ + μ b give b from the two passes at r₀ = 0 and 1."""
    zero = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
    one = jax.tree.map(jnp.ones_like, variables["batch_stats"])
    a = stats_fn({**variables, "batch_stats": zero}, x)
    b = stats_fn({**variables, "batch_stats": one}, x)
    return jax.lax.stop_gradient(jax.tree.map(lambda a, b: a / (1.0 - (b - a)), a, b))


def sample_grad(apply_fn, stats_fn, variables, masks, theta, theta_p, x):
    """∂L/∂m of one sample: L = Σ_batch ‖f(x; m ⊙ θ) − f(x; m ⊙ θ')‖² (both through m)."""
    mf = jax.tree.map(lambda m: m.astype(x.dtype), masks)
    rest = {k: v for k, v in variables.items() if k != "params"}
    if "batch_stats" in rest:
        if stats_fn is None:
            raise UserError("ntksap on a model with BatchNorm needs the model's train-mode pass (stats_fn); "
                            "allowed: a Scorer built by a run's setup, or make_scorer(..., stats_fn=...)")
        masked = jax.tree.map(lambda p, m: p * m, theta, mf)
        rest = {**rest, "batch_stats": calibrated(stats_fn, {**rest, "params": masked}, x)}

    def loss(mf):
        f0 = apply_fn({**rest, "params": jax.tree.map(lambda p, m: p * m, theta, mf)}, x)
        f1 = apply_fn({**rest, "params": jax.tree.map(lambda p, m: p * m, theta_p, mf)}, x)
        return jnp.sum(jnp.sum(jnp.square(f0 - f1), axis=-1))
    return jax.grad(loss)(mf)


def batch_sizes(classes: int, batch_size: int, r: int) -> list[int]:
    """The noise batches of one round: r passes over 10 × classes inputs in batches of `batch_size`
    (the reference's prune loader: --prune-dataset-ratio 10, --prune-batch-size)."""
    n = 10 * classes
    one = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    return one * r


def from_draws(apply_fn, stats_fn, variables, masks, draws):
    """|Σ_s ∂L_s/∂m| over the samples `draws` [(θ, θ', x)]: the absolute value after the sum, as the
    reference (its m.grad accumulates over the samples); pruned weights score -inf."""
    total = None
    for theta, theta_p, x in draws:
        g = sample_grad(apply_fn, stats_fn, variables, masks, theta, theta_p, x)
        total = g if total is None else jax.tree.map(jnp.add, total, g)
    return keep_masked_out(jax.tree.map(jnp.abs, total), masks)


def ntksap(apply_fn, variables, masks, batch, rng, *, epsilon=0.01, r=1, batch_size=256, prunable=None,
           input_shape=None, classes=None, stats_fn=None):
    """The round's scores (module docstring): one sample per noise batch, drawn from `rng`."""
    draws = []
    for s, b in enumerate(batch_sizes(classes, batch_size, r)):
        k_init, k_x, k_z = jax.random.split(jax.random.fold_in(rng, s), 3)
        theta = redraw(variables["params"], prunable, k_init)
        x = jax.random.normal(k_x, (b, *input_shape), jnp.float32)
        draws.append((theta, perturb(theta, prunable, k_z, epsilon), x))
    return from_draws(apply_fn, stats_fn, variables, masks, draws)


def prepare(apply_fn, variables, prunable, input_shape, options) -> dict:
    """The input shape, prunable set and number of classes bound (NTK-SAP reads no data)."""
    out = jax.eval_shape(lambda v: apply_fn(v, jnp.zeros((1, *input_shape), jnp.float32)), variables)
    if len(out.shape) != 2:
        raise UserError(f"ntksap needs a classifier's logits [B, classes] on float inputs; this model gives shape "
                        f"{tuple(out.shape)}")
    return {**options, "input_shape": tuple(input_shape), "prunable": prunable, "classes": int(out.shape[-1])}
