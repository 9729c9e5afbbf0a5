"""The layer-collapse study (Tanaka et al. 2020, Fig. 1/3) as a resumable run: prune at init to
compressions 10^0 … 10^x with each score, no training, and record the weights kept in every layer.

Config: the `collapse` section (methods, max_log10, step, init), the model, `data.name` (shapes,
and the batch of data-dependent scores; synthetic N(0,1) inputs when it is not prepared) and the
scores' options in `pai`. Run directory: config.json, points/<method>/<log10>.json (one file per
point, written as soon as it is computed and skipped on a rerun), summary.json and the plots
rebuilt from the points on disk after every point, so a partial sweep gives a partial table.

Critical compression: the largest compression of the sweep up to which no layer is fully pruned.
Max compression: one weight left per layer (total prunable / number of prunable layers); a method
"reaches" it when no layer collapses there either.
"""
from __future__ import annotations

import math
import os
import time

from lth.errors import UserError, check_choice
from lth.harness import paths
from lth.harness.run import Command, init_variables, keys
from lth.harness.rundir import read_json, write_json
from lth.models.inits import ALIASES, KERNEL, Init
from lth.models.zoo import find, synflow_init
from lth.options import options, split_list
from lth.pruning import at_init as pai
from lth.pruning import masks as M
from lth.pruning import prune as P
from lth.registry import SCORES
from lth.studies import collapse_plots
from lth.studies.tables import collapse_table

# This study's section of the config.
OPTIONS = {"collapse": options(
    methods=("synflow,magnitude,random,snip,grasp,obd", "comma list of scores"),
    max_log10=(3.0, "sweep compressions 10^0 .. 10^max_log10 (plus the max-compression point)"),
    step=(0.25, "in steps of this (log10)"),
    init=("synflow", "synflow (the SynFlow code's init for the model) | model (model.* as set) | a kernel init"),
)}


def methods_of(cfg) -> list[str]:
    return split_list(cfg.collapse.methods)


def resolve_init(cfg) -> None:
    """Set model.* inits from collapse.init: 'synflow' = the SynFlow code's init for this model,
    'model' = as configured, a kernel init name = it with zero biases and BatchNorm γ = 1."""
    how = cfg.collapse.init
    if how == "model":
        return
    if how == "synflow":
        find(cfg.model.name)
        init = synflow_init(cfg.model.name)
    elif how in KERNEL or how in ALIASES:
        init = Init(how)
    else:
        raise UserError(f"unknown collapse.init {how!r}; allowed: synflow, model, or a kernel init "
                        f"({', '.join(sorted([*KERNEL, *ALIASES]))})")
    init.write(cfg.model)


MAX_POINTS = 10_000   # sweep points per method (max_log10 / step)


def validate(cfg) -> None:
    methods = methods_of(cfg)
    if not methods:
        raise UserError("collapse.methods is empty; allowed: a comma list of " + ", ".join(sorted(SCORES)))
    for m in methods:
        check_choice("collapse.methods entry", m, SCORES)
    if not cfg.collapse.step > 0 or not cfg.collapse.max_log10 >= 0:
        raise UserError(f"bad sweep 10^0..10^{cfg.collapse.max_log10} in steps of {cfg.collapse.step}; "
                        f"allowed: max_log10 >= 0, step > 0")
    if cfg.collapse.max_log10 / cfg.collapse.step > MAX_POINTS:
        raise UserError(f"collapse.step {cfg.collapse.step} makes {cfg.collapse.max_log10 / cfg.collapse.step:.3g} "
                        f"sweep points up to 10^{cfg.collapse.max_log10}; allowed: at most {MAX_POINTS} "
                        f"(a larger collapse.step or a smaller collapse.max_log10)")
    pai.validate_options(cfg.pai)
    check_choice("pai.scope (lth collapse)", cfg.pai.scope, ("global", "layerwise"))


def layer_sizes(s) -> dict[str, int]:
    return {p: n for p, (_, n) in M.counts(M.ones_like(s.param_shapes), s.prunable).items()}


def check(s) -> None:
    top = pai.max_compression(list(layer_sizes(s).values()))
    if s.cfg.collapse.max_log10 > math.log10(top * (1 + 1e-9)):   # compared as log10: 10^x overflows for large x
        raise UserError(f"compression 10^{s.cfg.collapse.max_log10} is beyond max compression 10^{math.log10(top):.3f} "
                        f"of {s.cfg.model.name} (one weight per layer); allowed: max_log10 <= {math.log10(top):.3f}")


