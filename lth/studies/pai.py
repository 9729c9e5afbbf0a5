"""`lth pai`: prune at init with each method (and its sanity checks) to each compression of
`pai.compression` — one ratio, or a comma list for a sweep — then train every mask with the core
loop. Run directory: config.json, summary.json (`arms`: one entry per method × check × compression),
arms/<method>[+<check>]@10^<x>/ (final state, metrics.json), accuracy_vs_compression.png. Every arm
is saved when done and skipped on a rerun; methods, checks and compressions are not part of the
run's identity, so adding some reuses the directory."""
from __future__ import annotations

import math

import jax

from lth.errors import UserError, check_choice
from lth.harness import paths
from lth.harness.run import BASE_SECTIONS, Command, init_variables, keys, random_init, train_arm
from lth.harness.rundir import read_json, write_json
from lth.harness.summary import arm_entry
from lth.models.zoo import family
from lth.options import options, split_list
from lth.pruning import at_init as pai
from lth.pruning import masks as M
from lth.pruning import prune as P
from lth.registry import SCORES
from lth.studies.lottery import check_pattern_fit, validate_pattern
from lth.studies.plots import accuracy_vs_compression
from lth.studies.tables import pai_table
from lth.training.loop import device_data

# This study's section of the config (the scores add their own options to it: lth/scores).
OPTIONS = {"pai": options(
    methods=("synflow,snip,grasp,magnitude,random", "comma list of scores (see lth/scores)"),
    compression=("10^1", "target: kept = total / compression; a ratio or 10^x, or a comma list (a sweep)"),
    rounds=(0, "score-and-prune rounds; 0 = method default (synflow 100, others 1)"),
    schedule=("exponential", "density per round: exponential | linear"),
    scope=("global", "global | layerwise | a layer-density distribution: uniform_plus, er, erk, smart_ratio "
                     "(lth/pruning/sparsity.py; ranked within layers at its densities: random + erk = random ERK)"),
    sanity=("", "comma list of shuffle | reinit | invert, each run beside its method"),
)}


def variants(cfg) -> list[tuple[str, str, str | None]]:
    """[(name, method, sanity check or None)] from pai.methods × ('' + pai.sanity)."""
    methods = split_list(cfg.pai.methods)
    checks = split_list(cfg.pai.sanity)
    if not methods:
        raise UserError("pai.methods is empty; allowed: a comma list of " + ", ".join(sorted(SCORES)))
    for m in methods:
        check_choice("pai.methods entry", m, SCORES)
    for c in checks:
        check_choice("pai.sanity entry", c, pai.SANITY)
    return [(m, m, None) for m in methods] + [(f"{m}+{c}", m, c) for m in methods for c in checks]


def validate(cfg) -> None:
    variants(cfg)
    pai.validate_options(cfg.pai)
    cs = pai.parse_compressions(cfg.pai.compression)
    nm = validate_pattern(cfg, ("pai.scope", cfg.pai.scope))
    if nm is not None and any(abs(c * nm[0] / nm[1] - 1.0) > 1e-4 for c in cs):
        raise UserError(f"pai.compression {cfg.pai.compression!r} with prune.pattern {cfg.prune.pattern!r}: the "
                        f"pattern keeps N/M of the weights; allowed: pai.compression={nm[1] / nm[0]:.6g}")


def prunable_sizes(s) -> list[int]:
    params, _ = jax.eval_shape(lambda: random_init(s, keys(s, "init")))
    return [math.prod(x.shape[1:]) for x, pr in zip(jax.tree.leaves(params), jax.tree.leaves(s.prunable)) if pr]


def check(s) -> list[float]:
    """Compression targets of the config, each checked against the model's max compression."""
    cs = pai.parse_compressions(s.cfg.pai.compression)
    for c in cs:
        pai.check_target(c, prunable_sizes(s), s.cfg.pai.scope)
    check_pattern_fit(s)
    return cs


