"""The public Python API (re-exported by `lth/__init__.py`): every study as a function returning a
`Result`, configs from a file, a name or a dict, and the building blocks a notebook composes by hand.
The `lth` command is a thin layer over the same functions (lth/commands.py). User errors raise
`lth.UserError` (a ValueError) with the one-line message the CLI prints."""
from __future__ import annotations

import dataclasses
import os

from lth import layout as L, studies
from lth.errors import UserError

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


# ----- configs -----------------------------------------------------------------------------------
def load_config(cfg="mnist1d_mlp", overrides=None):
    """A ConfigDict from `cfg`: a path to a configs/*.py file, the name of one ('mnist1d_mlp'), a
    ConfigDict (copied), or a dict {'config': path or name, 'train.lr': 0.1, ...}; `overrides`
    ({'lottery.levels': 2} or ['lottery.levels=2']) are applied on top, type-checked like --set."""
    import ml_collections

    from lth.commands import load_config as from_file
    from lth.config import apply_overrides

    items = _items(overrides)
    if isinstance(cfg, dict):
        cfg = dict(cfg)
        base = cfg.pop("config", "mnist1d_mlp")
        items = _items(cfg) + items
        cfg = base
    if isinstance(cfg, ml_collections.ConfigDict):
        out = cfg.copy_and_resolve_references()
        apply_overrides(out, items)
        return out
    if not isinstance(cfg, (str, os.PathLike)):
        raise UserError(f"config {cfg!r}; allowed: a configs/*.py path, a config name, a ConfigDict or a dict")
    path = os.fspath(cfg)
    if not os.path.isfile(path) and os.path.isfile(os.path.join(CONFIGS, path + ".py")):
        path = os.path.join(CONFIGS, path + ".py")
    if not os.path.isfile(path):
        names = sorted(f[:-3] for f in os.listdir(CONFIGS) if f.endswith(".py")) if os.path.isdir(CONFIGS) else []
        raise UserError(f"config {path!r} not found; allowed: a Python file defining get_config(), or one of "
                        f"{', '.join(names)}")
    return from_file(path, items)


def _items(overrides) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return [f"{k}={v}" for k, v in overrides.items()]
    return list(overrides)


# ----- results -----------------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
    """A study's outcome: its run directory, its summary (the JSON it wrote, as Python objects), and
    its markdown table and plot."""

    study: str
    run_dir: str
    summary: dict

    def _module(self):
        if self.study == "compress":   # run by lth.compress (a lottery run's level), reported like the others
            from lth.studies import compress
            return compress
        return studies.get(self.study)

    def table(self) -> str:
        return self._module().table(self.summary)

    def plot(self, path: str | None = None) -> str:
        """Write the study's figure (PNG) to `path` (default: in the run directory); returns the path."""
        mod = self._module()
        if not hasattr(mod, "plot"):
            raise UserError(f"`{self.study}` has no plot; allowed: table()")
        return mod.plot(self.summary, path or os.path.join(self.run_dir, mod.PLOT_FILE))


# ----- running a study -----------------------------------------------------------------------------
def prepare(study: str, cfg, *, run_dir=None, out=None, replicates=None, progress=None):
    """(setup, run directory) of `study` for a ConfigDict: options applied, validated, data loaded and
    the run directory checked — all before anything is written."""
    from lth import experiment, run

    mod = studies.get(study)
    command = studies.command(mod)
    if replicates is not None:
        cfg.replicates = replicates
    if progress is not None:
        cfg.run.progress = bool(progress)
    if out:
        cfg.run.out = os.fspath(out)   # where sibling runs are looked up too (stability → the lottery runs)
    if hasattr(mod, "prepare_config"):
        mod.prepare_config(cfg)
    run.validate(cfg, command)
    run_dir = os.fspath(run_dir) if run_dir else command.run_dir(cfg)
    experiment.check_run_dir(run_dir, cfg, command)
    return run.setup(cfg, command, synthetic_ok=getattr(mod, "SYNTHETIC_OK", False)), run_dir


def execute(study: str, s, run_dir: str, log=print) -> Result:
    """Run `study` in its locked run directory (resuming what is there) and return its Result."""
    from lth import experiment

    from lth import distributed

    mod = studies.get(study)
    # several processes: process 0 takes the lock and records the config, the others wait for it
    lock = experiment.open_run_dir(run_dir, s.cfg, studies.command(mod)) if distributed.is_main() else None
    distributed.barrier(f"open {run_dir}")
    try:
        out = mod.run(s, run_dir, log=log if distributed.is_main() else (lambda *_: None))
    finally:
        if lock is not None:
            lock.release()
    where = mod.results_dir(run_dir, s.cfg) if hasattr(mod, "results_dir") else run_dir
    return Result(study, where, out)


