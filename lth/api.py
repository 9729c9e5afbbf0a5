"""The public Python API (re-exported by `lth/__init__.py`): every study as a function returning a
`Result`, configs from a file, a name or a dict, and the building blocks a notebook composes by hand.
The `lth` command is a thin layer over the same functions (lth/cli). User errors raise
`lth.UserError` (a ValueError) with the one-line message the CLI prints."""
from __future__ import annotations

import dataclasses
import os

from lth.data import load
from lth.errors import Corrupt, UserError, first_line
from lth.harness import paths, run, rundir
from lth.harness.config import base, check_values, load_config, override_items, parse_duration
from lth.harness.rundir import read_json
from lth.harness.trainer import trainer_from_config
from lth.models import build
from lth.pruning import masks as M
from lth.pruning.at_init import default_rounds
from lth.pruning.at_init import prune_at_init as run_rounds
from lth.registry import STUDIES
from lth.scores import make_scorer
from lth.training import hosts
from lth.training.loop import device_data, fit, summarize


# ----- results -----------------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
    """A study's outcome: its run directory, its summary (the JSON it wrote, as Python objects), and
    its markdown table and plot."""

    study: str
    run_dir: str
    summary: dict

    def table(self) -> str:
        return STUDIES.get(self.study).table(self.summary)

    def plot(self, path: str | None = None) -> str:
        """Write the study's figure (PNG) to `path` (default: in the run directory); returns the path."""
        mod = STUDIES.get(self.study)
        if not hasattr(mod, "plot"):
            raise UserError(f"`{self.study}` has no plot; allowed: table()")
        return mod.plot(self.summary, path or os.path.join(self.run_dir, mod.PLOT_FILE))


# ----- running a study -----------------------------------------------------------------------------
def prepare(study: str, cfg, *, run_dir=None, out=None, replicates=None, progress=None):
    """(setup, run directory) of `study` for a ConfigDict: options applied, validated, data loaded and
    the run directory checked — all before anything is written."""
    mod = STUDIES.get(study)
    if replicates is not None:
        cfg.replicates = replicates
    if progress is not None:
        cfg.run.progress = bool(progress)
    if out:
        cfg.run.out = os.fspath(out)   # where sibling runs are looked up too (stability → the lottery runs)
    if hasattr(mod, "prepare_config"):
        mod.prepare_config(cfg)
    run.validate(cfg, mod.COMMAND)
    run_dir = os.fspath(run_dir) if run_dir else mod.COMMAND.run_dir(cfg)
    rundir.check_run_dir(run_dir, cfg, mod.COMMAND)
    return run.setup(cfg, mod.COMMAND, synthetic_ok=getattr(mod, "SYNTHETIC_OK", False)), run_dir


def prepare_from_run(study: str, run_dir, level=None, overrides=None, progress=False):
    """(job, results directory) of a study of one level of a finished run (FROM_RUN), every check done,
    nothing written."""
    mod = STUDIES.get(study)
    if not getattr(mod, "FROM_RUN", False):
        raise UserError(f"`{study}` starts from a config, not from a finished run; "
                        f"allowed: lth.{study}(cfg, overrides)")
    return mod.from_run(os.fspath(run_dir), override_items(overrides), level, bool(progress))


def execute(study: str, s, run_dir: str, log=print, repair: bool = False) -> Result:
    """Run `study` in its locked run directory (resuming what is there) and return its Result.
    `repair`: a corrupt or partial arm of this run (errors.Corrupt) is moved to RUN/quarantine/ and
    recomputed from what it depends on (the study resumes around it); else Corrupt is raised."""
    mod = STUDIES.get(study)
    # several processes: process 0 takes the lock and records the config, the others wait for it
    if not hosts.is_main():
        lock = None
    elif getattr(mod, "FROM_RUN", False):   # a results folder inside the finished run: locked, named by the study
        lock = rundir.RunLock(run_dir)
    else:
        lock = rundir.open_run_dir(run_dir, s.cfg, mod.COMMAND)
    hosts.barrier(f"open {run_dir}")
    try:
        out = _run_repairing(mod, s, run_dir, log if hosts.is_main() else (lambda *_: None), repair)
    finally:
        if lock is not None:
            lock.release()
    where = mod.results_dir(run_dir, s.cfg) if hasattr(mod, "results_dir") else run_dir
    return Result(study, where, out)