COMMAND = Command("pai", BASE_SECTIONS + ("prune.prunable", "prune.structure", "prune.pattern", "pai"),
                  unhashed=("pai.methods", "pai.sanity", "pai.compression"), prefix="pai_",
                  validate=validate, check=check)


HELP = "prune at init to a target compression with each score, then train"
DESCRIPTION = ("Prune at init (pai.methods, pai.compression, pai.rounds, pai.sanity, ...) and train each mask; "
               "writes summary.json with per-layer densities and accuracies.")
PLOT_FILE = "accuracy_vs_compression.png"


def describe(s) -> str:
    return f"{s.cfg.model.name} on {s.cfg.data.name}, compression {s.cfg.pai.compression}, R={s.replicates}"


def table(summary) -> str:
    return pai_table(summary)


def plot(summary, path) -> str:
    return accuracy_vs_compression(summary, path)


def arm_name(name: str, compression: float) -> str:
    return f"{name}@10^{math.log10(compression):.4g}"


def run(s, run_dir: str, log=print) -> dict:
    cfg = s.cfg
    data = device_data(s.trainer, s.dataset)
    params, ms = init_variables(s, keys(s, "init"))
    summary = {"config": read_json(paths.config(run_dir))["config"], "arms": []}
    for compression in check(s):
        found = {}   # method → its masks [R] at this compression (reinit and shuffle start from them)
        for name, method, sanity in variants(cfg):
            arm = arm_name(name, compression)
            adir = paths.named_arm(run_dir, arm)
            done = paths.done(adir)
            if done:
                masks = M.ones_like(params)   # train_arm loads the finished arm (its masks included)
            elif sanity in ("reinit", "shuffle") and method in found:
                masks = found[method] if sanity == "reinit" else _shuffled(s, found[method])
            else:
                masks = _masks(s, method, sanity, params, ms, 1.0 / compression)
            # a random (not pretrained) net
            p, m = random_init(s, keys(s, "reinit")) if sanity == "reinit" else (params, ms)
            state, rows = train_arm(s, adir, p, m, masks, 0, data, label=arm)
            if sanity is None:
                found[method] = state.masks
            e = arm_entry(rows, arm=arm, method=method, sanity=sanity, compression=compression,
                          compression_log10=math.log10(compression))
            summary["arms"].append(e)
            acc = f"{e['test_accuracy']:.4f}" if "test_accuracy" in e else "diverged"
            log(f"{arm:<28} density {e['density']:.5f}  test acc {acc}")
            write_json(paths.summary(run_dir), summary)
    return summary


def _shuffled(s, masks):
    """Each replicate's masks shuffled layer by layer with its own `shuffle` key (with prune.pattern,
    within each group of M: the mask stays N:M)."""
    ks = keys(s, "shuffle")
    return M.stack([P.shuffle(M.index(masks, r), s.prunable, ks[r], pattern=s.cfg.prune.pattern)
                    for r in range(s.replicates)])


def _masks(s, method, sanity, params, ms, density):
    p = s.cfg.pai
    rounds = p.rounds or pai.default_rounds(method)
    score_keys = keys(s, "pai_score")
    order = s.prunable_order
    pattern = s.cfg.prune.pattern   # N:M: the density is N/M (validated: pai.compression = M/N)
    out = []
    for r in range(s.replicates):
        v = {"params": M.index(params, r), **M.index(ms, r)}
        m = pai.prune_at_init(s.scorer(method, v), v, s.prunable, None if pattern else density, rounds=rounds,
                              schedule=p.schedule, scope=p.scope, rng=score_keys[r], invert=sanity == "invert",
                              order=order, resnet=family(s.cfg.model.name).residual,
                              units=s.cfg.prune.structure == "units", pattern=pattern)
        out.append(m)
    return _shuffled(s, M.stack(out)) if sanity == "shuffle" else M.stack(out)