def run_study(study: str, cfg=None, overrides=None, *, run_dir=None, out=None, replicates=None, progress=False,
              log=None) -> Result:
    """Any registered study by name (lth.studies.REGISTRY, or one added with lth.studies.register);
    `cfg` defaults to the study's DEFAULT_CONFIG."""
    mod = studies.get(study)
    if cfg is None:
        cfg = getattr(mod, "DEFAULT_CONFIG", None)
        if cfg is None:
            raise UserError(f"study {study!r} needs a config; allowed: a configs/*.py path or name, a ConfigDict or a dict")
    s, rd = prepare(study, load_config(cfg, overrides), run_dir=run_dir, out=out, replicates=replicates,
                    progress=progress)
    return execute(study, s, rd, log=log or (lambda *_: None))


def lottery(cfg="mnist1d_mlp", overrides=None, *, run_dir=None, out=None, replicates=None, progress=False,
            log=None) -> Result:
    """Iterative magnitude pruning with rewinding and its controls (`lth lottery`): levels 0..L,
    resumable; a finished run directory of the same config is reused. `log`: a print-like callable
    for progress lines (default: silent)."""
    return run_study("lottery", cfg, overrides, run_dir=run_dir, out=out, replicates=replicates, progress=progress, log=log)


def pai(cfg="mnist1d_mlp", overrides=None, *, run_dir=None, out=None, replicates=None, progress=False,
        log=None) -> Result:
    """Prune at init with each of `pai.methods` (and `pai.sanity` checks) to `pai.compression`, then
    train every mask (`lth pai`)."""
    return run_study("pai", cfg, overrides, run_dir=run_dir, out=out, replicates=replicates, progress=progress, log=log)


def sparse(cfg="mnist1d_mlp", overrides=None, *, run_dir=None, out=None, replicates=None, progress=False,
           log=None) -> Result:
    """Gradual magnitude pruning and sparse training from scratch (static, SET, RigL) at each of
    `sparse.densities`, layer densities from `sparse.distributions` (`lth sparse`)."""
    return run_study("sparse", cfg, overrides, run_dir=run_dir, out=out, replicates=replicates, progress=progress, log=log)


def compare(cfg="mnist1d_mlp", overrides=None, *, run_dir=None, out=None, replicates=None, progress=False,
            log=None) -> Result:
    """Every family at the same training budget (`lth compare`): IMP with its reinit control, the
    `compare.pai` scores and the `compare.sparse` methods at `compare.densities`, reusing the
    finished arms of `lth lottery`, `lth pai` and `lth sparse` runs of the same identity."""
    return run_study("compare", cfg, overrides, run_dir=run_dir, out=out, replicates=replicates, progress=progress, log=log)


def stability(cfg="mnist1d_mlp", overrides=None, *, run_dir=None, out=None, replicates=None, progress=False,
              log=None) -> Result:
    """Instability analysis (`lth stability`): error barriers between two copies trained from each
    rewind point k, for the dense network and the tickets of IMP rewound to k."""
    return run_study("stability", cfg, overrides, run_dir=run_dir, out=out, replicates=replicates, progress=progress, log=log)


def heads(cfg, overrides=None, *, run_dir=None, out=None, replicates=None, progress=False, log=None) -> Result:
    """BERT head and MLP pruning by gate importance (`lth heads`); `Result.run_dir` is its results
    folder inside the lottery run of the same config."""
    return run_study("heads", cfg, overrides, run_dir=run_dir, out=out, replicates=replicates, progress=progress, log=log)


def collapse(cfg="synflow_layer_collapse", overrides=None, *, run_dir=None, out=None, log=None) -> Result:
    """The layer-collapse sweep (`lth collapse`): prune at init to 10^0..10^collapse.max_log10 with
    each of `collapse.methods`, per-layer densities and the critical compression of each."""
    return run_study("collapse", cfg, overrides, run_dir=run_dir, out=out, log=log)


def compress(run_dir, level=None, overrides=None, *, progress=False, log=None) -> Result:
    """int8 PTQ / QAT / QAT + distillation of a level of a finished lottery run (`lth compress`);
    `overrides` may set compress.*, train.distill.* and run.* only."""
    from lth import experiment
    from lth.studies import compress as C

    s, lv, out_dir, plan = C.prepare(os.fspath(run_dir), _items(overrides), level, progress)
    lock = experiment.RunLock(out_dir)
    try:
        result = C.run(s, os.fspath(run_dir), lv, out_dir, log=log or (lambda *_: None), plan=plan)
    finally:
        lock.release()
    return Result("compress", out_dir, result)


