"""The harness every command uses: config → validated setup → locked run directory → arms → summary.

A command (lottery, pai, heads, collapse) is a `Command`: the config sections that make its
identity (the run directory's hash), the keys inside them that do not (more levels, more methods,
more sweep points reuse the directory), its own validation before any data is read, and its checks
once the setup is built. `setup` builds, for every command, the data, the model and its trainer,
the prunable set and the score batch; `train_arm` trains one arm resumably; `keys` draws every
random stream from one named table.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from lth import data as D
from lth.data.augment import AUGMENTATIONS
from lth.data.augment import make as make_augment
from lth.errors import NotPrepared, UserError, check_choice, first_line
from lth.harness import checkpoint, events, paths
from lth.harness import teacher as T
from lth.harness.config import check_values, parse_duration
from lth.harness.identity import Command  # noqa: F401  (a study's identity; re-exported for the studies)
from lth.harness.rundir import read_json, write_json
from lth.harness.runlog import terminal
from lth.harness.trainer import trainer_from_config
from lth.models import zoo
from lth.models.bert import check_tokens, with_head
from lth.models.bert_import import load_weights, resolve
from lth.models.inits import Init
from lth.models.layers import input_shape as model_input_shape
from lth.options import split_list
from lth.pruning import masks as M
from lth.pruning import prune as P
from lth.scores import Scorer
from lth.training import distill, hosts, optim
from lth.training.devices import make_mesh, replicate_mode
from lth.training.loop import fit, summarize
from lth.training.objective import of_meta

# Every random stream of a run: keys(s, purpose, index) = fold_in(fold_in(PRNGKey(seed + r), PURPOSES[purpose]), index).
PURPOSES = {
    "init": 0,            # initial weights (every arm that starts from init)
    "train": 1,           # per-step randomness: dropout, augmentation
    "data": 2,            # data order: epoch e is permutation(fold_in(key, e))
    "reinit": 3,          # IMP control `reinit` at level L (index L); pai sanity `reinit`
    "random_prune": 4,    # IMP control `random_prune` at level L
    "shuffle": 5,         # IMP control `shuffle` at level L; pai sanity `shuffle`
    "imp_score": 6,       # IMP scores of level L's trained weights (random / Hutchinson probes)
    "redraw": 7,          # `lottery.reinit` leaves drawn afresh at level L (BERT's classifier)
    "pai_score": 8,       # prune-at-init rounds (index: the round)
    "copy": 9,            # stability: the second copy's step and data-order keys (index 0: steps, 1: data)
    "sparse_mask": 10,    # `lth sparse`: the random starting mask of static / SET / RigL
    #                       (one per distribution and density)
    "transfer": 11,       # `lth transfer`: the random control's mask (index: density · 10⁶)
}

BASE_SECTIONS = ("name", "seed", "replicates", "model", "data", "train")
SEED_LIMIT = 2 ** 31   # seed + r must fit the int32 a jitted call takes a Python int as
DISTILLING = ("lottery", "compress")   # the commands that take train.distill.teacher


@dataclasses.dataclass
class Setup:
    """Everything derived from a config, validated before any training."""

    cfg: object
    dataset: D.Dataset
    trainer: object
    prunable: object
    total: int
    eval_every: int
    checkpoint_every: int
    pretrained: dict | None = None    # one replicate's params from model.pretrained (read once)
    teacher: object = None            # lth.teacher.Teacher once loaded (train.distill.teacher)
    _scorers: dict = dataclasses.field(default_factory=dict)

    @property
    def replicates(self) -> int:
        return self.cfg.replicates

    @property
    def input_shape(self):
        return self.dataset.input_shape

    def duration(self, text: str, what: str) -> int:
        return parse_duration(text, self.trainer.steps_per_epoch, what)

    def finetuning(self, model, duration: str, lr: float, what: str, schedule: str = "constant") -> "Setup":
        """This Setup with a trainer that fine-tunes `model` for `duration` from `lr` (constant, or
        `schedule` such as linear: decayed to 0; the run's optimizer otherwise; its augmentation, mesh
        and replicate mode): `lth compress`'s QAT, `lth oneshot`'s recovery and gradual intervals.
        `what` names the duration's config key in errors."""
        t = ml_collections.ConfigDict(self.cfg.train.to_dict())
        t.duration, t.lr, t.schedule, t.warmup = duration, lr, schedule, "0it"
        trainer = trainer_from_config(model, t, len(self.dataset.y_train), augment=self.trainer.augment,
                                      mesh=self.trainer.mesh, replicates=self.trainer.replicate_mode,
                                      objective=self.trainer.objective)
        total = parse_duration(duration, trainer.steps_per_epoch, what)
        return dataclasses.replace(self, trainer=trainer, total=total, eval_every=total, _scorers={})

    @functools.cached_property
    def param_shapes(self):
        """One replicate's params as shape structs (nothing computed)."""
        return jax.eval_shape(lambda: M.index(random_init(self, keys(self, "init"))[0], 0))

    @functools.cached_property
    def prunable_order(self) -> list[str]:
        """The prunable leaf paths in network order (the order the forward pass first calls them)."""
        return prunable_order(self.trainer.model, self.input_shape, self.prunable)

    def apply_fn(self, variables, x):
        """Eval-mode logits: the model as the scores see it."""
        return self.trainer.model.apply(variables, x, train=False)

    def stats_fn(self, variables, x):
        """One train-mode pass: the model's updated batch_stats (NTK-SAP's BatchNorm calibration)."""
        return self.trainer.model.apply(variables, x, train=True, mutable=["batch_stats"])[1]["batch_stats"]

    def score_batch(self):
        """A fixed batch of training examples for data-dependent scores (pai.batch_size × pai.batches)."""
        n = min(len(self.dataset.y_train), self.cfg.pai.batch_size * self.cfg.pai.batches)
        return jnp.asarray(self.dataset.x_train[:n]), jnp.asarray(self.dataset.y_train[:n])

    def scorer(self, method, variables):
        """Scorer for `method` with the config's `pai` options (built once per method; `variables`, of
        one replicate, serve as the template, e.g. for SynFlow's precision check)."""

        if method not in self._scorers:
            self._scorers[method] = Scorer(method, self.apply_fn, variables, self.prunable, self.score_batch(),
                                           self.input_shape, self.cfg.pai, self.stats_fn, self.prunable_order)
        return self._scorers[method]

    def distilling(self, data, run_dir: str, level: int = 0):
        """`data` with the teacher's variables attached when this arm is distilled, else as is: an
        own-run teacher ('level_0') teaches the levels after it, another run's teacher every level."""
        spec = self.cfg.train.distill.teacher
        own = T.own_level(spec)
        if not spec or (own is not None and level <= own):
            return data
        if self.teacher is None:
            self.teacher = T.load(spec, run_dir, self.cfg.data, self.dataset, self.replicates)
        return dataclasses.replace(data, teacher=self.teacher.variables)

    @functools.cached_property
    def distiller(self):
        """The trainer with the teacher in its step (same model, optimizer and schedule)."""
        d = self.cfg.train.distill
        kind = d.get("kind", "logits")
        distill.check_models(kind, self.trainer.model, self.teacher.model)
        return dataclasses.replace(self.trainer, teacher=self.teacher.features if kind in distill.INTERMEDIATE
                                   else self.teacher.apply, distill_alpha=float(d.alpha),
                                   distill_temperature=float(d.temperature), distill_kind=kind,
                                   distill_beta=float(d.get("beta", 0.0)), distill_normalize=bool(d.get("normalize",
                                                                                                        True)))

    @functools.cached_property
    def shuffle(self):
        """(masks [R], keys [R]) → layerwise-shuffled masks (jit, vmapped)."""
        return jax.jit(jax.vmap(lambda m, k: P.shuffle(m, self.prunable, k)))