def _run_repairing(mod, s, run_dir, log, repair):
    """mod.run, with each Corrupt arm quarantined and the run resumed (at most once per arm)."""
    done = set()
    while True:
        try:
            return mod.run(s, run_dir, log=log)
        except Corrupt as e:
            if not repair or e.redo is None or e.redo in done:
                raise
            done.add(e.redo)
            moved = rundir.quarantine(run_dir, e.redo)
            hosts.barrier(f"quarantine {e.redo}")
            log(f"repair: {e.path} is {e.reason.split(' (')[0]}; {os.path.relpath(e.redo, run_dir)} moved to "
                f"{os.path.relpath(moved, run_dir)}, recomputing it")


def run_study(study: str, cfg=None, overrides=None, *, run_dir=None, out=None, replicates=None, progress=False,
              log=None, level=None, repair=False) -> Result:
    """Any registered study by name (lth.registry.STUDIES, or one added with lth.register('study', ...));
    `cfg` defaults to the study's DEFAULT_CONFIG, else mnist1d_mlp. A study of a finished run (FROM_RUN,
    e.g. compress) takes that run's directory as `run_dir` (and a `level` of it) instead of a config.
    `repair=True`: corrupt arms are quarantined and recomputed (see `execute`)."""
    mod = STUDIES.get(study)
    quiet = log or (lambda *_: None)
    if getattr(mod, "FROM_RUN", False):
        if run_dir is None:
            raise UserError(f"`{study}` needs run_dir, a finished `lth lottery` run directory")
        return execute(study, *prepare_from_run(study, run_dir, level, overrides, progress), log=quiet, repair=repair)
    cfg = getattr(mod, "DEFAULT_CONFIG", "mnist1d_mlp") if cfg is None else cfg
    s, rd = prepare(study, load_config(cfg, overrides), run_dir=run_dir, out=out, replicates=replicates,
                    progress=progress)
    return execute(study, s, rd, log=quiet, repair=repair)


def study_function(study: str):
    """`lth.NAME` for a registered study: NAME(cfg=its default, overrides=None, *, run_dir, out, replicates,
    progress, log, repair) → Result; for a study of a finished run, NAME(run_dir, level=None, overrides=None, *,
    progress, log, repair)."""
    mod = STUDIES.get(study)
    if getattr(mod, "FROM_RUN", False):
        def fn(run_dir, level=None, overrides=None, *, progress=False, log=None, repair=False) -> Result:
            return run_study(study, None, overrides, run_dir=run_dir, progress=progress, log=log, level=level,
                             repair=repair)
    else:
        def fn(cfg=getattr(mod, "DEFAULT_CONFIG", "mnist1d_mlp"), overrides=None, *, run_dir=None, out=None,
               replicates=None, progress=False, log=None, repair=False) -> Result:
            return run_study(study, cfg, overrides, run_dir=run_dir, out=out, replicates=replicates, progress=progress,
                             log=log, repair=repair)
    fn.__name__ = fn.__qualname__ = study
    fn.__doc__ = f"{mod.HELP} (`lth {study}`).\n\n{getattr(mod, 'DESCRIPTION', '')}\n\n{study_function.__doc__}"
    return fn


