"""`lth transfer`: tickets found on one task trained on another (Morcos et al. 2019, "One ticket to win
them all"; for BERT, Chen et al. 2020 and Gordon et al. 2020: do tickets found on the masked-LM
objective transfer to downstream tasks as well as each task's own?).

The config is the *target*: its model, data and training. `transfer.sources` names finished `lth
lottery` runs (NAME=RUN_DIR: the MLM run, each task's own run, a run on other data or with another
optimizer). For each source and each of `transfer.densities` the mask is, with `transfer.masks=level`, the
source's finished level at that density (its IMP ticket), or with `transfer.masks=oneshot` the
source's trained level 0 pruned in one shot to the density by the source's own rule (its
prune.score, prune.scope and prune.layer_fractions groups, each group at the density): every density
from one training of the source. Every prunable leaf of the target must be a leaf of the source's
masks with the same shape, matched by path (an MLM head or another classifier stays out). The
weights: `transfer.weights=source`, the source's rewind point (IMP's level_0/rewind); `trained`, the
source's trained weights of that level (level 0 for oneshot), masked — Gordon et al.'s "prune the
pre-trained (here: MLM-trained) model, then fine-tune"; both where path and shape match and the
target's `lottery.reinit` does not redraw them, the target's own init elsewhere; `target`, the
target's own init (e.g. its pretrained weights). The arm is trained with the target's recipe from
step 0.

Controls at each density, with the first source's per-layer counts: `random` (a random mask: each
layer's kept count at random positions) and `magnitude` (each layer keeps its largest-magnitude
weights of the target's init: for a pretrained model, the magnitude-of-pretrained-weights ticket).
`transfer.dense` adds the dense network. Replicate r of the target takes replicate r of a source
(r mod R of a source with fewer).

Run layout: RUN/arms/<source>-d<density>/, RUN/arms/<control>-d<density>/, RUN/arms/dense/; the
summary's rows, the table (rows: source; columns: density) and a plot.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lth.errors import UserError, check_choice
from lth.harness import checkpoint, paths
from lth.harness.run import BASE_SECTIONS, Command, init_variables, keys, setup, train_arm
from lth.harness.rundir import read_json, write_json
from lth.options import options, split_list
from lth.pruning import masks as M
from lth.pruning import prune as P
from lth.studies import plots
from lth.studies.compress import load_level, run_config
from lth.studies.lottery import COMMAND as LOTTERY
from lth.studies.lottery import imp_scores
from lth.training.loop import device_data

OPTIONS = {"transfer": options(
    sources=("", "comma list of NAME=RUN_DIR: finished `lth lottery` runs whose tickets are trained on this config"),
    densities=("0.5,0.3", "comma list of densities of the prunable weights: each source's finished level at that "
                          "density (within 0.005)"),
    controls=("random,magnitude", "comma list: random (random positions) | magnitude (largest weights of this "
                                  "config's init), both with the first source's per-layer counts ('' = none)"),
    weights=("source", "source (the source run's rewind weights where paths and shapes match) | trained (its trained "
                       "weights of that level, masked: prune-then-fine-tune) | target (this config's own init, e.g. "
                       "its pretrained weights)"),
    masks=("level", "level (the source's finished level at each density: its IMP ticket) | oneshot (its trained "
                    "level 0 pruned in one shot to each density by its own prune.score / scope / layer_fractions)"),
    dense=(True, "also train the dense network from this config's init"),
)}

HELP = "tickets of other runs (another task, the MLM objective, other data or optimizer) trained on this config"
DESCRIPTION = ("Train the tickets of finished `lth lottery` runs (transfer.sources) at each density "
               "(transfer.densities) with this config's task and recipe, beside random and magnitude masks of "
               "the same per-layer counts and the dense network.")
CONTROLS = ("random", "magnitude")
WEIGHTS = ("source", "trained", "target")
MASKS = ("level", "oneshot")
TOLERANCE = 0.005
PLOT_FILE = "transfer.png"


def parse_sources(text: str) -> list[tuple[str, str]]:
    out = []
    for item in split_list(text):
        name, sep, run_dir = item.partition("=")
        name, run_dir = name.strip(), run_dir.strip()
        if not sep or not name or not run_dir or "/" in name or name in ("dense", *CONTROLS):
            raise UserError(f"transfer.sources entry {item!r}: allowed: NAME=RUN_DIR (NAME without '/', not dense, "
                            f"random or magnitude)")
        if name in dict(out):
            raise UserError(f"transfer.sources names {name!r} twice; allowed: one run per name")
        out.append((name, run_dir))
    if not out:
        raise UserError("transfer.sources is empty; allowed: a comma list of NAME=RUN_DIR (`lth lottery` runs)")
    return out


def parse_densities(text: str) -> list[float]:
    out = []
    for item in split_list(text):
        try:
            d = float(item)
        except ValueError:
            d = float("nan")
        if not 0.0 < d <= 1.0:
            raise UserError(f"transfer.densities entry {item!r} out of range; allowed: densities in (0, 1]")
        out.append(d)
    if not out:
        raise UserError("transfer.densities is empty; allowed: a comma list of densities, e.g. 0.5,0.3")
    return out


def validate(cfg) -> None:
    t = cfg.transfer
    parse_sources(t.sources)
    parse_densities(t.densities)
    for c in split_list(t.controls):
        check_choice("transfer.controls entry", c, CONTROLS)
    check_choice("transfer.weights", t.weights, WEIGHTS)
    check_choice("transfer.masks", t.get("masks", "level"), MASKS)


COMMAND = Command("transfer", BASE_SECTIONS + ("prune", "lottery", "transfer"),
                  unhashed=("transfer.sources", "transfer.densities", "transfer.controls", "transfer.dense"),
                  validate=validate, check=lambda s: plan(s))


# ----- the sources ----------------------------------------------------------------------------------
def source_levels(run_dir: str) -> dict[int, float]:
    """{finished level: its mean density of the prunable weights} from the run's summary."""
    path = paths.summary(run_dir)
    if not os.path.isdir(run_dir) or not os.path.exists(path):
        raise UserError(f"transfer.sources: {run_dir!r} is not a finished `lth lottery` run (no summary.json); "
                        f"allowed: a run directory of `lth lottery`")
    summary = read_json(path, redo=run_dir)
    done = set(paths.finished_levels(run_dir))
    return {int(e["level"]): float(e["density"]) for e in summary.get("levels", []) if int(e["level"]) in done}


