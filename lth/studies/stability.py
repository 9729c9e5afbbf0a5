"""`lth stability`: instability analysis and linear mode connectivity (Frankle, Dziugaite, Roy &
Carbin 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis").

For each rewind point k (`stability.rewind_points`), take the weights at step k of a dense run
(the trunk: init and data order as the lottery run of the same config), and for each level of
`stability.levels` the ticket found by IMP rewound to that k (the paper's Algorithm 2: the mask of
level L of `lth lottery` with lottery.rewind = k, reused where that run has finished the level, else
trained here, resumably, in that lottery run's own directory) applied to them; train two copies from
there to the end of training, differing only in SGD noise (data order and augmentation keys);
evaluate θ(α) = (1 − α)·θ1 + α·θ2 at `stability.alphas` points on train and test. Instability
(error barrier) = max over α of the error minus the mean of the two endpoints' errors. The two
copies of every seed are the replicates of one compiled program (2R in all).

BatchNorm (`stability.bn`): `recompute` re-estimates the running statistics of θ(α) on
`stability.bn_batches` training batches (weights untouched); `interpolate` interpolates the copies'
running statistics like the weights. Fresh optimizer and the schedule resumed at k, as IMP rewinds.

Run directory: config.json, trunk/k<step>/ (weights at k), points/L<level>_k<step>/ (the two copies,
resumable like any arm; stability.json once the path is evaluated), summary.json, plots. The IMP
runs that find the tickets live beside it, one per k, as `lth lottery` run directories.
"""
from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from lth.errors import UserError, check_choice
from lth.harness import checkpoint, paths
from lth.harness.run import BASE_SECTIONS, Command, init_variables, keys, train_arm
from lth.harness.rundir import check_run_dir, open_run_dir, read_json, write_json
from lth.harness.summary import arm_entry
from lth.options import options, split_list
from lth.pruning import masks as M
from lth.studies import lottery
from lth.studies.lottery import COMMAND as LOTTERY
from lth.studies.plots import stability_plots
from lth.studies.tables import stability_table
from lth.training.loop import device_data, fit

# This study's section of the config.
OPTIONS = {"stability": options(
    rewind_points=("0it,1ep,5ep", "k: two copies start from the dense run's weights at step k"),
    levels=("", "also the tickets of these IMP levels (comma list; needs `lth lottery` run first)"),
    alphas=(31, "points on the line θ(α) = (1-α)·θ1 + α·θ2, α in [0, 1]"),
    bn=("recompute", "BatchNorm of θ(α): recompute (stats re-estimated on train batches) | interpolate"),
    bn_batches=(8, "training batches for `recompute`"),
    eval_examples=(0, "training examples whose error is measured along the path (0 = all)"),
)}

BN_MODES = ("recompute", "interpolate")


def rewind_texts(cfg) -> list[str]:
    return split_list(cfg.stability.rewind_points)


def levels_of(cfg) -> list[int]:
    out = []
    for t in cfg.stability.levels.split(","):
        if t.strip():
            if not t.strip().isdigit():
                raise UserError(f"bad stability.levels entry {t.strip()!r}; allowed: level numbers, e.g. 2,4,8")
            out.append(int(t))
    return out


def validate(cfg) -> None:
    if not rewind_texts(cfg):
        raise UserError("stability.rewind_points is empty; allowed: a comma list of durations, e.g. 0it,100it,2ep")
    levels_of(cfg)
    if cfg.stability.alphas < 2:
        raise UserError(f"stability.alphas {cfg.stability.alphas} out of range; allowed: 2 or more points in [0, 1]")
    check_choice("stability.bn", cfg.stability.bn, BN_MODES)
    if cfg.stability.bn_batches < 1:
        raise UserError(f"stability.bn_batches {cfg.stability.bn_batches} out of range; allowed: 1 or more")
    if cfg.stability.eval_examples < 0:
        raise UserError(f"stability.eval_examples {cfg.stability.eval_examples} out of range; "
                        f"allowed: 0 (all) or a positive count")