COMMAND = Command("collapse", ("seed", "model", "data.name", "data.normalize", "prune.prunable", "pai", "collapse"),
                  unhashed=("collapse.methods", "collapse.max_log10", "collapse.step", "pai.methods", "pai.sanity",
                            "pai.compression"),
                  prefix="collapse_", validate=validate, check=check,
                  label=lambda cfg: f"{cfg.model.name}_w{cfg.model.width:g}")


HELP = "layer-collapse sweep of pruning-at-init scores (no training)"
DESCRIPTION = ("Prune at init to 10^0 .. 10^MAX in steps of STEP with each method; report the weights kept per "
               "layer, each method's critical compression and whether it reaches max compression; write summary.json "
               "and PNG plots. A run directory: every (method, compression) point is saved when done and skipped on "
               "a rerun. Each flag sets one config key (shown); its default is the config's value.")
DEFAULT_CONFIG = "synflow_layer_collapse"   # configs/synflow_layer_collapse.py: VGG-16, CIFAR-10 shapes
TRAINS = False                              # no --replicates / --no-progress
SYNTHETIC_OK = True                         # data-dependent scores fall back to synthetic inputs
PLOT_FILE = "layer_density.png"
# CLI flag → config key, with its argparse options: the one table of the collapse flags
FLAGS = [
    ("--model", "model.name", {"help": "model.name (see lth models)"}),
    ("--methods", "collapse.methods", {"help": "collapse.methods: comma list of scores"}),
    ("--max-log10", "collapse.max_log10", {"type": float, "help": "collapse.max_log10: largest compression, as log10"}),
    ("--step", "collapse.step", {"type": float, "help": "collapse.step: sweep step in log10"}),
    ("--dataset", "data.name", {"help": "data.name: input shapes and, if prepared, data for data-dependent scores"}),
    ("--data-dir", "data.data_dir", {"help": "data.data_dir: tfds data dir"}),
    ("--width", "model.width", {"type": float, "help": "model.width: width multiplier"}),
    ("--init", "collapse.init", {"help": "collapse.init: synflow (the SynFlow code's init for the model), model "
                                         "(model.* as configured), or a kernel init name, e.g. kaiming_normal, "
                                         "kaiming_truncated_normal (zero biases, BatchNorm γ = 1)"}),
    ("--seed", "seed", {"type": int, "help": "seed"}),
    ("--rounds", "pai.rounds", {"type": int, "help": "pai.rounds: rounds per method (0 = synflow 100, others 1)"}),
    ("--schedule", "pai.schedule", {"choices": ["exponential", "linear"], "help": "pai.schedule"}),
    ("--scope", "pai.scope", {"choices": ["global", "layerwise"], "help": "pai.scope"}),
    ("--batch-size", "pai.batch_size", {"type": int, "help": "pai.batch_size: examples for data-dependent scores"}),
    ("--obd-method", "pai.obd_method", {"choices": ["exact", "hutchinson", "fisher"], "help": "pai.obd_method"}),
    ("--obd-probes", "pai.obd_probes", {"type": int, "help": "pai.obd_probes: Hutchinson probes"}),
    ("--precision", "pai.synflow_precision", {"choices": ["float64", "scaled32", "auto"],
                                              "help": "pai.synflow_precision (scaled32/auto: faster, but can collapse "
                                                      "layers near max compression)"}),
    ("--out-dir", None, {"help": "==SUPPRESS=="}),   # the former name of --run-dir
]


def prepare_config(cfg) -> None:
    resolve_init(cfg)


def describe(s) -> str:
    return (f"{s.cfg.model.name} ×{s.cfg.model.width:g}, init {s.cfg.collapse.init}: {s.cfg.model.init}; "
            f"methods {s.cfg.collapse.methods}")


def table(summary) -> str:
    return collapse_table(summary)


def plot(summary, path) -> str:
    """The per-layer densities at `path`, and the critical compressions beside it; returns the first."""
    collapse_plots.critical(summary, os.path.join(os.path.dirname(path), "critical_compression.png"))
    return collapse_plots.layer_density(summary, path)


def files(result) -> list:
    return [f"summary: {os.path.join(result.run_dir, 'summary.json')}",
            f"plots: {result.plot()} {os.path.join(result.run_dir, 'critical_compression.png')}"]


def outcome(summary) -> dict:
    return {}


def compressions(max_log10: float, step: float, top: float):
    n = int(math.floor(max_log10 / step + 1e-9))
    points = [round(i * step, 6) for i in range(n + 1)]
    if max_log10 - points[-1] > 1e-9:
        points.append(round(max_log10, 6))
    if math.log10(top) - points[-1] > 1e-6:
        points.append(math.log10(top))  # the max-compression point itself
    return points