def level_at(run_dir: str, density: float) -> int:
    levels = source_levels(run_dir)
    near = [lv for lv, d in levels.items() if abs(d - density) <= TOLERANCE]
    if not near:
        have = ", ".join(f"{d:.4f} (level {lv})" for lv, d in sorted(levels.items())) or "none"
        raise UserError(f"transfer.densities entry {density:g}: {run_dir} has no finished level at that density; "
                        f"allowed: {have}")
    return near[0]


def _flat(tree) -> dict:
    return traverse_util.flatten_dict(jax.tree.map(np.asarray, tree), sep="/")


_SOURCES: dict = {}


def source_setup(run_dir: str):
    """The source run's own Setup (its model, e.g. with an MLM head, and data), built once."""
    key = os.path.abspath(run_dir)
    if key not in _SOURCES:
        cfg = run_config(run_dir)
        cfg.run.progress = False
        _SOURCES[key] = setup(cfg, LOTTERY)
    return _SOURCES[key]


def check_fit(s, run_dir: str) -> None:
    """Every prunable leaf of the target is a leaf of the source's params with the same shape."""
    shapes = {p: tuple(x.shape) for p, x in traverse_util.flatten_dict(source_setup(run_dir).param_shapes,
                                                                        sep="/").items()}
    prunable = traverse_util.flatten_dict(s.prunable, sep="/")
    bad = []
    for p, x in traverse_util.flatten_dict(s.param_shapes, sep="/").items():
        if prunable[p] and shapes.get(p) != tuple(x.shape):
            bad.append(f"{p} {tuple(x.shape)}" + (f" (source: {shapes[p]})" if p in shapes else " (not in the source)"))
    if bad:
        raise UserError(f"transfer.sources: the masks of {run_dir} do not fit this config's prunable weights: "
                        f"{', '.join(bad[:6])}"
                        + (f" (+{len(bad) - 6} more)" if len(bad) > 6 else ""))


def oneshot_masks(src, final, density: float):
    """The source's trained network pruned in one shot to `density` by its own rule: its IMP score,
    global or layerwise, each prune.layer_fractions group (its own ranking) at the same density."""
    c = src.cfg.prune
    if c.pattern or c.scope not in ("global", "layerwise") or c.structure != "weights":
        raise UserError(f"transfer.masks=oneshot: the source prunes with prune.scope={c.scope!r}, "
                        f"prune.pattern={c.pattern!r}, prune.structure={c.structure!r}; allowed: global or layerwise "
                        f"unstructured weights (or transfer.masks=level)")
    scores = imp_scores(src, final.params, final.model_state, final.masks, 1)
    groups = [(p, 1.0 - density if f > 0 else 0.0) for p, f in P.parse_layer_fractions(c.layer_fractions)]
    return P.prune_replicates(scores, final.masks, src.prunable, density=density, layer_fractions=groups,
                              layerwise=c.scope == "layerwise")