def rewind_steps(s) -> list[int]:
    out = []
    for text in rewind_texts(s.cfg):
        k = s.duration(text, "stability.rewind_points")
        if k >= s.total:
            raise UserError(f"stability rewind point {text!r} = step {k} is not before the end of training "
                            f"(step {s.total}); allowed: 0 <= k < {s.total}")
        out.append(k)
    return sorted(set(out))


def ticket_config(cfg, k_text: str, levels=()):
    """The `lth lottery` config whose IMP run finds the tickets at rewind point k (as written), to the
    highest of `levels`, without controls."""
    c = cfg.copy_and_resolve_references()
    c.lottery.rewind = k_text
    if levels:
        c.lottery.levels, c.lottery.controls = max(levels), ""
    return c


def ticket_setup(s, c):
    """The study's setup (data, model, trainer: the same) under the lottery config `c`."""
    return dataclasses.replace(s, cfg=c, _scorers={})


def lottery_dir(s, k_text: str) -> str:
    return LOTTERY.run_dir(ticket_config(s.cfg, k_text))


def ticket_runs(s) -> dict:
    """{k step: (rewind text, lottery run directory)} of the IMP runs the ticket points need."""
    out = {}
    for text in rewind_texts(s.cfg):
        out.setdefault(s.duration(text, "stability.rewind_points"), (text, lottery_dir(s, text)))
    return out


def check(s) -> None:
    """Rewind points before the end; each k's IMP run validated and its directory checked (a run of
    another config there is refused) before anything is written."""

    rewind_steps(s)
    if any(lv > 0 for lv in levels_of(s.cfg)):
        for text, d in ticket_runs(s).values():
            c = ticket_config(s.cfg, text, levels_of(s.cfg))
            lottery.validate(c)
            lottery.check(ticket_setup(s, c))
            check_run_dir(d, c, lottery.COMMAND)


COMMAND = Command("stability", BASE_SECTIONS + ("prune", "lottery", "stability"),
                  unhashed=("lottery.levels", "lottery.controls", "lottery.rewind", "stability.rewind_points",
                            "stability.levels"),
                  prefix="stability_", validate=validate, check=check)


HELP = "instability analysis: error barrier between two copies trained from step k"
DESCRIPTION = ("For each rewind point k (stability.rewind_points) and level (0 = dense, and stability.levels: the "
               "tickets of IMP rewound to k, from `lth lottery` runs of the same config, run here when missing), train "
               "two copies from step k with different data orders and measure the error along the line between them "
               "(Frankle et al. 2020); print a table, write summary.json and stability.png.")
PLOT_FILE = "stability.png"


def describe(s) -> str:
    return (f"{s.cfg.model.name} on {s.cfg.data.name}, rewind points {s.cfg.stability.rewind_points}, "
            f"levels {s.cfg.stability.levels or '0'}, R={s.replicates}")


def table(summary) -> str:
    return stability_table(summary)


def plot(summary, path) -> str:
    return stability_plots(summary, path)


def outcome(summary) -> dict:
    """The copies of every point, for the diverged-replicate exit code."""
    return {"arms": [p["copies"] for p in summary["points"]]}


def find_tickets(s, k_text: str, d: str, levels: list, log=print) -> None:
    """Make sure the lottery run at `d` (IMP rewound to k) has finished `levels`: reused as is when
    it has, else run there (resumable; its finished levels and controls are kept, and so is its
    summary's extent: never fewer levels or controls than it had)."""

    if all(paths.done(paths.level(d, lv)) for lv in levels):
        return
    c = ticket_config(s.cfg, k_text, levels)
    old = paths.summary(d)
    if os.path.exists(old):
        prev = read_json(old)
        c.lottery.levels = max([c.lottery.levels] + [e["level"] for e in prev.get("levels", [])])
        c.lottery.controls = ",".join(prev.get("controls", {}))
    log(f"tickets at k={k_text}: IMP rewound to {k_text}, levels 0..{c.lottery.levels} in {d}")
    lock = open_run_dir(d, c, lottery.COMMAND)
    try:
        lottery.run(ticket_setup(s, c), d, log=lambda line: log("  " + line))
    finally:
        lock.release()