def open_run(run_dir) -> Result:
    """The Result of a finished (or partly finished) study from its directory: a run directory
    (summary.json), or a results folder a study writes its own file into (heads.json, results.json)."""
    d = os.fspath(run_dir)
    found = [(study, name) for study, mod in STUDIES.items()
             if (name := getattr(mod, "RESULT_FILE", paths.SUMMARY)) != paths.SUMMARY
             and os.path.exists(os.path.join(d, name))]
    if found:   # several studies write results.json: the folder they live in names the study (RUN/<study>/...)
        parent = os.path.basename(os.path.dirname(os.path.abspath(d)))
        study, name = next((f for f in found if f[0] == parent), found[0])
        return Result(study, d, read_json(os.path.join(d, name)))
    cfg, summary = paths.config(d), paths.summary(d)
    if not os.path.exists(cfg) or not os.path.exists(summary):
        raise UserError(f"{d!r} holds no lth results (no config.json and summary.json, heads.json or results.json); "
                        f"allowed: a run directory of a study that has finished at least one arm")
    study = read_json(cfg).get("command")
    if study not in STUDIES:
        raise UserError(f"{d!r} was written by an unknown command {study!r}; allowed: {', '.join(STUDIES.names())}")
    return Result(study, d, read_json(summary))


# ----- building blocks -----------------------------------------------------------------------------
def build_model(name: str, num_classes: int, input_shape, init="kaiming_normal", width: float = 1.0):
    """A Flax Linen model from the zoo (`lth models` lists the names); `init` a kernel-init name or an
    lth.models.Init. apply(variables, x, train) → logits."""
    return build(name, num_classes, init, input_shape, width)


def load_data(name: str = "mnist1d", **data_options):
    """A Dataset (whole numpy arrays, train / validation / test) by name, with `data.*` options
    (e.g. validation_size=500, normalize='train')."""

    full = base()
    cfg = full.data
    for k, v in {"name": name, **data_options}.items():
        if k not in cfg:
            raise UserError(f"unknown data option {k!r}; allowed: {', '.join(sorted(cfg))}")
        try:
            cfg[k] = v
        except (TypeError, ValueError):   # ml_collections refuses a value of another type
            raise UserError(f"bad value {v!r} for data.{k}; allowed: a {type(cfg[k]).__name__}") from None
    check_values(full)
    return load(cfg)


def score(name: str, apply_fn, variables, masks=None, batch=None, rng=None, prunable=".*kernel", input_shape=None,
          **options):
    """Scores (a pytree shaped like variables['params'], higher = kept) of pruning criterion `name`
    (synflow, snip, grasp, obd, magnitude, random, ...). `apply_fn(variables, x) → logits` in eval
    mode; `batch` (x, y) for the data-dependent scores (SynFlow needs `input_shape` without one);
    `options` are the config's `pai.*` keys (e.g. synflow_precision='float64', grasp_temperature=200.0)."""
    import jax


    prunable = _prunable(variables, prunable)
    shape = batch[0].shape[1:] if batch is not None else input_shape
    if shape is None and name == "synflow":
        raise UserError("score 'synflow' without a batch needs input_shape=(...) (the shape of one input)")
    _check_input(name, apply_fn, variables, batch, shape)
    scorer = make_scorer(name, apply_fn, variables, prunable, batch, tuple(shape or ()), **options)
    masks = M.ones_like(variables["params"]) if masks is None else masks
    return scorer(variables, masks, jax.random.PRNGKey(0) if rng is None else rng)


def _prunable(variables, prunable):
    """A bool tree of the prunable leaves: given, or from a path regex (a UserError when it matches none)."""
    import jax

    if not isinstance(variables, dict) or "params" not in variables:
        raise UserError(f"variables of type {type(variables).__name__}; allowed: the model's variables, a dict "
                        f"with 'params' (model.init(...))")
    tree = M.prunable_tree(variables["params"], prunable) if isinstance(prunable, str) else prunable
    if isinstance(prunable, str) and not any(jax.tree.leaves(tree)):
        raise UserError(f"prunable {prunable!r} matches no parameter; params: "
                        f"{', '.join(M.leaf_paths(variables['params']))}")
    return tree


