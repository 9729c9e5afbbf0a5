"""Structured pruning of a fine-tuned BERT: attention heads (Michel et al. 2019) and MLPs (Prasanna
et al. 2020), by gate importance, without retraining.

Importance of gate ξ = E_x |∂L(x)/∂ξ| over `heads.examples` training examples (per-example
gradients, through per-example gates; eval mode), head importance L2-normalized within each layer
(`heads.normalize`). Pruning is greedy and iterative: each step removes `heads.step` of all heads
(at least one) with the lowest importance among those left, recomputing importance with the
current gates, down to none; validation and test accuracy are recorded after every step. MLPs are
pruned the same way, separately. Every replicate (seed) is pruned by its own importances.

The dense model is level 0 of the lottery run with the same config (trained here if missing), so
`lth heads` after `lth lottery` trains nothing. Results: <run dir>/heads-<hash of heads.*>/heads.json and heads.png.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lth.errors import UserError
from lth.harness.run import Command, Setup, init_variables, keys
from lth.harness.rundir import write_json
from lth.options import options
from lth.studies.lottery import COMMAND as LOTTERY
from lth.studies.lottery import check_rewind, train_dense
from lth.studies.lottery import validate as lottery_validate
from lth.studies.plots import heads_curve
from lth.studies.tables import heads_table
from lth.training.loop import device_data

# This study's section of the config.
OPTIONS = {"heads": options(
    step=(0.1, "fraction of all heads (MLPs) removed per step"),
    examples=(512, "training examples for importance E|dL/dgate|"),
    normalize=(True, "normalize head importance per layer (L2), as Michel et al."),
)}


def validate(cfg) -> None:
    lottery_validate(cfg)   # the dense model is the lottery run's level 0
    if not 0 < cfg.heads.step < 1:
        raise UserError(f"heads.step {cfg.heads.step} out of range; allowed: 0 < step < 1")
    if cfg.heads.examples < 1:
        raise UserError(f"heads.examples {cfg.heads.examples} out of range; allowed: 1 or more")


def _check(s: Setup) -> None:
    check_rewind(s)
    check(s)


def results_dir(run_dir: str, cfg) -> str:
    """heads-<hash of the heads section> inside the lottery run directory: other heads.* settings
    write beside it, never over it."""
    return Command("heads", ("heads",)).dir_for(run_dir, "heads", cfg)


def check(s: Setup):
    """(layers, heads) of the run's model; UserError when it has no gates."""
    cfg = getattr(s.trainer.model, "cfg", None)
    if cfg is None or not hasattr(cfg, "heads"):
        raise UserError(f"model {s.cfg.model.name!r} has no attention heads; allowed: BERT models (see `lth models`)")
    return cfg.layers, cfg.heads


@functools.lru_cache(maxsize=None)
def _importance_fn(trainer):
    """(state [R], x chunks, y chunks, weights, head gates [R, L, A], mlp gates [R, L]) →
    (Σ_x |∂L/∂head gate|, Σ_x |∂L/∂mlp gate|) per replicate (jit)."""
    def one(state, xs, ys, ws, head, mlp):
        def chunk(args):
            xb, yb, wb = args
            b = xb.shape[0]

            def loss(h, m):
                logits, _ = trainer.apply(state.params, state.model_state, xb, False, state.rng, head_mask=h,
                                          mlp_mask=m)
                return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, yb) * wb)
            gh, gm = jax.grad(loss, argnums=(0, 1))(jnp.broadcast_to(head, (b, *head.shape)),
                                                    jnp.broadcast_to(mlp, (b, *mlp.shape)))
            return jnp.sum(jnp.abs(gh), 0), jnp.sum(jnp.abs(gm), 0)
        gh, gm = jax.lax.map(chunk, (xs, ys, ws))
        return jnp.sum(gh, 0), jnp.sum(gm, 0)
    return jax.jit(trainer.over_replicates(one, (0, None, None, None, 0, 0)))


def importance(s: Setup, state, split, head, mlp):
    """(head importance [R, L, A], mlp importance [R, L]) at the current gates."""
    gh, gm = _importance_fn(s.trainer)(state, *split, jnp.asarray(head), jnp.asarray(mlp))
    n = float(jnp.sum(split[2]))
    gh, gm = np.asarray(gh) / n, np.asarray(gm) / n
    if s.cfg.heads.normalize:
        gh = gh / np.maximum(np.linalg.norm(gh, axis=-1, keepdims=True), 1e-20)
    return gh, gm