def point_path(run_dir, method, lg) -> str:
    return os.path.join(run_dir, "points", method, f"{lg:g}.json")


def run(s, run_dir: str, log=print) -> dict:
    """Compute every missing (method, compression) point, saving each at once; returns the summary."""
    cfg = s.cfg
    params, ms = init_variables(s, keys(s, "init"))
    variables = {"params": M.index(params, 0), **M.index(ms, 0)}   # replicate 0: one network per sweep
    ones = M.ones_like(variables["params"])
    sizes = layer_sizes(s)
    points = compressions(cfg.collapse.max_log10, cfg.collapse.step, pai.max_compression(list(sizes.values())))
    if s.dataset.meta.get("synthetic") and any(SCORES.get(m).needs_data for m in methods_of(cfg)):
        log(f"note: {cfg.data.name} is not prepared; "
            f"data-dependent scores use SYNTHETIC inputs (N(0,1), random labels)")
    rng = keys(s, "pai_score")[0]
    done = load_points(run_dir, methods_of(cfg), points)   # read once; new points are added as written
    for method in methods_of(cfg):
        todo = [lg for lg in points if lg not in done[method]]
        if not todo:
            continue
        t0 = time.perf_counter()
        scorer = s.scorer(method, variables)
        rounds = cfg.pai.rounds or pai.default_rounds(method)
        scores, score_s = None, 0.0
        if rounds == 1:
            scores = scorer(variables, ones, rng)
            score_s = time.perf_counter() - t0
        for lg in todo:
            t1, t = time.perf_counter(), {}
            if rounds == 1:
                masks = P.prune(scores, ones, s.prunable, density=10 ** -lg, layerwise=cfg.pai.scope == "layerwise")
            else:
                masks = pai.prune_at_init(scorer, variables, s.prunable, 10 ** -lg, rounds=rounds,
                                          schedule=cfg.pai.schedule, scope=cfg.pai.scope, rng=rng, timings=t)
            done[method][lg] = {"compression_log10": lg, "kept_per_layer": pai.kept_per_layer(masks, s.prunable),
                                "rounds": rounds, "precision": scorer.precision,
                                "seconds": time.perf_counter() - t1 + score_s, **t}
            write_json(point_path(run_dir, method, lg), done[method][lg])
            score_s = 0.0
            write_json(paths.summary(run_dir), summarize(s, done, points, sizes))
        m = summarize(s, done, points, sizes)["methods"][method]
        log(f"{method:<10} critical compression 10^{m['critical_compression_log10']:.2f}  reaches max: "
            f"{m['reaches_max_compression']}  ({time.perf_counter() - t0:.1f} s)")
    summary = summarize(s, done, points, sizes)
    write_json(paths.summary(run_dir), summary)
    return summary


def load_points(run_dir: str, methods, points) -> dict:
    """{method: {log10: point}} of the points of this sweep already on disk."""
    return {m: {lg: read_json(point_path(run_dir, m, lg))
                for lg in points if os.path.exists(point_path(run_dir, m, lg))}
            for m in methods}


def summarize(s, done: dict, points, sizes) -> dict:
    """The summary of the finished points `done` ({method: {log10: point}}, as on disk)."""
    cfg = s.cfg
    out = {"model": cfg.model.name, "width": cfg.model.width, "dataset": cfg.data.name,
           "data": "synthetic" if s.dataset.meta.get("synthetic") else cfg.data.name, "scope": cfg.pai.scope,
           "init": {"name": cfg.collapse.init, **Init.of(cfg.model).as_dict()},
           "max_compression_log10": math.log10(pai.max_compression(list(sizes.values()))), "layers": sizes,
           "compressions_log10": points, "methods": {}}
    for method in methods_of(cfg):
        finished = [done[method][lg] for lg in points if lg in done[method]]
        if not finished:
            continue
        kept = {f"{p['compression_log10']:g}": p["kept_per_layer"] for p in finished}
        critical = 0.0
        for lg in points:
            if f"{lg:g}" not in kept or min(kept[f"{lg:g}"].values()) < 1:
                break
            critical = lg
        last = f"{points[-1]:g}"
        entry = {"critical_compression_log10": critical, "points_done": len(finished),
                 "complete": len(finished) == len(points),
                 "reaches_max_compression": last in kept and min(kept[last].values()) >= 1,
                 "rounds": finished[0]["rounds"], "precision": finished[0]["precision"], "kept_per_layer": kept,
                 "seconds": sum(p["seconds"] for p in finished)}
        for key in ("score_s", "select_s"):
            if key in finished[0]:
                entry[key] = sum(p[key] for p in finished)
        out["methods"][method] = entry
    return out
