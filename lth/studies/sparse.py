"""`lth sparse`: pruning during training (GMP) and sparse training from scratch (static, SET, RigL)
at each density of `sparse.densities`, each layer's density from a distribution (lth/pruning/sparsity.py).

One arm per (method, distribution, density), each one training run of `train.duration` from the
run's init (keys 'init'); static, SET and RigL start from the same random mask at the
distribution's densities (keys 'sparse_mask'), GMP from the dense network; the mask rules are in
lth/pruning/sparse_train.py. Run directory: config.json, summary.json (`arms`), arms/<method>-<distribution>@<density>/
(final state with its masks, metrics.json with the arm's seconds), accuracy_vs_density.png. Every arm
is saved when done and skipped on a rerun; methods, distributions and densities are not part of
the run's identity, so adding some reuses the directory.
"""
from __future__ import annotations

import dataclasses
import re

import jax

from lth.errors import UserError, check_choice
from lth.harness import paths
from lth.harness.config import parse_duration
from lth.harness.run import BASE_SECTIONS, Command, init_variables, keys, random_init, train_arm
from lth.harness.rundir import read_json, write_json
from lth.harness.summary import arm_entry
from lth.models.zoo import family
from lth.options import options, split_list
from lth.pruning import masks as M
from lth.pruning import sparsity as SP
from lth.pruning.movement import Movement
from lth.pruning.nm import check_nm, parse_pattern
from lth.pruning.sparse_train import MaskUpdate, moves
from lth.pruning.supermask import Bernoulli, EdgePopup
from lth.registry import SPARSE_METHODS
from lth.studies.plots import sparse_accuracy_vs_density
from lth.studies.tables import sparse_table
from lth.training.loop import device_data

# This study's section of the config.
OPTIONS = {"sparse": options(
    methods=("gmp,static,set,rigl", "comma list: gmp (Zhu & Gupta) | static (random mask, fixed) | set | rigl | "
                                    "srste (N:M from scratch, sparse.pattern; one arm, not per density) | "
                                    "movement_hard (top-k of learned scores, per density) | movement_soft (σ(S) > τ "
                                    "with an l1 penalty; one arm per sparse.soft_lambdas, its density an outcome) | "
                                    "edgepopup (supermask: scores of frozen signed-constant weights, per density) | "
                                    "srigl (RigL with a constant fan-in per neuron and neuron ablation) | supermask "
                                    "(Zhou et al.'s Bernoulli supermask of frozen weights; one arm per "
                                    "sparse.supermask_biases, its density an outcome)"),
    distributions=("erk,uniform", "layer densities (lth/pruning/sparsity.py): uniform | uniform_plus | er | erk"),
    densities=("0.2,0.1,0.05", "final densities of the prunable weights, each in (0, 1)"),
    custom=("", "'LAYER=DENSITY,...': layers fixed at a density, outside the distribution's budget"),
    every=("100it", "ΔT: mask update interval (rigl flags maskupdate_frequency=100)"),
    begin=("0it", "t₀ / T_begin: first update step (rigl maskupdate_begin_step=0)"),
    end=("75%", "t₁ / T_end: last update step; N% = of training (RigL paper: 75%)"),
    alpha=(0.3, "SET/RigL drop fraction at t = 0, cosine-decayed to 0 at T_end (rigl drop_fraction=0.3)"),
    gmp_scope=("layerwise", "gmp: layerwise (each layer to its distribution density) | global (one |θ| ranking)"),
    pattern=("2:4", "srste: the N:M pattern (N kept of every M consecutive inputs of each prunable kernel)"),
    decay=(2e-4, "srste: λ of the sparse-refined gradient G + λ(1 − m)W (NM-sparsity's default)"),
    mask_lr=(1e-2, "movement: the scores' Adam learning rate (times the weights' schedule; emmental's default)"),
    soft_initial=(0.0, "movement_soft: the threshold τ on σ(S) at sparse.begin (Sanh et al.'s soft: 0)"),
    soft_final=(0.1, "movement_soft: τ from sparse.end on (Sanh et al.'s soft: 0.1)"),
    soft_lambdas=("400", "movement_soft: comma list of the l1 penalty's final weight λ (one arm each)"),
    supermask_biases=("0", "supermask: comma list of the mask scores' initial value (--sigmoid_bias; σ(0): half the "
                           "weights kept at the start), one arm each"),
    supermask_weights=("signed_constant", "supermask: the frozen weights: signed_constant (sign(W₀) · std(W₀), "
                                          "the paper's best) | init (W₀ as drawn)"),
    supermask_rescale=(True, "supermask: dynamic weight rescaling, numel / Σ mask per layer (--dynamic_scaling)"),
    gamma_sal=(0.3, "srigl: a neuron with fewer salient weights than γ·k₀ (γ < 1) or γ (γ >= 1) is ablated; 0 = never "
                    "(condensed-sparsity's min_salient_weights_per_neuron)"),
    no_ablation=("out/.*|classifier/.*", "srigl: regex of param paths never ablated (the reference protects its "
                                         "classifier)"),
)}


