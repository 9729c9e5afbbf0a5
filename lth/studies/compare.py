"""`lth compare`: every family of pruning on equal terms, for one config and a list of densities.

Pruning after training (IMP, rewinding to `lottery.rewind`, levels until the sparsest density, with
its reinit control), at init (each score of `compare.pai`, `pai.*` options) and during or
throughout training (`compare.sparse` with `compare.distributions`, `sparse.*` options), every arm
with the same `train.*` — the same epochs. The arms are those of `lth lottery`, `lth pai` and
`lth sparse`, in their own run directories under `run.out` with their own identities: finished
arms of those studies with the same identity are reused as they are, and what is missing is run
there (resumable). This study writes only its summary (`runs`: the three directories; `methods`:
family, cost in training steps and points per method; `dense`) and its table and plot.
After training, the one-shot surgeons of `compare.oneshot` (`lth oneshot`: magnitude, OBS, and Wanda /
SparseGPT for Dense-only networks) prune IMP's trained dense network (level 0) to each density, with
`compare.oneshot_recovery` of fine-tuning; their results live under the lottery run's oneshot/.
Cost: one training is `train.duration` steps; IMP level L costs L + 1 trainings (L when it rewinds
to k > 0 counts the steps from k), its reinit control the same; a one-shot surgeon one plus its
recovery; every other method one (scoring and mask updates are not counted).
"""
from __future__ import annotations

import copy
import dataclasses
import math

import jax

from lth.errors import UserError, check_choice
from lth.harness import paths
from lth.harness.run import BASE_SECTIONS, Command
from lth.harness.run import validate as validate_base
from lth.harness.rundir import RunLock, check_run_dir, open_run_dir, read_json, write_json
from lth.options import options, split_list
from lth.pruning import masks as M
from lth.registry import DISTRIBUTIONS, SCORES, SPARSE_METHODS, STUDIES
from lth.studies import oneshot
from lth.studies.plots import compare_plot
from lth.studies.sparse import parse_densities
from lth.studies.tables import compare_table

# This study's section of the config.
OPTIONS = {"compare": options(
    densities=("0.2,0.1,0.05", "target densities of the prunable weights, each in (0, 1)"),
    imp=(True, "IMP (prune.*, lottery.rewind) to the sparsest density, with its reinit control"),
    pai=("synflow,snip,grasp,force,prospr,random", "prune-at-init scores (pai.* options apply; '' = none)"),
    sparse=("gmp,static,set,rigl", "pruning during / sparse training (sparse.* options apply; '' = none)"),
    distributions=("erk", "the sparse methods' layer densities (comma list)"),
    oneshot=("magnitude,obs", "one-shot surgeons on IMP's trained dense network (level 0) at each density "
                              "(lth oneshot; oneshot.* options apply; scope from prune.scope; '' = none; needs "
                              "compare.imp)"),
    oneshot_recovery=("0it", "their recovery fine-tune (lth oneshot's oneshot.recovery); counted in their cost"),
)}


def _list(text: str) -> list[str]:
    return split_list(text)


def densities(cfg) -> list[float]:
    try:
        return parse_densities(cfg.compare.densities)
    except UserError as e:
        raise UserError(str(e).replace("sparse.densities", "compare.densities")) from None


MAX_LEVELS = 10_000   # IMP levels compare.imp may train to reach its sparsest density


def imp_levels(cfg) -> int:
    """IMP levels whose density reaches the sparsest target: (1 − f)^L ≤ d (prune.of = remaining),
    1 − L·f ≤ d (original); one more where layer overrides prune some layers slower."""
    f, d = cfg.prune.fraction, min(densities(cfg))
    if not 0.0 < f < 1.0:
        raise UserError(f"prune.fraction {f} out of range; allowed: 0 < fraction < 1")
    per_level = f if cfg.prune.of == "original" else -math.log(1 - f)   # 0 when 1 - f rounds to 1
    need = (1 - d) / per_level if cfg.prune.of == "original" else (-math.log(d) / per_level if per_level else math.inf)
    if not need <= MAX_LEVELS:
        raise UserError(f"prune.fraction {f} needs {need:.3g} IMP levels to reach density {d:g}; "
                        f"allowed: at most {MAX_LEVELS} levels (a larger prune.fraction)")
    lv = math.ceil((1 - d) / f) if cfg.prune.of == "original" else math.ceil(math.log(d) / math.log(1 - f))
    return lv + (1 if cfg.prune.layer_fractions else 0)


