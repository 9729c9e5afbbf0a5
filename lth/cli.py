"""Command line: `lth lottery`, `lth heads`, `lth pai`, `lth collapse`, `lth data prepare`, `lth bench`,
`lth models`. User errors: one line, exit 2."""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

from lth.errors import UserError

EPILOG = "Config keys are documented in lth/config.py; configs/*.py hold ready-made experiments."


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


def cmd_lottery(args) -> int:
    from analysis.plots import accuracy_vs_density
    from analysis.tables import lottery_table
    from lth import experiment, lottery

    s, run_dir = prepare_run(args, lottery.COMMAND)
    cfg = s.cfg
    lock = experiment.open_run_dir(run_dir, cfg, lottery.COMMAND)  # noqa: F841  (held until the command returns)
    print(f"run directory: {run_dir}  ({cfg.model.name} on {cfg.data.name}, {s.total} iterations/level, "
          f"{cfg.lottery.levels} levels, R={cfg.replicates})", flush=True)
    t0 = time.time()
    summary = lottery.run(s, run_dir)
    print()
    print(lottery_table(summary))
    plot = accuracy_vs_density(summary, os.path.join(run_dir, "accuracy_vs_density.png"))
    print(f"\nsummary: {os.path.join(run_dir, 'summary.json')}\nplot: {plot}\ntime: {time.time() - t0:.1f} s")
    return diverged_exit(summary)


def diverged_exit(summary) -> int:
    """Exit code 3 (and one line on stderr) when any arm had a diverged replicate, else 0."""
    from lth.run import any_diverged

    n = any_diverged(summary)
    if n:
        print(f"lth: {n} arm(s) had a diverged replicate (non-finite or too large training loss); "
              f"see diverged_at_step in summary.json", file=sys.stderr)
        return 3
    return 0


def cmd_heads(args) -> int:
    from analysis.plots import heads_curve
    from analysis.tables import heads_table
    from lth import experiment, heads

    command = heads.command()
    s, run_dir = prepare_run(args, command)
    lock = experiment.open_run_dir(run_dir, s.cfg, command)  # noqa: F841  (held until the command returns)
    print(f"run directory: {run_dir}  ({s.cfg.model.name} on {s.cfg.data.name}, heads pruned in steps of "
          f"{s.cfg.heads.step:g}, R={s.cfg.replicates})", flush=True)
    t0 = time.time()
    out = heads.run(s, run_dir)
    print()
    print(heads_table(out))
    results = heads.results_dir(run_dir, s.cfg)
    plot = heads_curve(out, os.path.join(results, "heads.png"))
    print(f"\nresults: {os.path.join(results, 'heads.json')}\nplot: {plot}\ntime: {time.time() - t0:.1f} s")
    return 0


def cmd_pai(args) -> int:
    from analysis.plots import accuracy_vs_compression
    from analysis.tables import pai_table
    from lth import experiment, pai_run

    s, run_dir = prepare_run(args, pai_run.COMMAND)
    cfg = s.cfg
    lock = experiment.open_run_dir(run_dir, cfg, pai_run.COMMAND)  # noqa: F841  (held until the command returns)
    print(f"run directory: {run_dir}  ({cfg.model.name} on {cfg.data.name}, compression {cfg.pai.compression})", flush=True)
    summary = pai_run.run(s, run_dir)
    print()
    print(pai_table(summary))
    plot = accuracy_vs_compression(summary, os.path.join(run_dir, "accuracy_vs_compression.png"))
    print(f"\nsummary: {os.path.join(run_dir, 'summary.json')}\nplot: {plot}")
    return diverged_exit(summary)


def cmd_stability(args) -> int:
    from analysis.plots import stability_plots
    from analysis.tables import stability_table
    from lth import experiment, stability

    s, run_dir = prepare_run(args, stability.COMMAND)
    cfg = s.cfg
    lock = experiment.open_run_dir(run_dir, cfg, stability.COMMAND)  # noqa: F841  (held until the command returns)
    print(f"run directory: {run_dir}  ({cfg.model.name} on {cfg.data.name}, rewind points "
          f"{cfg.stability.rewind_points}, levels {cfg.stability.levels or '0'}, R={cfg.replicates})", flush=True)
    t0 = time.time()
    summary = stability.run(s, run_dir)
    print()
    print(stability_table(summary))
    plot = stability_plots(summary, os.path.join(run_dir, "stability.png"))
    print(f"\nsummary: {os.path.join(run_dir, 'summary.json')}\nplot: {plot}\ntime: {time.time() - t0:.1f} s")
    return diverged_exit({"arms": [p["copies"] for p in summary["points"]]})


