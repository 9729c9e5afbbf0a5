"""Iterative magnitude pruning with rewinding, and its controls (reinit, random prune, shuffle).

Level 0 trains the dense network from init and records the rewind weights at step k. Level L
prunes `prune.fraction` of the surviving weights by score (magnitude of level L-1's trained
weights) and trains (rewind weights at k) ⊙ mask_L from step k, with a fresh optimizer and the
schedule resumed at k. With rewind_mode='lr' it instead starts from level L-1's trained weights
⊙ mask_L (learning-rate rewinding). All replicates are trained together (leading axis R).

With `prune.pattern` N:M, level 1 imposes the pattern from the score (in every group of M along a
kernel's input axis, the N highest of level 0's trained weights) and later levels keep it: the N:M
selection among an N:M mask's live weights is that mask (so `lottery.levels=1` is the natural use).
The random_prune and shuffle controls then permute within each group (the mask stays N:M).

Layout of a run directory (paths from lth/harness/paths.py):
  config.json, summary.json
  level_0/rewind                  params + model state at step k (orbax)
  level_L/final                   final TrainState: params, masks, opt state, step, rng (orbax)
  level_L/metrics.json            history + per-replicate summary; its presence marks the level done
  level_L/ckpt/                   rolling mid-training checkpoint (removed when the level is done)
  controls/<name>/level_L/...     the same for each control
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lth.errors import UserError, check_choice
from lth.harness import checkpoint, paths
from lth.harness.run import BASE_SECTIONS, Command, Setup, init_variables, keys, random_init, train_arm
from lth.harness.run import setup as run_setup
from lth.harness.rundir import read_json, write_json
from lth.harness.summary import arm_entry
from lth.models.zoo import family
from lth.options import options, split_list
from lth.pruning import masks as M
from lth.pruning import nm as NM
from lth.pruning import prune as P
from lth.pruning import sparsity as SP
from lth.pruning.at_init import layer_plan
from lth.registry import SCORES
from lth.scores.scorer import check_option
from lth.studies.plots import accuracy_vs_density
from lth.studies.tables import lottery_table
from lth.training.loop import device_data

# This study's section of the config.
OPTIONS = {"lottery": options(
    levels=(6, "IMP levels after the dense level 0"),
    rewind=("0it", "rewind point k: 0 = original LTH, >0 = late rewinding"),
    rewind_mode=("weights", "weights (rewind to step k) | lr (keep trained weights, replay schedule from k)"),
    controls=("reinit,random_prune", "comma list of reinit | random_prune | shuffle ('' = none)"),
    reinit=("", "regex of param paths drawn afresh at every level (BERT: classifier/.*)"),
)}


# ----- IMP's own pieces: the dense level, the rewind point, re-drawn leaves ----------------------
def rewind_path(run_dir: str) -> str:
    return paths.rewind(run_dir)


def train_dense(s: Setup, run_dir: str, data, init_params, init_ms):
    """The dense network trained from init (IMP's level 0), saving the rewind point at
    `lottery.rewind` on the way (resumable; shared by `lth lottery` and `lth heads`)."""
    path = rewind_path(run_dir)

    def save_rewind(st):
        if not checkpoint.exists(path):
            checkpoint.save(path, {"params": st.params, "model_state": st.model_state}, redo=paths.level(run_dir, 0))

    return train_arm(s, paths.level(run_dir, 0), init_params, init_ms, M.ones_like(init_params), 0, data,
                     captures={s.duration(s.cfg.lottery.rewind, "lottery.rewind"): save_rewind}, label="level 0")


def redraw(s: Setup, params, level: int):
    """params with the `lottery.reinit` leaves drawn afresh for `level` (e.g. BERT's classifier)."""
    if not s.cfg.lottery.reinit:
        return params
    fresh, _ = random_init(s, keys(s, "redraw", level))
    which = M.prunable_tree(M.index(params, 0), s.cfg.lottery.reinit)
    return jax.tree.map(lambda p, f, w: f if w else p, params, fresh, which)


# ----- controls: each starts a level's arm from (params, model_state, masks) ---------------------
def _reinit(s, level, masks, rw_params, rw_ms):
    """Same mask, new weights: a random (not pretrained) network drawn for this level."""
    p, ms = random_init(s, keys(s, "reinit", level))
    return p, ms, masks


def shuffled(s, masks, ks):
    """Each replicate's masks [R] shuffled layer by layer with its key of `ks` [R]; with prune.pattern,
    within each group of M (the mask stays N:M)."""
    if not s.cfg.prune.pattern:
        return s.shuffle(masks, ks)
    return jax.vmap(lambda m, k: P.shuffle(m, s.prunable, k, pattern=s.cfg.prune.pattern))(masks, ks)


def _random_prune(s, level, masks, rw_params, rw_ms):
    """Rewind weights, each layer's mask permuted: the same per-layer density at random positions."""
    return redraw(s, rw_params, level), rw_ms, shuffled(s, masks, keys(s, "random_prune", level))


def _shuffle(s, level, masks, rw_params, rw_ms):
    """Layerwise mask shuffle (Frankle et al. 2021): as random_prune, with its own key."""
    return redraw(s, rw_params, level), rw_ms, shuffled(s, masks, keys(s, "shuffle", level))


CONTROLS = {"reinit": _reinit, "random_prune": _random_prune, "shuffle": _shuffle}


def controls_of(cfg) -> tuple:
    return tuple(split_list(cfg.lottery.controls))


def validate_pattern(cfg, scope: tuple) -> tuple | None:
    """`prune.pattern` parsed ((N, M) or None), refused with prune.structure=units or with `scope`
    (the config key and value given) a layer-density distribution: the pattern sets every density."""
    nm = NM.parse_pattern(cfg.prune.pattern, "prune.pattern")
    if nm is None:
        return None
    if cfg.prune.structure == "units":
        raise UserError(f"prune.pattern {cfg.prune.pattern!r} with prune.structure 'units': N:M prunes weights "
                        f"within units; allowed: one of them (prune.structure=weights or prune.pattern=)")
    key, value = scope
    if value not in ("global", "layerwise"):
        raise UserError(f"{key} {value!r} with prune.pattern {cfg.prune.pattern!r}: the pattern sets every layer's "
                        f"density to N/M; allowed: {key}=global or layerwise")
    return nm


def check_pattern_fit(s: Setup, layer_fractions=()) -> None:
    """`prune.pattern`'s M divides the input dimension of every kernel it applies to (the prunable
    ones less those `layer_fractions` sets to 0), from the model's shapes (one-line UserError)."""
    if not s.cfg.prune.pattern:
        return
    params = s.param_shapes
    P.check_nm_fit(s.cfg.prune.pattern, M.leaf_paths(params), [x.shape for x in jax.tree.leaves(params)],
                   jax.tree.leaves(s.prunable), layer_fractions, what="prune.pattern")


def validate(cfg) -> None:
    """IMP's config checks that need no data (one-line UserErrors)."""
    nm = validate_pattern(cfg, ("prune.scope", cfg.prune.scope))
    if not 0.0 < cfg.prune.fraction < 1.0:
        raise UserError(f"prune.fraction {cfg.prune.fraction} out of range; allowed: 0 < fraction < 1")
    if cfg.lottery.levels < 0:
        raise UserError(f"lottery.levels {cfg.lottery.levels} is negative; allowed: 0 or more")
    check_choice("prune.scope", cfg.prune.scope, ("global", "layerwise", *SP.DISTRIBUTIONS))
    if cfg.prune.scope in SP.DISTRIBUTIONS and cfg.prune.layer_fractions:
        raise UserError(f"prune.layer_fractions {cfg.prune.layer_fractions!r} with prune.scope {cfg.prune.scope!r}: "
                        f"the distribution sets every layer's density; "
                        f"allowed: one of them (set prune.layer_fractions=)")
    check_choice("prune.of", cfg.prune.of, ("remaining", "original"))
    if nm is None and cfg.prune.of == "original" and cfg.prune.fraction * cfg.lottery.levels >= 1 - 1e-9:
        raise UserError(f"prune.fraction {cfg.prune.fraction} of the original weights for {cfg.lottery.levels} levels "
                        f"prunes everything; allowed: fraction · levels < 1")
    check_choice("lottery.rewind_mode", cfg.lottery.rewind_mode, ("weights", "lr"))
    for c in controls_of(cfg):
        check_choice("lottery.controls entry", c, CONTROLS)
    score = SCORES.get(cfg.prune.score)
    for field in [*score.options.values(), *(("batch_size", "batches") if score.needs_data else ())]:
        check_option(field, cfg.pai[field], cfg.prune.score)   # the `pai` options IMP's score reads
    if cfg.lottery.reinit:
        M.check_pattern("lottery.reinit", cfg.lottery.reinit)
    for pat, f in P.parse_layer_fractions(cfg.prune.layer_fractions):
        if nm is None and cfg.prune.of == "original" and f * cfg.lottery.levels >= 1 - 1e-9:
            raise UserError(f"prune.layer_fractions {pat}={f} of the original weights for {cfg.lottery.levels} levels "
                            f"empties that layer; allowed: fraction · levels < 1 for every layer")


def level_density(cfg, level: int) -> float:
    """Level L's global density: (1 − f)^L, or 1 − L·f with prune.of = original."""
    f = cfg.prune.fraction
    return (1 - f) ** level if cfg.prune.of == "remaining" else 1 - level * f


def distribution_plan(s: Setup, density: float) -> list:
    """`P.prune` layer overrides keeping each prunable layer at the density the distribution
    `prune.scope` gives for `density` (layers in network order)."""

    return layer_plan({"params": s.param_shapes}, s.prunable, density, s.cfg.prune.scope, s.prunable_order,
                      family(s.cfg.model.name).residual)


def collapsed_layers(masks, prunable) -> dict:
    """{path: [replicates]} of the prunable leaves with no live weight left (masks [R])."""
    out = {}
    for path, m, p in zip(M.leaf_paths(masks), jax.tree.leaves(masks), jax.tree.leaves(prunable)):
        if p:
            dead = [r for r in range(m.shape[0]) if not bool(np.any(np.asarray(m[r])))]
            if dead:
                out[path] = dead
    return out


def check_rewind(s: Setup) -> int:
    rewind = s.duration(s.cfg.lottery.rewind, "lottery.rewind")
    if rewind >= s.total:
        raise UserError(f"lottery.rewind {s.cfg.lottery.rewind!r} = step {rewind} is not before the end of "
                        f"training (step {s.total}); allowed: 0 <= rewind < {s.total}")
    return rewind


def check(s: Setup) -> None:
    """IMP's checks once the model is known: rewind point, reinit regex, layer overrides, the fit of
    prune.pattern's groups to the kernels."""
    check_rewind(s)
    params = s.param_shapes
    if s.cfg.lottery.reinit and not any(jax.tree.leaves(M.prunable_tree(params, s.cfg.lottery.reinit))):
        raise UserError(f"lottery.reinit {s.cfg.lottery.reinit!r} matches no parameter; "
                        f"params: {', '.join(M.leaf_paths(params))}")
    layer_fractions = P.parse_layer_fractions(s.cfg.prune.layer_fractions)
    P.plan_groups(M.leaf_paths(params), jax.tree.leaves(s.prunable), s.cfg.prune.fraction, False, layer_fractions)
    check_pattern_fit(s, layer_fractions)


COMMAND = Command("lottery", BASE_SECTIONS + ("prune", "lottery"), unhashed=("lottery.levels", "lottery.controls"),
                  validate=validate, check=check)


HELP = "iterative magnitude pruning with rewinding, and its controls"
DESCRIPTION = ("Train levels 0..L of IMP (resumes where it stopped; finished levels are skipped), print a table "
               "and write summary.json and a plot.")
PLOT_FILE = "accuracy_vs_density.png"


def describe(s: Setup) -> str:
    return (f"{s.cfg.model.name} on {s.cfg.data.name}, {s.total} iterations/level, {s.cfg.lottery.levels} levels, "
            f"R={s.replicates}")


def table(summary) -> str:
    return lottery_table(summary)


def plot(summary, path) -> str:
    return accuracy_vs_density(summary, path)


def setup(cfg) -> Setup:
    """The harness's setup for IMP (validated, data loaded, nothing written)."""

    return run_setup(cfg, COMMAND)


def imp_scores(s: Setup, params, model_state, masks, level):
    """IMP scores of trained weights, per replicate (leading axis R)."""
    one = lambda t, r: M.index(t, r)  # noqa: E731
    rngs = keys(s, "imp_score", level)
    scorer = s.scorer(s.cfg.prune.score, {"params": one(params, 0), **one(model_state, 0)})
    return M.stack([scorer({"params": one(params, r), **one(model_state, r)}, one(masks, r), rngs[r])
                    for r in range(s.replicates)])


def mark_dead(rows: list, dead: dict, level: int) -> list:
    """Rows of replicates that diverged at an earlier level are marked skipped (never reported)."""
    for r, row in enumerate(rows):
        if r in dead and dead[r] < level:
            row["skipped"] = f"diverged at level {dead[r]}"
    return rows


def level_entry(level: int, rows: list) -> dict:
    return arm_entry(rows, level=level)


def run(s: Setup, run_dir: str, log=print) -> dict:
    """All levels and controls; writes summary.json after every finished arm. Returns the summary."""
    cfg = s.cfg
    data = device_data(s.trainer, s.dataset)
    init_params, init_ms = init_variables(s, keys(s, "init"))
    rewind = check_rewind(s)
    layer_fractions = P.parse_layer_fractions(cfg.prune.layer_fractions)
    summary = {"config": read_json(paths.config(run_dir))["config"], "levels": [],
               "controls": {c: [] for c in controls_of(cfg)}}
    masks, final = M.ones_like(init_params), None
    units = cfg.prune.structure == "units"
    dead = {}  # replicate → the level at which it diverged: never pruned on, later levels skipped
    for level in range(cfg.lottery.levels + 1):
        if len(dead) == s.replicates:
            log(f"every replicate diverged (levels {sorted(set(dead.values()))}); levels {level}.. skipped")
            break
        arm_data = s.distilling(data, run_dir, level)   # with the teacher's logits when distilled
        if level == 0:
            final, rows = train_dense(s, run_dir, arm_data, init_params, init_ms)
        else:
            scores = imp_scores(s, final.params, final.model_state, final.masks, level)
            # level L removes ceil(f · live) of each group's live weights, or with prune.of='original'
            # ceil(L·f · n) of its n original weights (validated: L·f < 1 for every group)
            mult = 1 if cfg.prune.of == "remaining" else level
            if cfg.prune.pattern:   # N:M from the score at level 1; an N:M mask is kept as it is after that
                masks = P.prune_replicates(scores, final.masks, s.prunable, pattern=cfg.prune.pattern,
                                           layer_fractions=layer_fractions)
            elif cfg.prune.scope in SP.DISTRIBUTIONS:   # each layer at the distribution's density for level L
                d = level_density(cfg, level)
                masks = P.prune_replicates(scores, final.masks, s.prunable, density=d,
                                           layer_fractions=distribution_plan(s, d), units=units)
            else:
                masks = P.prune_replicates(scores, final.masks, s.prunable, fraction=mult * cfg.prune.fraction,
                                           layer_fractions=[(p, mult * f) for p, f in layer_fractions],
                                           layerwise=cfg.prune.scope == "layerwise", of=cfg.prune.of, units=units)
            collapsed = collapsed_layers(masks, s.prunable)
            for path, reps in collapsed.items():
                log(f"level {level}: layer {path} has no weights left (replicates {', '.join(map(str, reps))}): "
                    f"the network is disconnected there (layer collapse)")
            if dead:  # a diverged replicate keeps its last mask: its weights are never pruned on
                stop = np.asarray([r in dead for r in range(s.replicates)])
                masks = jax.tree.map(lambda new, old: jnp.where(stop.reshape(-1, *[1] * (new.ndim - 1)), old, new),
                                     masks, final.masks)
            rw = checkpoint.load(rewind_path(run_dir), {"params": init_params, "model_state": init_ms},
                                 redo=paths.level(run_dir, 0))
            src = final if cfg.lottery.rewind_mode == "lr" else rw
            params = redraw(s, src.params if cfg.lottery.rewind_mode == "lr" else src["params"], level)
            ms = src.model_state if cfg.lottery.rewind_mode == "lr" else src["model_state"]
            final, rows = train_arm(s, paths.level(run_dir, level), params, ms, masks, rewind, arm_data,
                                    label=f"level {level}")
        rows = mark_dead(rows, dead, level)
        for r, row in enumerate(rows):
            if row.get("diverged_at_step") is not None and r not in dead:
                dead[r] = level
        summary["levels"].append(level_entry(level, rows))
        if level > 0 and collapsed:
            summary["levels"][-1]["collapsed_layers"] = collapsed
        log(_line(f"level {level}", summary["levels"][-1]))
        if level > 0:
            rw_params, rw_ms = rw["params"], rw["model_state"]
            for c in controls_of(cfg):
                c_params, c_ms, c_masks = CONTROLS[c](s, level, masks, rw_params, rw_ms)
                _, c_rows = train_arm(s, paths.level(run_dir, level, c), c_params, c_ms,
                                      c_masks, rewind, arm_data, label=f"{c} {level}")
                summary["controls"][c].append(level_entry(level, mark_dead(c_rows, dead, level + 1)))
                log(_line(f"  {c}", summary["controls"][c][-1]))
        write_json(paths.summary(run_dir), summary)
    return summary


def _line(name, e):
    if "test_accuracy" not in e:
        return f"{name:<16} density {e['density']:.4f}  diverged"
    acc = f"{e['test_accuracy']:.4f}" + (f" ± {e['test_accuracy_std']:.4f}" if len(e["replicates"]) > 1 else "")
    if e.get("diverged"):
        acc += f" ({e['diverged']} diverged)"
    return (f"{name:<16} density {e['density']:.4f}  test acc {acc}  "
            f"early-stop step {e.get('best_val_loss_step', float('nan')):.0f}")