def sub_configs(cfg) -> dict:
    """{study: its config}: this config with the study's own keys set from `compare.*`."""
    out = {}
    c = cfg.compare
    if c.imp:
        lc = copy.deepcopy(cfg)
        lc.lottery.levels = imp_levels(cfg)
        lc.lottery.controls = "reinit"
        out["lottery"] = lc
    if _list(c.pai):
        pc = copy.deepcopy(cfg)
        pc.pai.methods = c.pai
        pc.pai.sanity = ""
        pc.pai.compression = ",".join(f"{1 / d:.10g}" for d in densities(cfg))
        out["pai"] = pc
    if _list(c.sparse):
        sc = copy.deepcopy(cfg)
        sc.sparse.methods = c.sparse
        sc.sparse.distributions = c.distributions
        sc.sparse.densities = c.densities
        out["sparse"] = sc
    return out


def oneshot_overrides(cfg) -> list[str]:
    """The `lth oneshot` settings of the one-shot family (on the lottery run's level 0)."""
    sparsities = ",".join(f"{1 - d:.10g}" for d in densities(cfg))
    return [f"oneshot.methods={cfg.compare.oneshot}", f"oneshot.sparsities={sparsities}",
            "oneshot.patterns=", f"oneshot.scope={'global' if cfg.prune.scope == 'global' else 'layer'}",
            f"oneshot.recovery={cfg.compare.oneshot_recovery}", "oneshot.steps=1", "oneshot.speed=False"]


def validate(cfg) -> None:
    densities(cfg)
    for m in _list(cfg.compare.oneshot):
        check_choice("compare.oneshot method", m, oneshot.METHODS)
    if _list(cfg.compare.oneshot) and not cfg.compare.imp:
        raise UserError(f"compare.oneshot {cfg.compare.oneshot!r} prunes IMP's trained dense network; allowed: "
                        f"compare.imp = True, or compare.oneshot = ''")
    for m in _list(cfg.compare.pai):
        check_choice("compare.pai score", m, SCORES)
    for m in _list(cfg.compare.sparse):
        check_choice("compare.sparse method", m, SPARSE_METHODS)
    for d in _list(cfg.compare.distributions):
        check_choice("compare.distributions entry", d, DISTRIBUTIONS)
    subs = sub_configs(cfg)
    if not subs:
        raise UserError("compare has nothing to run; allowed: compare.imp = True or a score in compare.pai or a "
                        "method in compare.sparse")
    for name, sub in subs.items():
        validate_base(sub, STUDIES.get(name).COMMAND)


def plan(s) -> dict:
    """{study: (setup, run directory)}: each study's checks done and its directory checked (a run
    of another config there is refused) before anything is written; the data are shared."""
    out = {}
    for name, sub in sub_configs(s.cfg).items():
        cmd = STUDIES.get(name).COMMAND
        ss = dataclasses.replace(s, cfg=sub, _scorers={})
        if cmd.check is not None:
            try:
                cmd.check(ss)
            except UserError as e:   # a target beyond the network's max compression comes from compare.densities
                if "max compression" not in str(e):
                    raise
                raise UserError(f"compare.densities {s.cfg.compare.densities!r} ({name}): {e}") from None
        d = cmd.run_dir(sub)
        check_run_dir(d, sub, cmd)
        out[name] = (ss, d)
    if "lottery" in out and _list(s.cfg.compare.oneshot):   # the one-shot surgeons' checks on the network's shapes
        shapes = out["lottery"][0].param_shapes
        kernels = {p: leaf for p, leaf, on in zip(M.leaf_paths(shapes), jax.tree.leaves(shapes),
                                                  jax.tree.leaves(s.prunable)) if on}
        scope = "global" if s.cfg.prune.scope == "global" else "layer"
        for method in _list(s.cfg.compare.oneshot):
            for d in densities(s.cfg):
                try:
                    oneshot.check(method, 1 - d, None, kernels, True, s.cfg.oneshot.blocksize,
                                  s.cfg.oneshot.fisher_block, scope)
                except UserError as e:   # the layers are the model's: name it
                    raise UserError(f"compare.oneshot {method!r} on model.name {s.cfg.model.name!r} (model.width "
                                    f"{s.cfg.model.width:g}): {e}") from None
        s.duration(s.cfg.compare.oneshot_recovery, "compare.oneshot_recovery")
    return out


