"""Iterative magnitude pruning with rewinding, and its controls (reinit, random prune, shuffle).

Level 0 trains the dense network from init and records the rewind weights at step k. Level L
prunes `prune.fraction` of the surviving weights by score (magnitude of level L-1's trained
weights) and trains (rewind weights at k) ⊙ mask_L from step k, with a fresh optimizer and the
schedule resumed at k. With rewind_mode='lr' it instead starts from level L-1's trained weights
⊙ mask_L (learning-rate rewinding). All replicates are trained together (leading axis R).

Layout of a run directory:
  config.json, summary.json
  level_0/rewind                  params + model state at step k (orbax)
  level_L/final                   final TrainState: params, masks, opt state, step, rng (orbax)
  level_L/metrics.json            history + per-replicate summary; its presence marks the level done
  level_L/ckpt/                   rolling mid-training checkpoint (removed when the level is done)
  controls/<name>/level_L/...     the same for each control
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from lth import checkpoint, data as D, masks as M, prune as P, scores as S
from lth.config import parse_duration
from lth.errors import UserError, check_choice
from lth.experiment import read_json, write_json
from lth.fit import device_data, fit, summarize
from lth.models import registry
from lth.models.inits import Init
from lth.data.augment import AUGMENTATIONS, make as make_augment
from lth.train import make_mesh, make_trainer, replicate_mode

CONTROLS = ("reinit", "random_prune", "shuffle")


@dataclasses.dataclass
class Setup:
    """Everything derived from a config, validated before any training."""

    cfg: object
    dataset: D.Dataset
    trainer: object
    prunable: object
    layer_fractions: list
    total: int
    rewind: int
    eval_every: int
    checkpoint_every: int
    controls: tuple
    pretrained: dict | None = None    # one replicate's params from model.pretrained (read once)
    _scorers: dict = dataclasses.field(default_factory=dict)

    @property
    def replicates(self) -> int:
        return self.cfg.replicates

    def apply_fn(self, variables, x):
        """Eval-mode logits: the model as the scores see it."""
        return self.trainer.model.apply(variables, x, train=False)

    def score_batch(self):
        """A fixed batch of training examples for data-dependent scores."""
        n = min(len(self.dataset.y_train), self.cfg.pai.batch_size * self.cfg.pai.batches)
        return jnp.asarray(self.dataset.x_train[:n]), jnp.asarray(self.dataset.y_train[:n])

    def scorer(self, method, variables):
        """pai.Scorer for `method` with the config's options (built once per method; `variables`, of
        one replicate, serve as the template, e.g. for SynFlow's precision check)."""
        from lth.pai import Scorer

        if method in self._scorers:
            return self._scorers[method]
        p = self.cfg.pai
        self._scorers[method] = Scorer(
            method, self.apply_fn, variables, self.prunable, self.score_batch(), self.dataset.input_shape,
            batches=p.batches, temperature=p.grasp_temperature, obd_method=p.obd_method,
            obd_probes=p.obd_probes, precision=p.synflow_precision)
        return self._scorers[method]

    def score(self, params, model_state, masks, rngs):
        """IMP scores of trained weights, per replicate (leading axis R)."""
        one = lambda t, r: M.index(t, r)  # noqa: E731
        scorer = self.scorer(self.cfg.prune.score, {"params": one(params, 0), **one(model_state, 0)})
        return M.stack([scorer({"params": one(params, r), **one(model_state, r)}, one(masks, r), rngs[r])
                        for r in range(self.replicates)])

    @functools.cached_property
    def shuffle(self):
        """(masks [R], keys [R]) → layerwise-shuffled masks (jit, vmapped)."""
        return jax.jit(jax.vmap(lambda m, k: P.shuffle(m, self.prunable, k)))


def validate(cfg) -> None:
    """Config checks that need no data (one-line UserErrors)."""
    if not 0.0 < cfg.prune.fraction < 1.0:
        raise UserError(f"prune.fraction {cfg.prune.fraction} out of range; allowed: 0 < fraction < 1")
    if cfg.lottery.levels < 0:
        raise UserError(f"lottery.levels {cfg.lottery.levels} is negative; allowed: 0 or more")
    if cfg.replicates < 1:
        raise UserError(f"replicates {cfg.replicates} out of range; allowed: 1 or more")
    check_choice("prune.scope", cfg.prune.scope, ("global", "layerwise"))
    check_choice("prune.of", cfg.prune.of, ("remaining", "original"))
    if cfg.prune.of == "original" and cfg.prune.fraction * cfg.lottery.levels >= 1:
        raise UserError(f"prune.fraction {cfg.prune.fraction} of the original weights for {cfg.lottery.levels} levels "
                        f"prunes everything; allowed: fraction · levels < 1")
    check_choice("lottery.rewind_mode", cfg.lottery.rewind_mode, ("weights", "lr"))
    for c in controls_of(cfg):
        check_choice("control", c, CONTROLS)
    S.get(cfg.prune.score)
    check_choice("dataset", cfg.data.name, D.names())
    written_for = [d.strip() for d in cfg.data.recipe_for.split(",") if d.strip()]
    if written_for and cfg.data.name not in written_for:
        raise UserError(f"data.name {cfg.data.name!r}: this recipe ({cfg.name}) was written for {', '.join(written_for)}; "
                        f"allowed: {', '.join(written_for)} (or --set data.recipe_for= to run it on another dataset)")
    check_choice("data.augment", cfg.data.augment, AUGMENTATIONS)
    registry.find(cfg.model.name)
    Init.of(cfg.model)
    P.parse_layer_fractions(cfg.prune.layer_fractions)


