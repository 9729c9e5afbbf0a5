"""Command line: `lth lottery`, `lth data prepare`, `lth models`. User errors: one line, exit 2."""
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


def cmd_lottery(args) -> int:
    from analysis.plots import accuracy_vs_density
    from analysis.tables import lottery_table
    from lth import experiment, lottery

    cfg = load_config(args.config, args.set)
    if args.replicates is not None:
        cfg.replicates = args.replicates
    if args.no_progress:
        cfg.run.progress = False
    lottery.validate(cfg)
    run_dir = args.run_dir or experiment.run_dir_for(cfg, args.out)
    experiment.check_run_dir(run_dir, cfg)
    s = lottery.setup(cfg)
    experiment.open_run_dir(run_dir, cfg)
    print(f"run directory: {run_dir}  ({cfg.model.name} on {cfg.data.name}, {s.total} iterations/level, "
          f"{cfg.lottery.levels} levels, R={cfg.replicates})", flush=True)
    t0 = time.time()
    summary = lottery.run(s, run_dir)
    print()
    print(lottery_table(summary))
    plot = accuracy_vs_density(summary, os.path.join(run_dir, "accuracy_vs_density.png"))
    print(f"\nsummary: {os.path.join(run_dir, 'summary.json')}\nplot: {plot}\ntime: {time.time() - t0:.1f} s")
    return 0


def cmd_data(args) -> int:
    from lth.data import tfds_source

    if args.action == "prepare":
        allowed = ("mnist", "fashion_mnist", "cifar10", "cifar100")
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
    peak = bench.matmul_peak()
    print(f"device: {jax.devices()[0].device_kind} ×{len(jax.devices())} ({jax.default_backend()}); "
          f"measured f32 matmul peak {peak:.1f} GFLOP/s", flush=True)
    rows = []
    for name in args.model:
        rows.append(bench.bench_model(name, args.batch_size, args.replicates, args.width, args.devices, args.seconds,
                                      args.replicate_mode))
        print(f"  {name}: {rows[-1]['steps_per_s']:.2f} steps/s", flush=True)
    print(bench.table(rows, peak))
    return 0


def cmd_models(args) -> int:
    from lth.models import names

    print("\n".join(names()))
    return 0


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage + error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="lth", description="Lottery tickets and pruning at initialization (JAX).",
                                epilog=EPILOG)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    lot = sub.add_parser("lottery", help="iterative magnitude pruning with rewinding, and its controls",
                         description="Train levels 0..L of IMP (resumes where it stopped; finished levels are "
                                     "skipped), print a table and write summary.json and a plot.", epilog=EPILOG)
    lot.add_argument("--config", required=True, help="configs/<name>.py defining get_config()")
    lot.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field, e.g. --set lottery.levels=3 (repeatable)")
    lot.add_argument("--replicates", type=int, help="train R seeds together in one vmapped program")
    lot.add_argument("--out", help="root folder of run directories (default: config run.out, 'runs')")
    lot.add_argument("--run-dir", help="exact run directory (default: <out>/<name>-<config hash>)")
    lot.add_argument("--no-progress", action="store_true", help="no progress bar")
    lot.set_defaults(func=cmd_lottery)

    data = sub.add_parser("data", help="prepare tfds datasets (needs internet and the [prepare] extra)")
    data.add_argument("action", choices=["prepare"], help="prepare: download and convert to array_record")
    data.add_argument("name", help="mnist | fashion_mnist | cifar10 | cifar100")
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
    b.set_defaults(func=cmd_bench)

    models = sub.add_parser("models", help="list model names")
    models.set_defaults(func=cmd_models)
    return p


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    try:
        return args.func(args)
    except UserError as e:
        print(f"lth: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nlth: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