def _list(text: str) -> list[str]:
    return split_list(text)


def parse_densities(text: str) -> list[float]:
    out = []
    for item in _list(text):
        try:
            d = float(item)
        except ValueError:
            d = float("nan")
        if not 0.0 < d < 1.0:
            raise UserError(f"sparse.densities entry {item!r} out of range; "
                            f"allowed: numbers in (0, 1), e.g. 0.2,0.1,0.05")
        out.append(d)
    if not out:
        raise UserError("sparse.densities is empty; allowed: a comma list of densities in (0, 1)")
    return sorted(set(out), reverse=True)


def srste_pattern(cfg) -> tuple[int, int]:
    """(N, M) of sparse.pattern; a one-line UserError when it is not an N:M pattern."""
    nm = parse_pattern(cfg.sparse.pattern, "sparse.pattern")
    if nm is None:
        raise UserError(f"sparse.pattern {cfg.sparse.pattern!r}: srste trains an N:M pattern; allowed: N:M such as 2:4")
    return nm


def supermask_biases(cfg) -> list[float]:
    out = []
    for item in _list(cfg.sparse.supermask_biases):
        try:
            b = float(item)
        except ValueError:
            b = float("nan")
        if not -20.0 <= b <= 20.0:
            raise UserError(f"sparse.supermask_biases entry {item!r}: allowed: numbers in [-20, 20] (σ(bias) is the "
                            f"starting keep probability), e.g. 0")
        out.append(b)
    if not out:
        raise UserError("sparse.supermask_biases is empty; allowed: a comma list of initial scores, e.g. 0")
    return out


def soft_lambdas(cfg) -> list[float]:
    out = []
    for item in _list(cfg.sparse.soft_lambdas):
        try:
            lam = float(item)
        except ValueError:
            lam = float("nan")
        if not lam >= 0.0:
            raise UserError(f"sparse.soft_lambdas entry {item!r}: allowed: numbers >= 0, e.g. 400")
        out.append(lam)
    if not out:
        raise UserError("sparse.soft_lambdas is empty; allowed: a comma list of penalty weights, e.g. 400")
    return out