def remove_lowest(gates, scores, k: int):
    """Gates [R, ...] with the k lowest-scoring live entries of each replicate set to 0."""
    out = gates.copy()
    for r in range(gates.shape[0]):
        live = np.flatnonzero(gates[r].ravel() > 0)
        order = live[np.argsort(scores[r].ravel()[live], kind="stable")]
        out[r].reshape(-1)[order[:k]] = 0.0
    return out


def curve(s: Setup, state, data, split, kind: str, shape, log=print) -> list[dict]:
    """Accuracy after each greedy step of pruning `kind` ('heads' or 'mlps')."""
    r = s.replicates
    gates = {"heads": np.ones((r, *shape)), "mlps": np.ones((r, shape[0]))}
    total = gates[kind][0].size
    per_step = max(1, int(round(s.cfg.heads.step * total)))
    rows = []
    while True:
        kw = {"head_mask": jnp.asarray(gates["heads"]), "mlp_mask": jnp.asarray(gates["mlps"])}
        _, test_acc = s.trainer.evaluate(state, data.test, **kw)
        row = {"kept": int(gates[kind][0].sum()), "fraction_kept": float(gates[kind][0].sum() / total),
               "test_accuracy": float(np.mean(test_acc)), "test_accuracy_std": float(np.std(test_acc)),
               "test_accuracy_replicates": [float(a) for a in np.asarray(test_acc)]}
        if data.val is not None:
            row["val_accuracy"] = float(np.mean(s.trainer.evaluate(state, data.val, **kw)[1]))
        rows.append(row)
        log(f"{kind:<6} kept {row['kept']:>4}/{total}  test acc {row['test_accuracy']:.4f}")
        if row["kept"] == 0:
            return rows
        ih, im = importance(s, state, split, gates["heads"], gates["mlps"])
        gates[kind] = remove_lowest(gates[kind], ih if kind == "heads" else im, min(per_step, row["kept"]))


def run(s: Setup, run_dir: str, log=print) -> dict:
    layers, heads = check(s)
    data = device_data(s.trainer, s.dataset)
    init_params, init_ms = init_variables(s, keys(s, "init"))
    state, rows = train_dense(s, run_dir, data, init_params, init_ms)
    n = min(s.cfg.heads.examples, len(s.dataset.y_train))
    split = s.trainer.chunked(s.dataset.x_train[:n], s.dataset.y_train[:n])
    ih, im = importance(s, state, split, np.ones((s.replicates, layers, heads)), np.ones((s.replicates, layers)))
    out = {"dense_test_accuracy": float(np.mean([r["test_accuracy"] for r in rows])),
           "head_importance": ih.tolist(), "mlp_importance": im.tolist(),  # [R, L, A], [R, L]
           "heads": curve(s, state, data, split, "heads", (layers, heads), log),
           "mlps": curve(s, state, data, split, "mlps", (layers, heads), log)}
    write_json(os.path.join(results_dir(run_dir, s.cfg), "heads.json"), out)
    return out


HELP = "BERT head and MLP pruning by gate importance (Michel et al. 2019)"
DESCRIPTION = ("Fine-tune the dense model (level 0 of the lottery run of the same config, reused if done), then "
               "prune attention heads, and separately MLPs, greedily by importance E|dL/dgate|; print accuracy vs "
               "heads kept, write heads.json and heads.png.")
PLOT_FILE = "heads.png"
RESULT_FILE = "heads.json"


def describe(s: Setup) -> str:
    return f"{s.cfg.model.name} on {s.cfg.data.name}, heads pruned in steps of {s.cfg.heads.step:g}, R={s.replicates}"


def table(out) -> str:
    return heads_table(out)


def plot(out, path) -> str:
    return heads_curve(out, path)


def files(result) -> list:
    return [f"results: {os.path.join(result.run_dir, 'heads.json')}", f"plot: {result.plot()}"]


def outcome(out) -> dict:
    return {}


COMMAND = Command("heads", LOTTERY.sections, LOTTERY.unhashed, validate=validate, check=_check)