# ----- the path between two copies -------------------------------------------------------------
def interpolate(a, b, alpha: float):
    """(1 − α)·a + α·b, exact at both ends: a at α = 0, b at α = 1, and a wherever a == b."""
    if alpha == 1.0:
        return b
    return jax.tree.map(lambda x, y: x + (alpha * (y - x)).astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating)
                        else x, a, b)


def recompute_bn(s, params, model_state, xs):
    """BatchNorm running statistics re-estimated on training batches `xs` [n, B, ...]: the mean of
    each batch's statistics (as PyTorch's cumulative average); weights are not touched."""
    if not model_state:
        return model_state
    return _recompute_fn(s.trainer)(params, model_state, xs)


@functools.lru_cache(maxsize=None)
def _recompute_fn(trainer):
    m = 0.1  # lth.models.layers.BatchNorm: running = (1 − m)·running + m·batch

    def one(params, ms, xs):
        zero = jax.tree.map(jnp.zeros_like, ms)

        def batch_stats(x):
            _, new = trainer.model.apply({"params": params, **zero}, x, train=True, mutable=list(ms))
            return jax.tree.map(lambda v: v / m, new)
        return jax.tree.map(lambda v: jnp.mean(v, 0), jax.lax.map(batch_stats, xs))
    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))


def path_errors(s, state1, state2, splits: dict, alphas, bn_xs) -> dict:
    """{split: [A, R] error} along θ(α), and the endpoints' own errors {split: [2, R]}."""
    out = {name: [] for name in splits}
    for alpha in alphas:
        params = interpolate(state1.params, state2.params, float(alpha))
        if s.cfg.stability.bn == "interpolate" or not state1.model_state:
            ms = interpolate(state1.model_state, state2.model_state, float(alpha))
        else:
            ms = recompute_bn(s, params, state1.model_state, bn_xs)
        st = state1.replace(params=params, model_state=ms)
        for name, split in splits.items():
            out[name].append(1.0 - np.asarray(s.trainer.evaluate(st, split)[1], np.float64))
    ends = {name: np.stack([1.0 - np.asarray(s.trainer.evaluate(st, split)[1], np.float64) for st in (state1, state2)])
            for name, split in splits.items()}
    return {name: np.stack(v) for name, v in out.items()}, ends


def barrier(curve) -> np.ndarray:
    """[A, R] error curve → [R] instability: max over α minus the mean of the endpoints."""
    return curve.max(0) - 0.5 * (curve[0] + curve[-1])


# ----- the run -------------------------------------------------------------------------------
def copy_keys(s):
    """(step keys, data keys) of the 2R copies: copy 1 = the run's own streams, copy 2 = new ones."""
    return (jnp.concatenate([keys(s, "train"), keys(s, "copy", 0)]),
            jnp.concatenate([keys(s, "data"), keys(s, "copy", 1)]))


def trunk(s, run_dir, data, ks):
    """Weights (params, model_state) at each step in `ks` of the dense run from init."""
    folder = os.path.join(run_dir, "trunk")   # recomputed whole when one of its checkpoints is corrupt
    trunk = {k: os.path.join(folder, f"k{k}") for k in ks}
    params, ms = init_variables(s, keys(s, "init"))
    like = {"params": params, "model_state": ms}
    if not all(checkpoint.exists(p) for p in trunk.values()):
        state = s.trainer.new_state(params, ms, M.ones_like(params), 0, keys(s, "train"), keys(s, "data"))
        captures = {k: (lambda st, p=trunk[k]: checkpoint.exists(p) or
                        checkpoint.save(p, {"params": st.params, "model_state": st.model_state}, redo=folder))
                    for k in ks}
        fit(s.trainer, state, data, max(ks), eval_every=0, history=[], captures=captures)
    return {k: checkpoint.load(p, like, redo=folder) for k, p in trunk.items()}