def arms(cfg) -> list[tuple[str, str, str, float]]:
    """[(arm name, method, distribution, density)], densest first; GMP with a global scope has one
    arm per density (no distribution)."""
    methods, dists = _list(cfg.sparse.methods), _list(cfg.sparse.distributions)
    if not methods:
        raise UserError(f"sparse.methods is empty; allowed: a comma list of {', '.join(SPARSE_METHODS.names())}")
    if not dists:
        raise UserError(f"sparse.distributions is empty; "
                        f"allowed: a comma list of {', '.join(SP.DISTRIBUTIONS.names())}")
    for m in methods:
        check_choice("sparse.methods entry", m, SPARSE_METHODS)
    for d in dists:
        check_choice("sparse.distributions entry", d, SP.DISTRIBUTIONS)
    out = []
    if "srste" in methods:   # one arm: the pattern fixes the density
        n, m = srste_pattern(cfg)
        out.append((f"srste-{n}of{m}", "srste", "nm", n / m))
    if "movement_soft" in methods:   # one arm per λ: the density is an outcome (recorded when trained)
        out += [(f"movement_soft-l1={lam:g}", "movement_soft", f"l1={lam:g}", 1.0) for lam in soft_lambdas(cfg)]
    if "supermask" in methods:   # one arm per initial score: the density is an outcome
        out += [(f"supermask-bias={b:g}", "supermask", f"bias={b:g}", 1.0) for b in supermask_biases(cfg)]
    for dens in parse_densities(cfg.sparse.densities):
        for m in methods:
            if m in ("srste", "movement_soft", "supermask"):
                continue
            if m in ("movement_hard", "edgepopup"):   # each layer keeps the same fraction of its scores
                out.append((f"{m}-uniform@{dens:g}", m, "uniform", dens))
                continue
            for dist in (["global"] if m == "gmp" and cfg.sparse.gmp_scope == "global" else dists):
                out.append((f"{m}-{dist}@{dens:g}", m, dist, dens))
    return out


def when(text: str, total: int, steps_per_epoch: int, what: str) -> int:
    """A step from '75%' (of training), '500it' or '2ep'."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", str(text))
    if m:
        return int(round(float(m.group(1)) / 100 * total))
    return parse_duration(text, steps_per_epoch, what)


def validate(cfg) -> None:
    if str(cfg.prune.pattern).strip():
        raise UserError(f"prune.pattern {cfg.prune.pattern!r} is IMP's and pruning at init's; allowed in lth sparse: "
                        f"'' (N:M from scratch: sparse.methods=srste with sparse.pattern)")
    arms(cfg)
    check_choice("sparse.gmp_scope", cfg.sparse.gmp_scope, ("layerwise", "global"))
    if not cfg.sparse.mask_lr > 0.0:
        raise UserError(f"sparse.mask_lr {cfg.sparse.mask_lr} out of range; allowed: a learning rate > 0")
    if not 0.0 <= cfg.sparse.soft_initial < 1.0 or not 0.0 < cfg.sparse.soft_final < 1.0:
        raise UserError(f"sparse.soft_initial {cfg.sparse.soft_initial} / sparse.soft_final {cfg.sparse.soft_final}: "
                        f"allowed: thresholds on σ(S) with 0 <= soft_initial < 1 and 0 < soft_final < 1")
    if not cfg.sparse.decay >= 0.0:
        raise UserError(f"sparse.decay {cfg.sparse.decay} out of range; allowed: λ >= 0")
    if not 0.0 < cfg.sparse.alpha <= 1.0:
        raise UserError(f"sparse.alpha {cfg.sparse.alpha} out of range; allowed: 0 < alpha <= 1")
    check_choice("sparse.supermask_weights", cfg.sparse.supermask_weights, ("signed_constant", "init"))
    SP.parse_custom(cfg.sparse.custom)


def schedule(s) -> tuple[int, int, int]:
    """(t₀, t₁, ΔT) in steps, checked against the training length."""
    c, spe = s.cfg.sparse, s.trainer.steps_per_epoch
    every = when(c.every, s.total, spe, "sparse.every")
    begin = when(c.begin, s.total, spe, "sparse.begin")
    end = when(c.end, s.total, spe, "sparse.end")
    if every < 1:
        raise UserError(f"sparse.every {c.every!r} is {every} steps; allowed: at least 1 step")
    if end >= s.total:
        raise UserError(f"sparse.end {c.end!r} = step {end} is not before the end of training (step {s.total}); "
                        f"allowed: {begin} < end < {s.total}")
    if not 0 <= begin < end:
        raise UserError(f"sparse.begin {c.begin!r} = step {begin} is not before sparse.end (step {end}); "
                        f"allowed: 0 <= begin < end")
    return begin, end, every


def layer_shapes(s) -> dict:
    """{path: shape} of the prunable leaves (one replicate), in network order (uniform_plus reads
    the first and the last)."""

    shapes = dict(zip(M.leaf_paths(s.param_shapes), (tuple(x.shape) for x in jax.tree.leaves(s.param_shapes))))
    return {p: shapes[p] for p in s.prunable_order}


def custom_map(s, shapes: dict) -> dict:
    """sparse.custom with each LAYER resolved to the prunable leaf paths it names (the path or its module)."""
    out = {}
    for name, d in SP.parse_custom(s.cfg.sparse.custom).items():
        hits = [p for p in shapes if re.fullmatch(name, p) or re.fullmatch(name, p.rsplit("/", 1)[0])]
        if not hits:
            raise UserError(f"sparse.custom layer {name!r} is not a prunable layer; allowed: {', '.join(shapes)}")
        out.update({p: d for p in hits})
    return out


def _valid_regex(text: str) -> bool:
    try:
        re.compile(text)
    except re.error:
        return False
    return True


def check(s) -> dict:
    """Every arm's layer densities and the schedule, checked before anything is trained."""
    schedule(s)
    shapes = layer_shapes(s)
    custom = custom_map(s, shapes)
    resnet = family(s.cfg.model.name).residual   # smart_ratio's ResNet formula
    c = s.cfg.sparse
    if "srigl" in _list(c.methods):
        if not _valid_regex(c.no_ablation):
            raise UserError(f"sparse.no_ablation {c.no_ablation!r} is not a regular expression; allowed: a regex of "
                            f"param paths, e.g. out/.*")
        if not c.gamma_sal >= 0:
            raise UserError(f"sparse.gamma_sal {c.gamma_sal} out of range; allowed: 0 (no ablation) or more")
    out = {}
    for name, method, dist, dens in arms(s.cfg):
        if method == "srste":
            n, m = srste_pattern(s.cfg)
            for p, shape in shapes.items():
                check_nm(n, m, shape[-2] if len(shape) >= 2 else 0, f" (sparse.pattern) for {p}")
            out[name] = {p: dens for p in shapes}
        elif method in ("movement_soft", "supermask"):   # every prunable layer scored; no target density
            out[name] = {p: 1.0 for p in shapes}
        else:
            out[name] = SP.densities(shapes, dens, "uniform" if dist == "global" else dist, custom, resnet)
    return out


