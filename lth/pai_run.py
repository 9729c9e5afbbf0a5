"""`lth pai`: prune at init to a target compression with each method (and its sanity checks), then
train each mask with the core loop. Run directory: config.json, summary.json,
methods/<method>[+<check>]/ (final state, metrics.json), resumable like IMP levels."""
from __future__ import annotations

import math
import os

import jax

from lth import masks as M, pai, prune as P
from lth.errors import UserError, check_choice
from lth.experiment import read_json, write_json
from lth.fit import device_data
from lth.lottery import init_variables, keys, level_entry, random_init, train_arm
from lth.scores import SCORES


def variants(cfg) -> list[tuple[str, str, str | None]]:
    """[(name, method, sanity check or None)] from pai.methods × ('' + pai.sanity)."""
    methods = [m.strip() for m in cfg.pai.methods.split(",") if m.strip()]
    checks = [c.strip() for c in cfg.pai.sanity.split(",") if c.strip()]
    if not methods:
        raise UserError("pai.methods is empty; allowed: a comma list of " + ", ".join(sorted(SCORES)))
    for m in methods:
        check_choice("score", m, SCORES)
    for c in checks:
        check_choice("sanity check", c, pai.SANITY)
    check_choice("pai.schedule", cfg.pai.schedule, pai.SCHEDULES)
    check_choice("pai.scope", cfg.pai.scope, ("global", "layerwise"))
    if cfg.pai.rounds < 0:
        raise UserError(f"pai.rounds {cfg.pai.rounds} out of range; allowed: 0 (method default) or more")
    pai.parse_compression(cfg.pai.compression)
    return [(m, m, None) for m in methods] + [(f"{m}+{c}", m, c) for m in methods for c in checks]


def check(s) -> float:
    """Compression target of the config, checked against the model's max compression."""
    c = pai.parse_compression(s.cfg.pai.compression)
    params, _ = jax.eval_shape(lambda: random_init(s, keys(s, 0)))
    sizes = [math.prod(x.shape[1:]) for x, pr in zip(jax.tree.leaves(params), jax.tree.leaves(s.prunable)) if pr]
    pai.check_target(c, sizes, s.cfg.pai.scope)
    return c


def run(s, run_dir: str, log=print) -> dict:
    cfg = s.cfg
    compression = check(s)
    data = device_data(s.trainer, s.dataset)
    params, ms = init_variables(s, keys(s, 0))
    summary = {"config": read_json(os.path.join(run_dir, "config.json"))["config"],
               "compression": compression, "compression_log10": math.log10(compression), "methods": {}}
    for name, method, sanity in variants(cfg):
        adir = os.path.join(run_dir, "methods", name)
        masks = _masks(s, method, sanity, params, ms, 1.0 / compression) if not os.path.exists(
            os.path.join(adir, "metrics.json")) else M.ones_like(params)
        p, m = (random_init(s, keys(s, 100)) if sanity == "reinit" else (params, ms))  # a random (not pretrained) net
        _, rows = train_arm(s, adir, p, m, masks, 0, data, label=name)
        summary["methods"][name] = level_entry(0, rows)
        e = summary["methods"][name]
        log(f"{name:<22} density {e['density']:.5f}  test acc {e['test_accuracy']:.4f}")
        write_json(os.path.join(run_dir, "summary.json"), summary)
    return summary


def _masks(s, method, sanity, params, ms, density):
    p = s.cfg.pai
    rounds = p.rounds or pai.default_rounds(method)
    out = []
    for r in range(s.replicates):
        v = {"params": M.index(params, r), **M.index(ms, r)}
        scorer = s.scorer(method, v)
        m = pai.prune_at_init(scorer, v, s.prunable, density, rounds=rounds, schedule=p.schedule, scope=p.scope,
                              rng=keys(s, 400)[r], invert=sanity == "invert")
        if sanity == "shuffle":
            m = P.shuffle(m, s.prunable, keys(s, 500)[r])
        out.append(m)
    return M.stack(out)