COLLAPSE_FLAGS = {  # flag → config key (the config's value is the one default)
    "model": "model.name", "width": "model.width", "dataset": "data.name", "data_dir": "data.data_dir",
    "seed": "seed", "methods": "collapse.methods", "max_log10": "collapse.max_log10", "step": "collapse.step",
    "init": "collapse.init", "rounds": "pai.rounds", "schedule": "pai.schedule", "scope": "pai.scope",
    "batch_size": "pai.batch_size", "obd_method": "pai.obd_method", "obd_probes": "pai.obd_probes",
    "precision": "pai.synflow_precision",
}


def cmd_collapse(args) -> int:
    from analysis import collapse_plots
    from analysis.tables import collapse_table
    from lth import collapse, experiment

    sets = [f"{key}={getattr(args, flag)}" for flag, key in COLLAPSE_FLAGS.items() if getattr(args, flag) is not None]
    cfg = load_config(args.config, sets + args.set)
    collapse.resolve_init(cfg)
    args.run_dir = args.run_dir or args.out_dir
    s, run_dir = prepare_run(args, collapse.COMMAND, cfg=cfg, synthetic_ok=True)
    lock = experiment.open_run_dir(run_dir, s.cfg, collapse.COMMAND)  # noqa: F841  (held until the command returns)
    print(f"run directory: {run_dir}  ({cfg.model.name} ×{cfg.model.width:g}, init {cfg.collapse.init}: "
          f"{cfg.model.init}; methods {cfg.collapse.methods})", flush=True)
    summary = collapse.run(s, run_dir)
    print()
    print(collapse_table(summary))
    print(f"\nsummary: {os.path.join(run_dir, 'summary.json')}")
    print("plots:", collapse_plots.layer_density(summary, os.path.join(run_dir, "layer_density.png")),
          collapse_plots.critical(summary, os.path.join(run_dir, "critical_compression.png")))
    return 0


def cmd_data(args) -> int:
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


def cmd_bench(args) -> int:
    import jax

    from lth import bench
    from lth.models import registry

    for name in args.model:
        registry.find(name)
    earlier = bench.load(args.compare) if args.compare else None   # checked before any timing
    if args.synflow:
        rows = []
        for precision in ("auto", "float64"):
            r = bench.synflow_bench(args.synflow_model, args.rounds, 3.0, precision, args.width)
            rows.append(r)
            print(f"SynFlow {r['rounds']} rounds, {r['model']} (CIFAR-10 shapes) to 10^{r['compression_log10']:g}, "
                  f"{r['precision']}: total {r['total_s']:.1f} s = forward/backward {r['score_s']:.1f} s + "
                  f"selection {r['select_s']:.1f} s (+ compile/first call {r['compile_s']:.1f} s); kept {r['kept']:,}, "
                  f"fewest in a layer {r['min_layer_kept']}", flush=True)
        return bench.save_and_compare(args, {"kind": "synflow", "rows": rows}, earlier)
    if args.obd:
        r = bench.obd_bench()
        print(f"OBD on LeNet-300-100 ({r['params']:,} params, batch {r['batch']}): Hutchinson "
              f"{1000 * r['hutchinson_s_per_probe']:.1f} ms/probe; exact diagonal {1000 * r['exact_s_per_param']:.2f} "
              f"ms/param → {r['exact_full_s_projected']:.0f} s for all parameters")
        return 0
    peak = bench.matmul_peak()
    print(f"device: {jax.devices()[0].device_kind} ×{len(jax.devices())} ({jax.default_backend()}); "
          f"measured f32 matmul peak {peak:.1f} GFLOP/s", flush=True)
    rows = []
    for name in args.model:
        rows.append(bench.bench_model(name, args.batch_size, args.replicates, args.width, args.devices, args.seconds,
                                      args.replicate_mode, args.conv_impl))
        print(f"  {name}: {rows[-1]['steps_per_s']:.2f} steps/s", flush=True)
    print(bench.table(rows, peak))
    return bench.save_and_compare(args, {"kind": "train", "peak_gflops": peak, "rows": rows}, earlier)