def read_source(run_dir: str, level: int, weights: str, density: float | None = None):
    """(flat masks {path: [R, ...]}, flat params or None) of a source run's level, read into the
    source's own shapes (its model, e.g. an MLM head). `density`: the masks pruned in one shot from
    the level's trained weights (transfer.masks=oneshot). `weights`: source (the rewind point) |
    trained (the level's trained weights, masked) | target (none)."""
    src = source_setup(run_dir)
    final = load_level(src, run_dir, level)
    masks = final.masks if density is None else oneshot_masks(src, final, density)
    if weights == "trained":
        return _flat(masks), _flat(M.apply(final.params, masks))
    params = None
    if weights == "source":
        like = {"params": final.params, "model_state": final.model_state}
        if not checkpoint.exists(paths.rewind(run_dir)):
            raise UserError(f"{run_dir} has no rewind point (level_0/rewind); allowed with transfer.weights=target")
        params = _flat(checkpoint.load(paths.rewind(run_dir), like)["params"])
    return _flat(masks), params


def transferred(s, src_masks: dict, src_params: dict | None, init_params):
    """(params [R], masks [R]) of the target: the source's masks on the prunable leaves (path and
    shape matched), all-kept elsewhere; with `src_params`, the source's weights where they match."""
    r = s.replicates
    tgt_p = _flat(init_params)
    prunable = traverse_util.flatten_dict(s.prunable, sep="/")
    redrawn = (traverse_util.flatten_dict(M.prunable_tree(M.index(init_params, 0), s.cfg.lottery.reinit), sep="/")
               if s.cfg.lottery.reinit else {})
    masks, params, bad = {}, {}, []
    for p, v in tgt_p.items():
        src = src_masks.get(p)
        if prunable[p]:
            if src is None or src.shape[1:] != v.shape[1:]:
                bad.append(f"{p} {tuple(v.shape[1:])}" + (f" (source: {tuple(src.shape[1:])})" if src is not None
                                                          else " (not in the source)"))
                continue
            masks[p] = np.stack([src[i % len(src)] for i in range(r)])
        else:
            masks[p] = np.ones(v.shape, bool)
        w = None if src_params is None or redrawn.get(p) else src_params.get(p)
        params[p] = (np.stack([w[i % len(w)] for i in range(r)]) if w is not None and w.shape[1:] == v.shape[1:]
                     else v)
    if bad:
        raise UserError(f"transfer.sources: the source's masks do not fit this config's prunable weights: "
                        f"{', '.join(bad[:6])}"
                        + (f" (+{len(bad) - 6} more)" if len(bad) > 6 else ""))
    unflat = lambda d: traverse_util.unflatten_dict(d, sep="/")  # noqa: E731
    return (jax.tree.map(jnp.asarray, unflat(params)), jax.tree.map(jnp.asarray, unflat(masks)))


def magnitude_masks(s, params, like_masks):
    """Each prunable layer keeps its largest-|w| entries of `params`, as many as `like_masks` keeps."""
    def one(w, m, on):
        if not on:
            return np.ones(m.shape, bool)
        out = []
        for i in range(w.shape[0]):
            k = int(m[i].sum())
            flat = np.abs(np.asarray(w[i], np.float64)).ravel()
            keep = P.keep_top_k_host(flat, np.ones(flat.shape, bool), k)
            out.append(np.asarray(keep).reshape(m.shape[1:]))
        return np.stack(out)
    return jax.tree.map(lambda w, m, on: jnp.asarray(one(np.asarray(w), np.asarray(m), on)), params, like_masks,
                        s.prunable)


def plan(s) -> list[tuple[str, str, float, int]]:
    """[(source name, run dir, density, level)]: every source level found before anything is trained."""
    out = []
    for name, run_dir in parse_sources(s.cfg.transfer.sources):
        source_levels(run_dir)   # a finished run, before its config is read
        check_fit(s, run_dir)
        oneshot = s.cfg.transfer.get("masks", "level") == "oneshot"
        if oneshot and 0 not in source_levels(run_dir):
            raise UserError(f"transfer.masks=oneshot: {run_dir} has no finished level 0; allowed: a run whose level 0 "
                            f"(the trained dense network) is finished")
        for d in parse_densities(s.cfg.transfer.densities):
            out.append((name, run_dir, d, 0 if oneshot or d >= 1.0 else level_at(run_dir, d)))
    return out