def controls_of(cfg) -> tuple:
    return tuple(c.strip() for c in cfg.lottery.controls.split(",") if c.strip())


def setup(cfg) -> Setup:
    validate(cfg)
    ds = D.load(cfg.data)
    model = registry.build(cfg.model.name, ds.num_classes, Init.of(cfg.model), ds.input_shape, cfg.model.width)
    trainer = make_trainer(model, cfg.train, len(ds.y_train), augment=make_augment(cfg.data.augment, ds.zero),
                           mesh=make_mesh(cfg.run.devices),
                           replicates=replicate_mode(cfg.run.replicate_mode, model, ds.input_shape))
    spe = trainer.steps_per_epoch
    total = parse_duration(cfg.train.duration, spe, "train.duration")
    rewind = parse_duration(cfg.lottery.rewind, spe, "lottery.rewind")
    if rewind >= total:
        raise UserError(f"lottery.rewind {cfg.lottery.rewind!r} = step {rewind} is not before the end of "
                        f"training (step {total}); allowed: 0 <= rewind < {total}")
    params, _ = jax.eval_shape(trainer.init_variables, jax.random.PRNGKey(0), jnp.zeros((1, *ds.input_shape)))
    if ds.meta:
        from lth.models.bert import check_tokens
        check_tokens(model, ds.name, ds.meta)
    pretrained = None
    if cfg.model.pretrained:  # read once, before anything is written: files, keys and shapes checked
        from lth.models.bert_import import load_weights, resolve
        pretrained = load_weights(resolve(cfg.model.pretrained), params)
    prunable = M.prunable_tree(params, cfg.prune.prunable)
    if cfg.lottery.reinit and not any(jax.tree.leaves(M.prunable_tree(params, cfg.lottery.reinit))):
        raise UserError(f"lottery.reinit {cfg.lottery.reinit!r} matches no parameter; params: {', '.join(M.leaf_paths(params))}")
    if not any(jax.tree.leaves(prunable)):
        raise UserError(f"prune.prunable {cfg.prune.prunable!r} matches no parameter; params: {', '.join(M.leaf_paths(params))}")
    lf = P.parse_layer_fractions(cfg.prune.layer_fractions)
    P.plan_groups(M.leaf_paths(params), jax.tree.leaves(prunable), cfg.prune.fraction, False, lf)
    return Setup(cfg, ds, trainer, prunable, lf, total, rewind,
                 parse_duration(cfg.train.eval_every, spe, "train.eval_every"),
                 parse_duration(cfg.run.checkpoint_every, spe, "run.checkpoint_every"), controls_of(cfg),
                 pretrained=pretrained)


# ----- keys and initialization ---------------------------------------------------------------
@jax.jit
def _keys(seeds, purpose):
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), purpose))(seeds)


def keys(s: Setup, purpose: int):
    """[R] keys for a purpose (0 init, 1 train steps, 2 data order, 100+L reinit, 200+L random masks)."""
    return _keys(jnp.arange(s.replicates, dtype=jnp.uint32) + s.cfg.seed, jnp.uint32(purpose))


def random_init(s: Setup, rng):
    return s.trainer.init_replicates(rng, s.dataset.input_shape)


def init_variables(s: Setup, rng):
    """[R] initial (params, model_state): random, with `model.pretrained` weights loaded over them."""
    params, ms = random_init(s, rng)
    if s.pretrained is not None:
        one = M.index(params, 0)
        fresh = M.prunable_tree(one, s.cfg.lottery.reinit) if s.cfg.lottery.reinit else jax.tree.map(lambda _: False, one)
        # every replicate gets the pretrained tensors; leaves re-drawn per level, and leaves the
        # checkpoint lacks (still shape structs: a BertModel's classifier), keep their own init
        params = jax.tree.map(
            lambda p, w, f: p if f or isinstance(w, jax.ShapeDtypeStruct) else jnp.broadcast_to(jnp.asarray(w), p.shape),
            params, s.pretrained, fresh)
    return params, ms