COMMAND = Command("sparse", BASE_SECTIONS + ("prune.prunable", "sparse"),
                  unhashed=("sparse.methods", "sparse.distributions", "sparse.densities", "sparse.pattern",
                            "sparse.soft_lambdas", "sparse.supermask_biases"), prefix="sparse_",
                  validate=validate, check=check)

HELP = "prune during training (GMP) and train sparse from scratch (static, SET, RigL) at each density"
DESCRIPTION = ("Train every sparse.methods × sparse.distributions × sparse.densities arm (resumable; finished arms "
               "are skipped), print a table and write summary.json and accuracy_vs_density.png.")
PLOT_FILE = "accuracy_vs_density.png"


def describe(s) -> str:
    return (f"{s.cfg.model.name} on {s.cfg.data.name}, densities {s.cfg.sparse.densities}, "
            f"methods {s.cfg.sparse.methods}, R={s.replicates}")


def table(summary) -> str:
    return sparse_table(summary)


def plot(summary, path) -> str:
    return sparse_accuracy_vs_density(summary, path)


def mask_update(s, method: str, layer_density: dict, gmp_scope: str, dist: str = "") -> MaskUpdate:
    """The rule of one arm, its per-leaf densities in params-leaf order."""
    begin, end, every = schedule(s)
    params = jax.eval_shape(lambda: M.index(random_init(s, keys(s, "init"))[0], 0))
    dens = tuple(layer_density.get(p) for p in M.leaf_paths(params))
    if method == "supermask":   # lth/pruning/supermask.py Bernoulli: only the scores learn; fixed at the last step
        c = s.cfg.sparse
        rule = Bernoulli(tuple(d is not None for d in dens), float(dist.partition("=")[2]), c.supermask_weights,
                         rescale=bool(c.supermask_rescale))
        return MaskUpdate(method, dens, begin, end, every, fix=s.total - 1, rule=rule)
    if method == "edgepopup":   # lth/pruning/supermask.py: only the scores learn; the mask is fixed at the last step
        return MaskUpdate(method, dens, begin, end, every, fix=s.total - 1, rule=EdgePopup(dens))
    if method.startswith("movement"):   # lth/pruning/movement.py; the mask is fixed at the last step
        c, soft = s.cfg.sparse, method == "movement_soft"
        rule = Movement(tuple(d is not None for d in dens), soft,
                        c.soft_initial if soft else 1.0, c.soft_final if soft else next(d for d in dens if d),
                        begin, end, float(dist.partition("=")[2]) if soft else 0.0, float(c.mask_lr),
                        float(s.cfg.train.lr))
        return MaskUpdate(method, dens, begin, end, every, fix=s.total - 1, rule=rule)
    if method == "srste":   # dense weights, N:M forward; the mask is fixed at the last step
        pattern = srste_pattern(s.cfg)
        return MaskUpdate(method, dens, s.total - 1, s.total - 1, 1, pattern=pattern, decay=float(s.cfg.sparse.decay),
                          fix=s.total - 1)
    if method == "srigl":   # lth/pruning/srigl.py
        c = s.cfg.sparse
        protect = tuple(bool(re.fullmatch(c.no_ablation, p)) for p in M.leaf_paths(params))
        return MaskUpdate(method, dens, begin, end, every, float(c.alpha), gamma=float(c.gamma_sal), protect=protect)
    return MaskUpdate(method, dens, begin, end, every, float(s.cfg.sparse.alpha), gmp_scope)