def level_masks(s, level: int, lottery_run: str, params, model_state):
    """The IMP mask of `level` from the lottery run `lottery_run` (all ones for level 0)."""
    if level == 0:
        return M.ones_like(params)
    like = s.trainer.new_state(params, model_state, M.ones_like(params), 0, keys(s, "train"), keys(s, "data"))
    return checkpoint.load_final(paths.level(lottery_run, level), like, own=False).masks


def run(s, run_dir: str, log=print) -> dict:
    cfg, r = s.cfg, s.replicates
    data = device_data(s.trainer, s.dataset)
    ks = rewind_steps(s)
    weights = trunk(s, run_dir, data, ks)
    n = cfg.stability.eval_examples or len(s.dataset.y_train)
    splits = {"train": s.trainer.chunked(s.dataset.x_train[:n], s.dataset.y_train[:n]), "test": data.test}
    b = s.trainer.batch_size
    nb = min(cfg.stability.bn_batches, len(s.dataset.y_train) // b)
    bn_xs = jnp.asarray(s.dataset.x_train[:nb * b].reshape(nb, b, *s.input_shape))
    alphas = np.linspace(0.0, 1.0, cfg.stability.alphas)
    summary = {"config": read_json(paths.config(run_dir))["config"], "alphas": alphas.tolist(),
               "bn": cfg.stability.bn, "points": []}
    levels = [lv for lv in levels_of(cfg) if lv > 0]
    runs = ticket_runs(s)
    for level in [0] + levels:
        for k in ks:
            pdir = os.path.join(run_dir, "points", f"L{level}_k{k}")
            result = os.path.join(pdir, "stability.json")
            if not os.path.exists(result):
                w = weights[k]
                if level:
                    find_tickets(s, *runs[k], levels, log)
                masks = level_masks(s, level, runs[k][1], w["params"], w["model_state"])
                two = lambda t: jax.tree.map(lambda a: jnp.concatenate([a, a]), t)  # noqa: E731
                state, rows = train_arm(s, os.path.join(pdir, "copies"), two(w["params"]), two(w["model_state"]),
                                        two(masks), k, data, rngs=copy_keys(s), label=f"L{level} k={k}")
                half = lambda t, i: jax.tree.map(lambda a: a[i * r:(i + 1) * r], t)  # noqa: E731
                curves, ends = path_errors(s, half(state, 0), half(state, 1), splits, alphas, bn_xs)
                write_json(result, {"level": level, "k": k, "density": rows[0]["density"],
                                    "copies": arm_entry(rows),
                                    **{f"{sp}_error": c.T.tolist() for sp, c in curves.items()},
                                    **{f"{sp}_endpoint_error": e.T.tolist() for sp, e in ends.items()}})
            p = read_json(result)
            entry = {"level": level, "k": k, "density": p["density"], "copies": p["copies"]}
            if level:
                entry["lottery_run"] = runs[k][1]
            for sp in ("train", "test"):
                bar = barrier(np.asarray(p[f"{sp}_error"]).T)
                entry.update({f"{sp}_barrier": float(bar.mean()), f"{sp}_barrier_std": float(bar.std()),
                              f"{sp}_error": p[f"{sp}_error"]})
            summary["points"].append(entry)
            log(f"level {level:<3} k={k:<6} density {entry['density']:.4f}  "
                f"train barrier {entry['train_barrier']:.4f}  "
                f"test barrier {entry['test_barrier']:.4f}")
            write_json(paths.summary(run_dir), summary)
    return summary