def prunable_order(model, input_shape, prunable) -> list[str]:
    """The paths of the prunable leaves (a bool tree) in network order: the order the forward pass
    first calls their modules."""
    names = [p for p, pr in zip(M.leaf_paths(prunable), jax.tree.leaves(prunable)) if pr]
    return zoo.network_order(model, input_shape, names)


def validate(cfg, command: Command) -> None:
    """Checks of the sections every command reads (model, data, replicates), then the command's own."""
    check_values(cfg)
    if cfg.replicates < 1:
        raise UserError(f"replicates {cfg.replicates} out of range; allowed: 1 or more")
    if not 0 <= cfg.seed <= SEED_LIMIT - cfg.replicates:   # replicate r draws its keys from seed + r (uint32)
        raise UserError(f"seed {cfg.seed} out of range with {cfg.replicates} replicates; "
                        f"allowed: 0 <= seed <= {SEED_LIMIT - cfg.replicates} (seed + replicates <= 2^31)")
    M.check_pattern("prune.prunable", cfg.prune.prunable)
    optim.validate(cfg.train)
    check_choice("dataset", cfg.data.name, D.names())
    written_for = split_list(cfg.data.recipe_for)
    if written_for and cfg.data.name not in written_for:
        raise UserError(f"data.name {cfg.data.name!r}: this recipe ({cfg.name}) was written for "
                        f"{', '.join(written_for)}; "
                        f"allowed: {', '.join(written_for)} (or --set data.recipe_for= to run it on another dataset)")
    check_choice("data.augment", cfg.data.augment, AUGMENTATIONS)
    check_choice("prune.structure", cfg.prune.structure, ("weights", "units"))
    zoo.find(cfg.model.name)
    Init.of(cfg.model)
    distill.validate(cfg.train.distill)
    if cfg.train.distill.teacher and command.name not in DISTILLING:
        raise UserError(f"train.distill.teacher is set but `lth {command.name}` does not distill; allowed with: "
                        f"{', '.join('lth ' + c for c in DISTILLING)}")
    if command.validate is not None:
        command.validate(cfg)