def redraw(s: Setup, params, level: int):
    """params with the `lottery.reinit` leaves drawn afresh for `level` (e.g. BERT's classifier)."""
    if not s.cfg.lottery.reinit:
        return params
    fresh, _ = random_init(s, keys(s, 400 + level))
    which = M.prunable_tree(M.index(params, 0), s.cfg.lottery.reinit)
    return jax.tree.map(lambda p, f, w: f if w else p, params, fresh, which)


# ----- one training run (an arm at a level) ---------------------------------------------------
def train_arm(s: Setup, adir: str, params, model_state, masks, start: int, data, *, captures=None, label=""):
    """Train from (params ⊙ masks) at step `start` to the end, resuming from `adir` if possible.
    Returns (final state, per-replicate summary rows)."""
    t = s.trainer
    state = t.new_state(params, model_state, masks, start, keys(s, 1), keys(s, 2))
    metrics_path = os.path.join(adir, "metrics.json")
    if os.path.exists(metrics_path):
        return checkpoint.load(os.path.join(adir, "final"), state), read_json(metrics_path)["replicates"]
    rolling = checkpoint.Rolling(os.path.join(adir, "ckpt"))
    history, pending = [], None
    latest = rolling.latest(state)
    if latest is not None:
        state, meta = latest
        history, pending = meta["history"], meta["pending"]
    bar = tqdm(total=s.total - start, initial=int(np.asarray(state.step)[0]) - start, desc=label,
               disable=None if s.cfg.run.progress else True, leave=False, dynamic_ncols=True)

    def on_checkpoint(st, hist, pend):
        rolling.save(int(np.asarray(st.step)[0]), st, {"history": hist, "pending": pend})

    state, history = fit(t, state, data, s.total, eval_every=s.eval_every, history=history,
                         checkpoint_every=s.checkpoint_every, on_checkpoint=on_checkpoint,
                         captures=captures, progress=bar, pending=pending)
    bar.close()
    rolling.close()
    checkpoint.save(os.path.join(adir, "final"), state)
    rows = summarize(history)
    dens, per_layer = M.density(state.masks, s.prunable, axis=0)
    dens_all, _ = M.density(state.masks, jax.tree.map(lambda _: True, s.prunable), axis=0)  # every parameter
    diverged = np.asarray(state.diverged)
    for r, row in enumerate(rows):
        row.update(seed=s.cfg.seed + r, density=float(dens[r]), density_all_params=float(dens_all[r]),
                   density_per_layer={k: float(v[r]) for k, v in per_layer.items()},
                   diverged_at_step=int(diverged[r]) if diverged[r] >= 0 else None)
    write_json(metrics_path, {"replicates": rows, "history": history})
    shutil.rmtree(os.path.join(adir, "ckpt"), ignore_errors=True)
    return state, rows


def healthy(row) -> bool:
    return row.get("diverged_at_step") is None and not row.get("skipped")


def level_entry(level: int, rows: list) -> dict:
    """Summary row of a level: means over the healthy replicates (not diverged, not skipped), stds,
    the number left out (`diverged`), and the per-replicate rows."""
    out = {"level": level}
    ok = [r for r in rows if healthy(r)]
    for key in ("density", "test_accuracy", "best_val_loss_step", "test_accuracy_at_best_val"):
        vals = [r[key] for r in (rows if key == "density" else ok) if r.get(key) is not None]
        if vals:
            out[key] = float(np.mean(vals))
            out[key + "_std"] = float(np.std(vals))
    if len(ok) < len(rows):
        out["diverged"] = len(rows) - len(ok)
    out["replicates"] = rows
    return out


def mark_dead(rows: list, dead: dict, level: int) -> list:
    """Rows of replicates that diverged at an earlier level are marked skipped (never reported)."""
    for r, row in enumerate(rows):
        if r in dead and dead[r] < level:
            row["skipped"] = f"diverged at level {dead[r]}"
    return rows


def any_diverged(summary: dict) -> int:
    """How many arms (level × arm) of a summary have a diverged replicate."""
    entries = summary.get("levels", []) + [e for rows in summary.get("controls", {}).values() for e in rows]
    entries += list(summary.get("methods", {}).values())
    return sum(1 for e in entries if any(r.get("diverged_at_step") is not None for r in e.get("replicates", [])))


# ----- the IMP run -----------------------------------------------------------------------------
def rewind_path(run_dir: str) -> str:
    return os.path.join(run_dir, "level_0", "rewind")