COMMAND = Command("compare", BASE_SECTIONS + ("prune", "lottery.rewind", "lottery.rewind_mode", "pai", "sparse",
                                              "compare"),
                  unhashed=("compare.densities", "compare.imp", "compare.pai", "compare.sparse",
                            "compare.distributions", "compare.oneshot", "compare.oneshot_recovery",
                            "pai.methods", "pai.sanity", "pai.compression", "sparse.methods", "sparse.distributions",
                            "sparse.densities"),
                  prefix="compare_", validate=validate, check=plan)

HELP = "compare every family (IMP, prune at init, sparse training) at the same training budget"
DESCRIPTION = ("Run (or reuse) the `lth lottery`, `lth pai` and `lth sparse` arms of this config at compare.densities; "
               "print one table (accuracy and cost per method and density), write summary.json and compare.png.")
PLOT_FILE = "compare.png"


def describe(s) -> str:
    return f"{s.cfg.model.name} on {s.cfg.data.name}, densities {s.cfg.compare.densities}, R={s.replicates}"


def table(summary) -> str:
    return compare_table(summary)


def plot(summary, path) -> str:
    return compare_plot(summary, path)


def _point(e, target=None) -> dict:
    keys = ("density", "test_accuracy", "test_accuracy_std")
    return {**{k: e[k] for k in keys if k in e}, "target_density": target,
            "replicates": [r.get("test_accuracy") for r in e.get("replicates", [])]}


def run(s, run_dir: str, log=print) -> dict:
    total, cfg = s.total, s.cfg
    steps_k = s.duration(cfg.lottery.rewind, "lottery.rewind") if cfg.lottery.rewind_mode == "weights" else 0
    summary = {"config": read_json(paths.config(run_dir))["config"], "runs": {}, "methods": {}, "train_steps": total}
    for name, (ss, d) in plan(s).items():
        mod = STUDIES.get(name)
        log(f"{name}: {d}")
        lock = open_run_dir(d, ss.cfg, mod.COMMAND)
        try:
            sub = mod.run(ss, d, log=lambda line: log("  " + line))
        finally:
            lock.release()
        summary["runs"][name] = d
        if name == "lottery":
            summary["dense"] = _point(sub["levels"][0])
            for label, rows in (("imp", sub["levels"]), ("imp_reinit", sub["controls"].get("reinit", []))):
                summary["methods"][label] = {
                    "family": "imp", "points": [
                        {**_point(e), "level": e["level"], "cost_steps": total + e["level"] * (total - steps_k)}
                        for e in rows if e["level"] > 0]}
        elif name == "pai":
            for e in sub["arms"]:
                m = summary["methods"].setdefault(e["method"], {"family": "pai", "points": []})
                m["points"].append({**_point(e, 1 / e["compression"]), "cost_steps": total})
        else:
            for e in sub["arms"]:
                m = summary["methods"].setdefault(f"{e['method']}-{e['distribution']}",
                                                  {"family": "sparse", "points": []})
                m["points"].append({**_point(e, e["target_density"]), "cost_steps": total,
                                    "seconds": e.get("seconds")})
        write_json(paths.summary(run_dir), summary)
        if name == "lottery" and _list(cfg.compare.oneshot):
            _oneshot(d, oneshot_overrides(cfg), summary, total, s.duration(cfg.compare.oneshot_recovery,
                                                                           "compare.oneshot_recovery"), log)
            write_json(paths.summary(run_dir), summary)
    return summary


def _oneshot(lottery_dir, overrides, summary, total, recovery, log) -> None:
    """The one-shot family: `lth oneshot` on the lottery run's level 0, its rows as points."""
    job, out = oneshot.from_run(lottery_dir, overrides, 0, progress=False)
    log(f"oneshot: {out}")
    lock = RunLock(out)   # a results folder inside the lottery run, as `lth oneshot` locks it
    try:
        res = oneshot.run(job, out, log=lambda line: log("  " + line))
    finally:
        lock.release()
    for r in res["rows"]:
        m = summary["methods"].setdefault(f"oneshot-{r['method']}", {"family": "oneshot", "points": []})
        acc = "recovered_accuracy" if "recovered_accuracy" in r else "test_accuracy"
        reps = r.get("recovered_replicates" if acc == "recovered_accuracy" else "replicates", [])
        m["points"].append({"density": r["density"], "test_accuracy": r[acc], "test_accuracy_std": r[acc + "_std"],
                            "target_density": round(1 - float(r["target"]), 10), "replicates": reps,
                            "cost_steps": total + recovery})