def open_run(run_dir) -> Result:
    """The Result of a finished (or partly finished) study from its directory: a run directory
    (summary.json), a heads results folder (heads.json) or a compress results folder (results.json)."""
    from lth.experiment import read_json

    d = os.fspath(run_dir)
    for name, study in (("heads.json", "heads"), ("results.json", "compress")):
        if os.path.exists(os.path.join(d, name)):
            return Result(study, d, read_json(os.path.join(d, name)))
    cfg, summary = L.config(d), L.summary(d)
    if not os.path.exists(cfg) or not os.path.exists(summary):
        raise UserError(f"{d!r} holds no lth results (no config.json and summary.json, heads.json or results.json); "
                        f"allowed: a run directory of a study that has finished at least one arm")
    study = read_json(cfg).get("command")
    if study not in studies.REGISTRY:
        raise UserError(f"{d!r} was written by an unknown command {study!r}; allowed: {', '.join(studies.REGISTRY)}")
    return Result(study, d, read_json(summary))


# ----- building blocks -----------------------------------------------------------------------------
def build_model(name: str, num_classes: int, input_shape, init="kaiming_normal", width: float = 1.0):
    """A Flax Linen model from the zoo (`lth models` lists the names); `init` a kernel-init name or an
    lth.models.Init. apply(variables, x, train) → logits."""
    from lth.models import build
    return build(name, num_classes, init, tuple(input_shape), width)


def load_data(name: str = "mnist1d", **data_options):
    """A Dataset (whole numpy arrays, train / validation / test) by name, with `data.*` options
    (e.g. validation_size=500, normalize='train')."""
    from lth.config import base
    from lth.data import load

    cfg = base().data
    cfg.name = name
    for k, v in data_options.items():
        if k not in cfg:
            raise UserError(f"unknown data option {k!r}; allowed: {', '.join(sorted(cfg))}")
        cfg[k] = v
    return load(cfg)


def score(name: str, apply_fn, variables, masks=None, batch=None, rng=None, prunable=".*kernel", input_shape=None,
          **options):
    """Scores (a pytree shaped like variables['params'], higher = kept) of pruning criterion `name`
    (synflow, snip, grasp, obd, magnitude, random, ...). `apply_fn(variables, x) → logits` in eval
    mode; `batch` (x, y) for the data-dependent scores (SynFlow needs `input_shape` without one);
    `options` are the config's `pai.*` keys (e.g. synflow_precision='float64', grasp_temperature=200.0)."""
    import jax

    from lth import masks as M
    from lth.scores import make_scorer

    prunable = _prunable(variables, prunable)
    shape = batch[0].shape[1:] if batch is not None else input_shape
    if shape is None and name == "synflow":
        raise UserError("score 'synflow' without a batch needs input_shape=(...) (the shape of one input)")
    scorer = make_scorer(name, apply_fn, variables, prunable, batch, tuple(shape or ()), **options)
    masks = M.ones_like(variables["params"]) if masks is None else masks
    return scorer(variables, masks, jax.random.PRNGKey(0) if rng is None else rng)


def _prunable(variables, prunable):
    """A bool tree of the prunable leaves: given, or from a path regex."""
    from lth import masks as M
    return M.prunable_tree(variables["params"], prunable) if isinstance(prunable, str) else prunable


def prune_at_init(name: str, apply_fn, variables, density: float, *, batch=None, prunable=".*kernel", rounds=0,
                  schedule="exponential", scope="global", rng=None, input_shape=None, **options):
    """Masks keeping `density` of the prunable weights after score-and-prune rounds of criterion
    `name` (rounds=0: its default, 100 for synflow, else 1), exact counts per round."""
    import jax

    from lth.pruning_at_init import default_rounds, prune_at_init as run_rounds
    from lth.scores import make_scorer

    prunable = _prunable(variables, prunable)
    shape = batch[0].shape[1:] if batch is not None else input_shape
    if shape is None:
        raise UserError("prune_at_init without a batch needs input_shape=(...)")
    scorer = make_scorer(name, apply_fn, variables, prunable, batch, tuple(shape), **options)
    return run_rounds(scorer, variables, prunable, density, rounds=rounds or default_rounds(name), schedule=schedule,
                      scope=scope, rng=jax.random.PRNGKey(0) if rng is None else rng)


def train_masked(model, variables, masks, dataset, *, seed: int = 0, log=None, **train_options):
    """Train `variables` ⊙ `masks` (one replicate, no leading axis) on `dataset` with the one
    training loop (masked step: pruned weights stay exactly 0), `train.*` options as keywords
    (optimizer='sgd', lr=0.1, duration='10ep', batch_size=128, ...). Returns (variables, metrics):
    the trained params and model state, and the final evaluation {split: {loss, accuracy}}."""
    import jax

    from lth import masks as M
    from lth.config import base, parse_duration
    from lth.fit import device_data, fit, summarize
    from lth.train import make_trainer

    tcfg = base().train
    for k, v in train_options.items():
        if k not in tcfg:
            raise UserError(f"unknown train option {k!r}; allowed: {', '.join(sorted(tcfg))}")
        tcfg[k] = v
    trainer = make_trainer(model, tcfg, len(dataset.y_train))
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