SYNTHETIC_MAX = 1 << 16   # stand-in examples at most (a score batch larger than this is cut to it)


def setup(cfg, command: Command, synthetic_ok: bool = False) -> Setup:
    """Data, model, trainer and prunable set for `cfg` (validated first). `synthetic_ok`: an
    unprepared tfds dataset is replaced by N(0,1) inputs with random labels of its shapes (no
    training: the layer-collapse sweep), and `setup.dataset.meta['synthetic']` says so."""
    validate(cfg, command)
    try:
        ds = D.load(cfg.data)
    except NotPrepared:   # not a bad option: those are refused as they are
        if not synthetic_ok or cfg.data.name not in D.shapes():
            raise
        n = max(cfg.pai.batch_size * cfg.pai.batches, cfg.train.batch_size, 2)
        ds = D.synthetic(cfg.data.name, min(n, SYNTHETIC_MAX), cfg.seed)
    objective = of_meta(ds.meta)   # classification, or a masked-LM corpus's MaskedLM (its BERT head)
    model = zoo.from_config(cfg.model, ds.num_classes, ds.input_shape)
    if objective.name == "mlm":
        model = with_head(model, "mlm", objective.predictions)
        if cfg.train.distill.teacher and cfg.train.distill.get("kind", "logits") != "tinybert_layers":
            raise UserError(f"train.distill.kind {cfg.train.distill.get('kind', 'logits')!r} distils class logits; "
                            f"allowed with a masked-LM dataset ({ds.name}): tinybert_layers (TinyBERT's "
                            f"task-agnostic distillation), or no train.distill.teacher")
    params = check_input(model, cfg.model.name, ds)
    mesh = make_mesh(cfg.run.devices, cfg.run.parallel, cfg.replicates)
    trainer = trainer_from_config(model, cfg.train, len(ds.y_train), augment=make_augment(cfg.data.augment, ds.zero),
                           mesh=mesh, replicates=replicate_mode(cfg.run.replicate_mode, model, ds.input_shape,
                                                                cfg.replicates, mesh),
                           drop_last=cfg.data.drop_last, objective=objective)
    spe = trainer.steps_per_epoch
    total = parse_duration(cfg.train.duration, spe, "train.duration")
    if ds.meta.get("vocab_size"):
        check_tokens(model, ds.name, ds.meta)
    elif hasattr(getattr(model, "cfg", None), "vocab_size") and not np.issubdtype(ds.x_train.dtype, np.integer):
        raise UserError(f"model {cfg.model.name!r} (BERT) reads token ids; dataset {ds.name!r} holds no text (float "
                        f"inputs); allowed: a text dataset (bbc_news, bbc_sop, bbc_nsp, bbc_news_mlm, glue/<task>) or "
                        f"integer token arrays")
    pretrained = None
    if cfg.model.pretrained:  # read once, before anything is written: files, keys and shapes checked
        kept = cfg.model.get("pretrained_layers", "")
        try:
            kept = [int(v) for v in split_list(kept)] if kept else None
        except ValueError:
            raise UserError(f"model.pretrained_layers {cfg.model.pretrained_layers!r}: allowed: a comma list of "
                            f"layer indices") from None
        pretrained = load_weights(resolve(cfg.model.pretrained), params, getattr(model, "cfg", None), kept)
    prunable = M.prunable_tree(params, cfg.prune.prunable)
    if cfg.prune.structure == "units":   # the output layer's units are the classes: never removed
        order = prunable_order(model, ds.input_shape, prunable)
        last = order[-1] if order else None
        prunable = jax.tree_util.tree_map_with_path(lambda p, pr: pr and M.path_str(p) != last, prunable)
    if not any(jax.tree.leaves(prunable)):
        raise UserError(f"prune.prunable {cfg.prune.prunable!r} matches no parameter; "
                        f"params: {', '.join(M.leaf_paths(params))}")
    s = Setup(cfg, ds, trainer, prunable, total, parse_duration(cfg.train.eval_every, spe, "train.eval_every"),
              parse_duration(cfg.run.checkpoint_every, spe, "run.checkpoint_every"), pretrained=pretrained)
    spec = cfg.train.distill.teacher
    if spec and T.own_level(spec) is None:   # another run's level: checked before anything is written
        s.teacher = T.load(spec, "", cfg.data, ds, cfg.replicates)
        distill.check_models(cfg.train.distill.get("kind", "logits"), model, s.teacher.model)
    elif spec and cfg.train.distill.get("kind", "logits") != "logits":
        distill.check_models(cfg.train.distill.kind, model, model)   # its own level: the same model
    if command.check is not None:
        command.check(s)
    return s


