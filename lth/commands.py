"""The bodies of the `lth` commands (the parser lives in lth/cli.py): config loading, the shared
shape of a training command (setup → locked run directory → run → table and plots → exit code),
and the sweep, data, bench and models commands. User errors raise UserError (cli: one line, exit 2)."""
from __future__ import annotations

import importlib.util
import os
import sys
import time

from lth.errors import UserError, check_choice


def load_config(path: str, overrides=()):
    """get_config() of a configs/*.py file, with --set overrides applied."""
    from lth.config import apply_overrides

    if not os.path.isfile(path):
        raise UserError(f"config file {path!r} not found; allowed: a Python file defining get_config(), e.g. configs/mnist1d_mlp.py")
    spec = importlib.util.spec_from_file_location("lth_user_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        cfg = module.get_config()
    except AttributeError:
        raise UserError(f"config file {path!r} defines no get_config()") from None
    apply_overrides(cfg, overrides)
    return cfg


def prepare_run(args, command, cfg=None, synthetic_ok=False):
    """Config with the command-line options applied, validated, set up (data loaded) and its run
    directory checked — all before anything is written. Returns (setup, run_dir)."""
    from lth import experiment, run

    cfg = cfg if cfg is not None else load_config(args.config, args.set)
    if getattr(args, "replicates", None) is not None:
        cfg.replicates = args.replicates
    if getattr(args, "no_progress", False):
        cfg.run.progress = False
    if getattr(args, "out", None):
        cfg.run.out = args.out   # where sibling runs are looked up too (stability → the lottery run)
    run.validate(cfg, command)
    run_dir = args.run_dir or command.run_dir(cfg, args.out)
    experiment.check_run_dir(run_dir, cfg, command)
    return run.setup(cfg, command, synthetic_ok=synthetic_ok), run_dir


def _train_command(args, command, describe, execute, report, outcome=lambda out: out) -> int:
    """The shape every training command shares: setup and checks, the locked run directory, a header
    line, the run, then `report(out, run_dir)` → lines (table, files); exit 3 if a replicate diverged."""
    from lth import experiment

    s, run_dir = prepare_run(args, command)
    lock = experiment.open_run_dir(run_dir, s.cfg, command)  # noqa: F841  (held until the command returns)
    cfg = s.cfg
    print(f"run directory: {run_dir}  ({cfg.model.name} on {cfg.data.name}, {describe(s)}, R={cfg.replicates})",
          flush=True)
    t0 = time.time()
    out = execute(s, run_dir)
    print()
    print("\n".join(report(out, run_dir, cfg)))
    print(f"time: {time.time() - t0:.1f} s")
    return diverged_exit(outcome(out))


def diverged_exit(summary) -> int:
    """Exit code 3 (and one line on stderr) when any arm had a diverged replicate, else 0."""
    from lth.summary import any_diverged

    n = any_diverged(summary)
    if n:
        print(f"lth: {n} arm(s) had a diverged replicate (non-finite or too large training loss); "
              f"see diverged_at_step in summary.json", file=sys.stderr)
        return 3
    return 0


def lottery(args) -> int:
    from analysis.plots import accuracy_vs_density
    from analysis.tables import lottery_table
    from lth import lottery as imp

    def report(summary, run_dir, cfg):
        plot = accuracy_vs_density(summary, os.path.join(run_dir, "accuracy_vs_density.png"))
        return [lottery_table(summary), "", f"summary: {os.path.join(run_dir, 'summary.json')}", f"plot: {plot}"]
    return _train_command(args, imp.COMMAND, lambda s: f"{s.total} iterations/level, {s.cfg.lottery.levels} levels",
                          imp.run, report)


def heads(args) -> int:
    from analysis.plots import heads_curve
    from analysis.tables import heads_table
    from lth import heads as H

    def report(out, run_dir, cfg):
        results = H.results_dir(run_dir, cfg)
        plot = heads_curve(out, os.path.join(results, "heads.png"))
        return [heads_table(out), "", f"results: {os.path.join(results, 'heads.json')}", f"plot: {plot}"]
    return _train_command(args, H.command(), lambda s: f"heads pruned in steps of {s.cfg.heads.step:g}", H.run, report,
                          outcome=lambda out: {})


def pai(args) -> int:
    from analysis.plots import accuracy_vs_compression
    from analysis.tables import pai_table
    from lth import pai_run

    def report(summary, run_dir, cfg):
        plot = accuracy_vs_compression(summary, os.path.join(run_dir, "accuracy_vs_compression.png"))
        return [pai_table(summary), "", f"summary: {os.path.join(run_dir, 'summary.json')}", f"plot: {plot}"]
    return _train_command(args, pai_run.COMMAND, lambda s: f"compression {s.cfg.pai.compression}", pai_run.run, report)


def stability(args) -> int:
    from analysis.plots import stability_plots
    from analysis.tables import stability_table
    from lth import stability as ST

    def report(summary, run_dir, cfg):
        plot = stability_plots(summary, os.path.join(run_dir, "stability.png"))
        return [stability_table(summary), "", f"summary: {os.path.join(run_dir, 'summary.json')}", f"plot: {plot}"]
    return _train_command(args, ST.COMMAND,
                          lambda s: f"rewind points {s.cfg.stability.rewind_points}, levels {s.cfg.stability.levels or '0'}",
                          ST.run, report, outcome=lambda summary: {"arms": [p["copies"] for p in summary["points"]]})


COLLAPSE_FLAGS = {  # flag → config key (the config's value is the one default)
    "model": "model.name", "width": "model.width", "dataset": "data.name", "data_dir": "data.data_dir",
    "seed": "seed", "methods": "collapse.methods", "max_log10": "collapse.max_log10", "step": "collapse.step",
    "init": "collapse.init", "rounds": "pai.rounds", "schedule": "pai.schedule", "scope": "pai.scope",
    "batch_size": "pai.batch_size", "obd_method": "pai.obd_method", "obd_probes": "pai.obd_probes",
    "precision": "pai.synflow_precision",
}


def collapse(args) -> int:
    from analysis import collapse_plots
    from analysis.tables import collapse_table
    from lth import collapse as C, experiment

    sets = [f"{key}={getattr(args, flag)}" for flag, key in COLLAPSE_FLAGS.items() if getattr(args, flag) is not None]
    cfg = load_config(args.config, sets + args.set)
    C.resolve_init(cfg)
    args.run_dir = args.run_dir or args.out_dir
    s, run_dir = prepare_run(args, C.COMMAND, cfg=cfg, synthetic_ok=True)
    lock = experiment.open_run_dir(run_dir, s.cfg, C.COMMAND)  # noqa: F841  (held until the command returns)
    print(f"run directory: {run_dir}  ({cfg.model.name} ×{cfg.model.width:g}, init {cfg.collapse.init}: "
          f"{cfg.model.init}; methods {cfg.collapse.methods})", flush=True)
    summary = C.run(s, run_dir)
    print()
    print(collapse_table(summary))
    print(f"\nsummary: {os.path.join(run_dir, 'summary.json')}")
    print("plots:", collapse_plots.layer_density(summary, os.path.join(run_dir, "layer_density.png")),
          collapse_plots.critical(summary, os.path.join(run_dir, "critical_compression.png")))
    return 0


def data(args) -> int:
    from lth.data import tfds_source

    if args.action == "prepare":
        from lth.data.text import GLUE

        allowed = ("mnist", "fashion_mnist", "cifar10", "cifar100", *(f"glue/{t}" for t in GLUE))
        if args.name not in allowed:
            raise UserError(f"unknown dataset {args.name!r} to prepare; allowed: {', '.join(allowed)}")
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            raise UserError("preparing tfds data needs TensorFlow: pip install -e '.[prepare]'") from None
        print(tfds_source.prepare(args.name, args.data_dir))
    return 0


def bench(args) -> int:
    import jax

    from lth import bench as B
    from lth.models import registry

    for name in args.model:
        registry.find(name)
    if args.dataset is not None:
        from lth.data.registry import SHAPES
        check_choice("--dataset", args.dataset, sorted(SHAPES))
    earlier = B.load(args.compare) if args.compare else None   # checked before any timing
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5:   # on a few cores a concurrent job halves the figures
        print(f"warning: load average {load:.1f}: other processes are running; timings will read low", file=sys.stderr)
    if args.synflow:
        rows = []
        for precision in ("auto", "float64"):
            r = B.synflow_bench(args.synflow_model, args.rounds, 3.0, precision, args.width)
            rows.append(r)
            print(f"SynFlow {r['rounds']} rounds, {r['model']} (CIFAR-10 shapes) to 10^{r['compression_log10']:g}, "
                  f"{r['precision']}: total {r['total_s']:.1f} s = forward/backward {r['score_s']:.1f} s + "
                  f"selection {r['select_s']:.1f} s (+ compile/first call {r['compile_s']:.1f} s); kept {r['kept']:,}, "
                  f"fewest in a layer {r['min_layer_kept']}", flush=True)
        return B.save_and_compare(args, {"kind": "synflow", "rows": rows}, earlier)
    if args.obd:
        r = B.obd_bench()
        print(f"OBD on LeNet-300-100 ({r['params']:,} params, batch {r['batch']}): Hutchinson "
              f"{1000 * r['hutchinson_s_per_probe']:.1f} ms/probe; exact diagonal {1000 * r['exact_s_per_param']:.2f} "
              f"ms/param → {r['exact_full_s_projected']:.0f} s for all parameters")
        return 0
    peak = B.matmul_peak()
    print(f"device: {jax.devices()[0].device_kind} ×{len(jax.devices())} ({jax.default_backend()}); "
          f"measured f32 matmul peak {peak:.1f} GFLOP/s", flush=True)
    rows = []
    for name in args.model:
        rows.append(B.bench_model(name, args.batch_size, args.replicates, args.width, args.devices, args.seconds,
                                      args.replicate_mode, args.conv_impl, args.dataset))
        print(f"  {name}: {rows[-1]['steps_per_s']:.2f} steps/s", flush=True)
    print(B.table(rows, peak))
    return B.save_and_compare(args, {"kind": "train", "peak_gflops": peak, "rows": rows}, earlier)


def compress(args) -> int:
    from lth import compress as C, experiment

    s, level, out_dir = C.prepare(args.run_dir, args.set, args.level, not args.no_progress)
    lock = experiment.RunLock(out_dir)  # noqa: F841  (one process per results directory)
    print(f"compressing level {level} of {args.run_dir} ({s.cfg.model.name} on {s.cfg.data.name}, R={s.replicates}) "
          f"→ {out_dir}", flush=True)
    t0 = time.time()
    result = C.run(s, args.run_dir, level, out_dir)
    print()
    print(C.table(result))
    print(f"\nresults: {os.path.join(out_dir, 'results.json')}\ntime: {time.time() - t0:.1f} s")
    return 0


def models(args) -> int:
    from lth.models import names

    print("\n".join(names()))
    return 0