def describe(s) -> str:
    c = s.cfg
    return (f"{c.model.name} on {c.data.name}; tickets of {', '.join(n for n, _ in parse_sources(c.transfer.sources))} "
            f"at densities {c.transfer.densities}, R={s.replicates}")


def _row(name, kind, density, rows) -> dict:
    acc = [r["test_accuracy"] for r in rows]
    out = {"name": name, "kind": kind, "target_density": density, "test_accuracy": float(np.mean(acc)),
           "test_accuracy_std": float(np.std(acc)), "replicates": rows}
    out["density"] = float(np.mean([r.get("density", density) for r in rows]))
    return out


def run(s, run_dir: str, log=print) -> dict:
    cfg = s.cfg
    sources = dict(parse_sources(cfg.transfer.sources))
    if os.path.exists(paths.summary(run_dir)):   # more sources or densities reuse the arms: a name keeps its run
        before = read_json(paths.summary(run_dir), redo=run_dir).get("sources", {})
        moved = {n: (before[n], d) for n, d in sources.items() if n in before and
                 os.path.abspath(before[n]) != os.path.abspath(d)}
        if moved:
            n, (old, new) = next(iter(moved.items()))
            raise UserError(f"transfer.sources names {n!r} {new!r}, but this run directory trained {n!r} from {old!r}; "
                            f"allowed: the same run for a name (or a new name, or another --run-dir)")
        sources = {**before, **sources}
    data = device_data(s.trainer, s.dataset)
    init_params, init_ms = init_variables(s, keys(s, "init"))
    rows = []

    def summary():
        out = {"config": json.loads(cfg.to_json()), "task": cfg.data.name, "sources": sources,
               "densities": parse_densities(cfg.transfer.densities), "rows": rows}
        write_json(paths.summary(run_dir), out)
        return out

    def arm(name, kind, density, params, masks):
        adir = paths.named_arm(run_dir, name)
        _, out = train_arm(s, adir, params, init_ms, masks, 0, data, label=name)
        dens = np.asarray(M.density(masks, s.prunable, axis=0)[0]) if density < 1.0 else np.ones(s.replicates)
        for r, d in zip(out, dens):
            r["density"] = float(d)
        row = _row(name.rsplit("-d", 1)[0] if kind != "dense" else name, kind, density, out)
        rows.append(row)
        log(f"{name:<24} density {row['density']:.4f}  test acc {row['test_accuracy']:.4f}")
        summary()

    if cfg.transfer.dense:
        arm("dense", "dense", 1.0, init_params, M.ones_like(init_params))
    first = {}
    oneshot = cfg.transfer.get("masks", "level") == "oneshot"
    for name, src_dir, density, level in plan(s):
        src_masks, src_params = read_source(src_dir, level, cfg.transfer.weights,
                                            density if oneshot and density < 1.0 else None)
        params, masks = transferred(s, src_masks, src_params, init_params)
        first.setdefault(density, masks)
        arm(f"{name}-d{density:g}", "source", density, params, masks)
    for density, masks in first.items():
        for c in split_list(cfg.transfer.controls):
            m = (s.shuffle(masks, keys(s, "transfer", int(round(density * 1e6)))) if c == "random"
                 else magnitude_masks(s, init_params, masks))
            arm(f"{c}-d{density:g}", "control", density, init_params, m)
    return summary()


def table(summary) -> str:
    dens = summary["densities"]
    by = {}
    for r in summary["rows"]:
        by.setdefault(r["name"], {})[r["target_density"]] = r
    lines = [f"test accuracy % on {summary.get('task', 'the target')} (mean ± std over replicates)", "",
             "| ticket source | " + " | ".join(f"density {100 * d:g} %" for d in dens) + " |",
             "|---|" + "---|" * len(dens)]
    for name, cells in by.items():
        if name == "dense":
            r = cells[1.0]
            lines.append(f"| dense | {100 * r['test_accuracy']:.2f} ± {100 * r['test_accuracy_std']:.2f} |"
                         + " |" * (len(dens) - 1))
            continue
        lines.append(f"| {name} | " + " | ".join(
            f"{100 * cells[d]['test_accuracy']:.2f} ± {100 * cells[d]['test_accuracy_std']:.2f}" if d in cells else ""
            for d in dens) + " |")
    return "\n".join(lines)


def plot(summary, path) -> str:
    return plots.transfer(summary, path)