def run(s, run_dir: str, log=print) -> dict:
    data = device_data(s.trainer, s.dataset)
    params, ms = init_variables(s, keys(s, "init"))
    layer_densities = check(s)
    summary = {"config": read_json(paths.config(run_dir))["config"], "arms": []}
    setups = {}   # one trainer (one compile) per SET / RigL rule: their steps read counts from the masks
    for name, method, dist, dens in arms(s.cfg):
        mu = mask_update(s, method, layer_densities[name], "global" if dist == "global" else "layerwise", dist)
        adir = paths.named_arm(run_dir, name)
        # the starting mask: one per (distribution, density), shared by static, SET and RigL
        start = M.ones_like(params) if paths.done(adir) else jax.jit(jax.vmap(mu.initial_masks))(
            params, jax.vmap(lambda k: jax.random.fold_in(k, _index(dist, dens)))(keys(s, "sparse_mask")))
        key = method if moves(method) else name
        if SPARSE_METHODS.get(method).update is None:   # a fixed mask: the plain masked step
            sa = s
        elif key not in setups:
            step_rule = dataclasses.replace(mu, density=tuple(None if d is None else 1.0 for d in mu.density)) \
                if moves(method) else mu
            sa = setups[key] = dataclasses.replace(s, trainer=dataclasses.replace(
                s.trainer, sparse=step_rule, tx=step_rule.wrap_tx(s.trainer.tx, s.trainer.schedule)))
        else:
            sa = setups[key]
        start_params = params if paths.done(adir) else jax.jit(jax.vmap(mu.start_params))(params)
        _, rows = train_arm(sa, adir, start_params, ms, start, 0, data, label=name)
        e = arm_entry(rows, arm=name, method=method, distribution=dist, target_density=dens,
                      seconds=read_json(paths.metrics(adir)).get("seconds"))
        if method in ("movement_soft", "supermask"):   # no target: its density is an outcome
            e["target_density"] = round(e["density"], 4)
        summary["arms"].append(e)
        acc = f"{e['test_accuracy']:.4f}" if "test_accuracy" in e else "diverged"
        log(f"{name:<24} density {e['density']:.4f}  test acc {acc}  ({e['seconds'] or 0:.1f} s)")
        write_json(paths.summary(run_dir), summary)
    return summary


def _index(dist: str, density: float) -> int:
    """A stable integer for (distribution, density): the starting mask's key index."""
    return (SP.DISTRIBUTIONS.names().index(dist) * 1_000_000 + int(round(density * 1e5)) if dist in SP.DISTRIBUTIONS
            else 0)