def check_input(model, name: str, ds):
    """One replicate's param shapes; a UserError when the data's inputs cannot go through the model."""
    try:
        k = jax.random.PRNGKey(0)
        shape = model_input_shape(model, ds.input_shape)
        variables = jax.eval_shape(lambda: model.init({"params": k, "dropout": k}, jnp.zeros((1, *shape)),
                                                      train=False))
    except Exception as e:   # flax / lax raise several types for a shape mismatch
        first = first_line(e)
        raise UserError(f"model {name!r} cannot take {ds.name} inputs of shape {tuple(ds.input_shape)} ({first}); "
                        f"choose a model for that shape (see `lth models`)") from None
    return variables["params"]


# ----- keys and initialization ---------------------------------------------------------------
@jax.jit
def _keys(seeds, purpose, index):
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(s), purpose), index))(seeds)


def keys(s: Setup, purpose: str, index: int = 0):
    """[R] keys, one per replicate, for a named purpose (PURPOSES) and an index (level, round)."""
    check_choice("key purpose", purpose, PURPOSES)
    return _keys(jnp.arange(s.replicates, dtype=jnp.uint32) + s.cfg.seed, jnp.uint32(PURPOSES[purpose]),
                 jnp.uint32(index))


def random_init(s: Setup, rng):
    return s.trainer.init_replicates(rng, s.input_shape)