def train_dense(s: Setup, run_dir: str, data, init_params, init_ms):
    """Level 0: the dense network trained from init, saving the rewind point (resumable; shared by
    `lth lottery` and `lth heads`)."""
    path = rewind_path(run_dir)

    def save_rewind(st):
        if not checkpoint.exists(path):
            checkpoint.save(path, {"params": st.params, "model_state": st.model_state})

    return train_arm(s, os.path.join(run_dir, "level_0"), init_params, init_ms, M.ones_like(init_params), 0, data,
                     captures={s.rewind: save_rewind}, label="level 0")

def run(s: Setup, run_dir: str, log=print) -> dict:
    """All levels and controls; writes summary.json after every finished arm. Returns the summary."""
    cfg = s.cfg
    data = device_data(s.trainer, s.dataset)
    init_params, init_ms = init_variables(s, keys(s, 0))
    summary = {"config": read_json(os.path.join(run_dir, "config.json"))["config"], "levels": [],
               "controls": {c: [] for c in s.controls}}
    masks, final = M.ones_like(init_params), None
    dead = {}  # replicate → the level at which it diverged: never pruned on, later levels skipped
    for level in range(cfg.lottery.levels + 1):
        if len(dead) == s.replicates:
            log(f"every replicate diverged (levels {sorted(set(dead.values()))}); levels {level}.. skipped")
            break
        if level == 0:
            final, rows = train_dense(s, run_dir, data, init_params, init_ms)
        else:
            scores = s.score(final.params, final.model_state, final.masks, keys(s, 300 + level))
            if cfg.prune.of == "remaining":
                amount = {"fraction": cfg.prune.fraction, "layer_fractions": s.layer_fractions}
            else:  # level L keeps 1 - L·f of the original weights, per override group too
                amount = {"density": 1.0 - level * cfg.prune.fraction,
                          "layer_fractions": [(p, min(1.0, level * f)) for p, f in s.layer_fractions]}
            masks = P.prune_replicates(scores, final.masks, s.prunable, **amount,
                                       layerwise=cfg.prune.scope == "layerwise")
            if dead:  # a diverged replicate keeps its last mask: its weights are never pruned on
                stop = np.asarray([r in dead for r in range(s.replicates)])
                masks = jax.tree.map(lambda new, old: jnp.where(stop.reshape(-1, *[1] * (new.ndim - 1)), old, new),
                                     masks, final.masks)
            rw = checkpoint.load(rewind_path(run_dir), {"params": init_params, "model_state": init_ms})
            src = final if cfg.lottery.rewind_mode == "lr" else rw
            params = redraw(s, src.params if cfg.lottery.rewind_mode == "lr" else src["params"], level)
            ms = src.model_state if cfg.lottery.rewind_mode == "lr" else src["model_state"]
            final, rows = train_arm(s, os.path.join(run_dir, f"level_{level}"), params, ms, masks, s.rewind, data,
                                    label=f"level {level}")
        rows = mark_dead(rows, dead, level)
        for r, row in enumerate(rows):
            if row.get("diverged_at_step") is not None and r not in dead:
                dead[r] = level
        summary["levels"].append(level_entry(level, rows))
        log(_line(f"level {level}", summary["levels"][-1]))
        if level > 0:
            rw_params, rw_ms = rw["params"], rw["model_state"]
            for c in s.controls:
                c_params, c_ms, c_masks = control_start(s, c, level, masks, rw_params, rw_ms)
                _, c_rows = train_arm(s, os.path.join(run_dir, "controls", c, f"level_{level}"), c_params, c_ms,
                                      c_masks, s.rewind, data, label=f"{c} {level}")
                summary["controls"][c].append(level_entry(level, mark_dead(c_rows, dead, level + 1)))
                log(_line(f"  {c}", summary["controls"][c][-1]))
        write_json(os.path.join(run_dir, "summary.json"), summary)
    return summary


def control_start(s: Setup, control: str, level: int, masks, rw_params, rw_ms):
    """(params, model_state, masks) a control arm starts from at `level`."""
    if control == "reinit":  # a random network (not pretrained) with the ticket's mask
        p, ms = random_init(s, keys(s, 100 + level))
        return p, ms, masks
    k = keys(s, (200 if control == "random_prune" else 250) + level)
    return redraw(s, rw_params, level), rw_ms, s.shuffle(masks, k)


def _line(name, e):
    if "test_accuracy" not in e:
        return f"{name:<16} density {e['density']:.4f}  diverged"
    acc = f"{e['test_accuracy']:.4f}" + (f" ± {e['test_accuracy_std']:.4f}" if len(e["replicates"]) > 1 else "")
    if e.get("diverged"):
        acc += f" ({e['diverged']} diverged)"
    return f"{name:<16} density {e['density']:.4f}  test acc {acc}  early-stop step {e.get('best_val_loss_step', float('nan')):.0f}"