def _check_input(name, apply_fn, variables, batch, shape):
    """A UserError when the model cannot take `batch` (x, y), or (SynFlow, no batch) inputs of `shape`."""
    import jax
    import jax.numpy as jnp

    if batch is not None:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2 or len(batch[0]) != len(batch[1]) \
                or not len(batch[1]):
            raise UserError("batch: allowed: a pair (x, y) of arrays with the same number (>= 1) of examples")
        x = jax.ShapeDtypeStruct((1, *batch[0].shape[1:]), batch[0].dtype)
    elif shape is not None:
        try:
            dims = tuple(shape)
        except TypeError:
            dims = None
        if dims is None or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise UserError(f"input_shape {shape!r}; allowed: a tuple of positive integers (one input's shape)")
        if name != "synflow":   # only SynFlow feeds inputs (ones of input_shape) through the model without data
            return
        x = jax.ShapeDtypeStruct((1, *dims), jnp.float32)
    else:
        return
    try:
        jax.eval_shape(lambda v: apply_fn(v, jnp.zeros(x.shape, x.dtype)), variables)
    except Exception as e:   # flax / lax raise several types for a shape mismatch
        raise UserError(f"inputs of shape {tuple(x.shape[1:])} do not fit the model ({first_line(e)}); "
                        f"allowed: the shape of one input the model was built for") from None


def prune_at_init(name: str, apply_fn, variables, density: float | None, *, batch=None, prunable=".*kernel",
                  rounds=0, schedule="exponential", scope="global", rng=None, input_shape=None, pattern=None,
                  **options):
    """Masks keeping `density` of the prunable weights after score-and-prune rounds of criterion
    `name` (rounds=0: its default, 100 for synflow, else 1), exact counts per round. `pattern`
    ('2:4'): N:M along each kernel's input axis (density None or N/M; lth/pruning/nm.py)."""
    import jax


    prunable = _prunable(variables, prunable)
    shape = batch[0].shape[1:] if batch is not None else input_shape
    if shape is None:
        raise UserError("prune_at_init without a batch needs input_shape=(...)")
    _check_input(name, apply_fn, variables, batch, shape)
    scorer = make_scorer(name, apply_fn, variables, prunable, batch, tuple(shape), **options)
    return run_rounds(scorer, variables, prunable, density, rounds=rounds or default_rounds(name), schedule=schedule,
                      scope=scope, rng=jax.random.PRNGKey(0) if rng is None else rng, pattern=pattern)


def train_masked(model, variables, masks, dataset, *, seed: int = 0, log=None, **train_options):
    """Train `variables` ⊙ `masks` (one replicate, no leading axis) on `dataset` with the one
    training loop (masked step: pruned weights stay exactly 0), `train.*` options as keywords
    (optimizer='sgd', lr=0.1, duration='10ep', batch_size=128, ...). Returns (variables, metrics):
    the trained params and model state, and the final evaluation {split: {loss, accuracy}}."""
    import jax


    tcfg = base().train
    for k, v in train_options.items():
        if k not in tcfg:
            raise UserError(f"unknown train option {k!r}; allowed: {', '.join(sorted(tcfg))}")
        tcfg[k] = v
    trainer = trainer_from_config(model, tcfg, len(dataset.y_train))
    total = parse_duration(tcfg.duration, trainer.steps_per_epoch, "duration")
    every = parse_duration(tcfg.eval_every, trainer.steps_per_epoch, "eval_every")
    stack = lambda t: jax.tree.map(lambda a: a[None], t)  # noqa: E731
    params = variables["params"]
    ms = {k: v for k, v in variables.items() if k != "params"}
    keys = jax.random.split(jax.random.PRNGKey(seed), 2)
    state = trainer.new_state(stack(params), stack(ms), stack(masks), 0, keys[:1], keys[1:])
    state, history = fit(trainer, state, device_data(trainer, dataset), total, eval_every=every, history=[])
    out = M.index({"params": state.params, **state.model_state}, 0)
    row = summarize(history)[0]
    if log:
        log(f"test accuracy {row.get('test_accuracy')}")
    return out, row