def cmd_models(args) -> int:
    from lth.models import names

    print("\n".join(names()))
    return 0


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage + error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def run_options(p) -> None:
    """Options of the commands that train from a config (lottery, pai)."""
    p.add_argument("--config", required=True, help="configs/<name>.py defining get_config()")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set lottery.levels=3 (repeatable)")
    p.add_argument("--replicates", type=int, help="train R seeds together in one compiled program")
    p.add_argument("--out", help="root folder of run directories (default: config run.out, 'runs')")
    p.add_argument("--run-dir", help="exact run directory (default: <out>/<name>-<config hash>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="lth", description="Lottery tickets and pruning at initialization (JAX).",
                                epilog=EPILOG)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    lot = sub.add_parser("lottery", help="iterative magnitude pruning with rewinding, and its controls",
                         description="Train levels 0..L of IMP (resumes where it stopped; finished levels are "
                                     "skipped), print a table and write summary.json and a plot.", epilog=EPILOG)
    run_options(lot)
    lot.set_defaults(func=cmd_lottery)

    he = sub.add_parser("heads", help="BERT head and MLP pruning by gate importance (Michel et al. 2019)",
                        description="Fine-tune the dense model (level 0 of the lottery run of the same config, "
                                    "reused if done), then prune attention heads, and separately MLPs, greedily "
                                    "by importance E|dL/dgate|; print accuracy vs heads kept, write heads.json and "
                                    "heads.png.", epilog=EPILOG)
    run_options(he)
    he.set_defaults(func=cmd_heads)

    pa = sub.add_parser("pai", help="prune at init to a target compression with each score, then train",
                        description="Prune at init (pai.methods, pai.compression, pai.rounds, pai.sanity, ...) and "
                                    "train each mask; writes summary.json with per-layer densities and accuracies.",
                        epilog=EPILOG)
    run_options(pa)
    pa.set_defaults(func=cmd_pai)

    st = sub.add_parser("stability", help="instability analysis: error barrier between two copies trained from step k",
                        description="For each rewind point k (stability.rewind_points) and level (0 = dense, and "
                                    "stability.levels from `lth lottery` of the same config), train two copies from "
                                    "step k with different data orders and measure the error along the line between "
                                    "them (Frankle et al. 2020); print a table, write summary.json and stability.png.",
                        epilog=EPILOG)
    run_options(st)
    st.set_defaults(func=cmd_stability)

    co = sub.add_parser("collapse", help="layer-collapse sweep of pruning-at-init scores (no training)",
                        description="Prune at init to 10^0 .. 10^MAX in steps of STEP with each method; report the "
                                    "weights kept per layer, each method's critical compression and whether it "
                                    "reaches max compression; write summary.json and PNG plots. A run directory: "
                                    "every (method, compression) point is saved when done and skipped on a rerun. "
                                    "Each flag sets one config key (shown); its default is the config's value.",
                        epilog=EPILOG)
    co.add_argument("--config", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                     "configs", "synflow_layer_collapse.py"),
                    help="config file (default: configs/synflow_layer_collapse.py: VGG-16, CIFAR-10 shapes)")
    co.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    co.add_argument("--model", help="model.name (see lth models)")
    co.add_argument("--methods", help="collapse.methods: comma list of scores")
    co.add_argument("--max-log10", type=float, help="collapse.max_log10: largest compression, as log10")
    co.add_argument("--step", type=float, help="collapse.step: sweep step in log10")
    co.add_argument("--dataset", help="data.name: input shapes and, if prepared, data for data-dependent scores")
    co.add_argument("--data-dir", help="data.data_dir: tfds data dir")
    co.add_argument("--width", type=float, help="model.width: width multiplier")
    co.add_argument("--init", help="collapse.init: synflow (the SynFlow code's init for the model), model "
                                   "(model.* as configured), or a kernel init name, e.g. kaiming_normal, "
                                   "kaiming_truncated_normal (zero biases, BatchNorm γ = 1)")
    co.add_argument("--seed", type=int, help="seed")
    co.add_argument("--rounds", type=int, help="pai.rounds: rounds per method (0 = synflow 100, others 1)")
    co.add_argument("--schedule", choices=["exponential", "linear"], help="pai.schedule")
    co.add_argument("--scope", choices=["global", "layerwise"], help="pai.scope")
    co.add_argument("--batch-size", type=int, help="pai.batch_size: examples for data-dependent scores")
    co.add_argument("--obd-method", choices=["exact", "hutchinson", "fisher"], help="pai.obd_method")
    co.add_argument("--obd-probes", type=int, help="pai.obd_probes: Hutchinson probes")
    co.add_argument("--precision", choices=["float64", "scaled32", "auto"],
                    help="pai.synflow_precision (scaled32/auto: faster, but can collapse layers near max compression)")
    co.add_argument("--out", help="root folder of run directories (default: config run.out, 'runs')")
    co.add_argument("--run-dir", help="exact run directory (default: <out>/collapse_<model>_w<width>-<config hash>)")
    co.add_argument("--out-dir", help=argparse.SUPPRESS)  # the former name of --run-dir
    co.set_defaults(func=cmd_collapse)

    data = sub.add_parser("data", help="prepare tfds datasets (needs internet and the [prepare] extra)")
    data.add_argument("action", choices=["prepare"], help="prepare: download and convert to array_record")
    data.add_argument("name", help="mnist | fashion_mnist | cifar10 | cifar100 | glue/<task> (sst2, mnli, ...)")
    data.add_argument("--data-dir", help="tfds data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    data.set_defaults(func=cmd_data)

    b = sub.add_parser("bench", help="train-step speed per model: compile time, steps/s, GFLOP/s, vmap vs sequential")
    b.add_argument("--model", nargs="+", default=["lenet_300_100", "lenet5", "resnet20", "vgg16", "resnet18"],
                   help="model names (default: the zoo)")
    b.add_argument("--batch-size", type=int, help="batch size (default: the model's recipe, 60 or 128)")
    b.add_argument("--replicates", type=int, default=2, help="R for the vmapped-replicates comparison (1 = skip)")
    b.add_argument("--width", type=float, default=1.0, help="width multiplier")
    b.add_argument("--devices", type=int, default=0, help="data-parallel devices (0 = all)")
    b.add_argument("--seconds", type=float, default=2.0, help="timing window per measurement")
    b.add_argument("--replicate-mode", default="auto", choices=["auto", "vmap", "unroll"],
                   help="how R replicates share a step (auto: unroll conv nets on CPU, vmap otherwise)")
    b.add_argument("--save", metavar="FILE", help="write the results as JSON")
    b.add_argument("--compare", metavar="FILE", help="print the ratio of these results to an earlier --save FILE")
    b.add_argument("--conv-impl", default="auto", choices=["auto", "xla", "gemm"],
                   help="convolutions: auto (gemm on CPU, xla elsewhere), xla or gemm (model.conv_impl)")
    b.add_argument("--synflow", action="store_true", help="time iterative SynFlow to 10^3 instead (both precisions)")
    b.add_argument("--synflow-model", default="vgg16", help="model for --synflow")
    b.add_argument("--rounds", type=int, default=100, help="SynFlow rounds for --synflow")
    b.add_argument("--obd", action="store_true", help="time OBD Hessian diagonals on LeNet-300-100 instead")
    b.set_defaults(func=cmd_bench)

    models = sub.add_parser("models", help="list model names")
    models.set_defaults(func=cmd_models)
    return p


def main(argv=None) -> int:
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)  # tfds/orbax chatter, not the user's business
    p = parser()
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    from lth.signals import Stopped, raise_on_sigterm

    raise_on_sigterm()
    try:
        return args.func(args)
    except UserError as e:
        print(f"lth: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or signals.Stopped for SIGINT / SIGTERM (state saved at the step)
        signum = getattr(e, "signum", 2)
        print(f"\nlth: stopped by {'SIGTERM' if signum == 15 else 'SIGINT'}; rerun the same command to resume",
              file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