def init_variables(s: Setup, rng):
    """[R] initial (params, model_state): random, with `model.pretrained` weights loaded over them."""
    params, ms = random_init(s, rng)
    if s.pretrained is not None:
        one = M.index(params, 0)
        fresh = (M.prunable_tree(one, s.cfg.lottery.reinit) if s.cfg.lottery.reinit
                 else jax.tree.map(lambda _: False, one))
        # every replicate gets the pretrained tensors; leaves re-drawn per level, and leaves the
        # checkpoint lacks (still shape structs: a BertModel's classifier), keep their own init
        params = jax.tree.map(
            lambda p, w, f: (p if f or isinstance(w, jax.ShapeDtypeStruct)
                             else jnp.broadcast_to(jnp.asarray(w), p.shape)),
            params, s.pretrained, fresh)
    return params, ms


# ----- one training run (an arm) -------------------------------------------------------------
def train_arm(s: Setup, adir: str, params, model_state, masks, start: int, data, *, captures=None, label="",
              rngs=None):
    """Train from (params ⊙ masks) at step `start` to the end, resuming from `adir` if possible.
    `rngs` = (step keys, data-order keys), one per replicate (default: the run's own). Returns
    (final state, per-replicate summary rows)."""
    t = s.trainer if data.teacher is None else s.distiller
    train_keys, data_keys = rngs if rngs is not None else (keys(s, "train"), keys(s, "data"))
    state = t.new_state(params, model_state, masks, start, train_keys, data_keys)
    metrics_path = paths.metrics(adir)
    if os.path.exists(metrics_path):
        rows = read_json(metrics_path, redo=adir)["replicates"]
        return checkpoint.load_final(adir, state), rows
    with checkpoint.Rolling(paths.rolling(adir)) as rolling:   # closed on every way out (errors, stops)
        history, pending = [], None
        latest = rolling.latest(state)
        seconds = 0.0   # wall time of the arm's training, summed over resumed sessions
        if latest is not None:
            state, meta = latest
            history, pending, seconds = meta["history"], meta["pending"], meta.get("seconds", 0.0)
        started = time.perf_counter()
        bar = tqdm(total=s.total - start, initial=int(np.asarray(state.step)[0]) - start, desc=label, file=terminal(),
                   disable=None if s.cfg.run.progress else True, leave=False, dynamic_ncols=True)

        def on_checkpoint(st, hist, pend):
            rolling.save(int(np.asarray(hosts.to_host(st.step))[0]), st, {"history": hist, "pending": pend,
                                                           "seconds": seconds + time.perf_counter() - started})

        state, history = fit(t, state, data, s.total, eval_every=s.eval_every, history=history,
                             checkpoint_every=s.checkpoint_every, on_checkpoint=on_checkpoint,
                             captures=captures, progress=bar, pending=pending)
        seconds += time.perf_counter() - started
        bar.close()
    checkpoint.save(paths.final(adir), state, redo=adir)
    rows = summarize(history)
    dens, per_layer = M.density(state.masks, s.prunable, axis=0)
    dens_all, _ = M.density(state.masks, jax.tree.map(lambda _: True, s.prunable), axis=0)  # every parameter
    diverged = np.asarray(state.diverged)
    for r, row in enumerate(rows):
        row.update(seed=s.cfg.seed + r % s.replicates, density=float(dens[r]), density_all_params=float(dens_all[r]),
                   density_per_layer={k: float(v[r]) for k, v in per_layer.items()},
                   diverged_at_step=int(diverged[r]) if diverged[r] >= 0 else None)
    if s.cfg.run.get("tensorboard", True) and hosts.is_main():
        events.write(adir, history)
    write_json(metrics_path, {"replicates": rows, "history": history, "seconds": round(seconds, 3)})
    if hosts.is_main():
        shutil.rmtree(paths.rolling(adir), ignore_errors=True)
    hosts.barrier(f"arm done {adir}")
    return state, rows
