"""Command line: `lth lottery`, `lth heads`, `lth pai`, `lth stability`, `lth collapse`, `lth data prepare`,
`lth bench`, `lth models` — the parser and the exit codes; command bodies in lth/commands.py.
User errors: one line, exit 2."""
from __future__ import annotations

import argparse
import os
import sys

from lth import commands
from lth.commands import load_config  # noqa: F401  (the config loader, also for scripts and tests)
from lth.errors import UserError

EPILOG = "Config keys are documented in lth/config.py; configs/*.py hold ready-made experiments."


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
    lot.set_defaults(func=commands.lottery)

    he = sub.add_parser("heads", help="BERT head and MLP pruning by gate importance (Michel et al. 2019)",
                        description="Fine-tune the dense model (level 0 of the lottery run of the same config, "
                                    "reused if done), then prune attention heads, and separately MLPs, greedily "
                                    "by importance E|dL/dgate|; print accuracy vs heads kept, write heads.json and "
                                    "heads.png.", epilog=EPILOG)
    run_options(he)
    he.set_defaults(func=commands.heads)

    pa = sub.add_parser("pai", help="prune at init to a target compression with each score, then train",
                        description="Prune at init (pai.methods, pai.compression, pai.rounds, pai.sanity, ...) and "
                                    "train each mask; writes summary.json with per-layer densities and accuracies.",
                        epilog=EPILOG)
    run_options(pa)
    pa.set_defaults(func=commands.pai)

    st = sub.add_parser("stability", help="instability analysis: error barrier between two copies trained from step k",
                        description="For each rewind point k (stability.rewind_points) and level (0 = dense, and "
                                    "stability.levels from `lth lottery` of the same config), train two copies from "
                                    "step k with different data orders and measure the error along the line between "
                                    "them (Frankle et al. 2020); print a table, write summary.json and stability.png.",
                        epilog=EPILOG)
    run_options(st)
    st.set_defaults(func=commands.stability)

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
    co.set_defaults(func=commands.collapse)

    data = sub.add_parser("data", help="prepare tfds datasets (needs internet and the [prepare] extra)")
    data.add_argument("action", choices=["prepare"], help="prepare: download and convert to array_record")
    data.add_argument("name", help="mnist | fashion_mnist | cifar10 | cifar100 | glue/<task> (sst2, mnli, ...)")
    data.add_argument("--data-dir", help="tfds data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    data.set_defaults(func=commands.data)

    b = sub.add_parser("bench", help="train-step speed per model: compile time, steps/s, GFLOP/s, vmap vs sequential")
    b.add_argument("--model", nargs="+", default=["lenet_300_100", "lenet5", "resnet20", "vgg16", "resnet18"],
                   help="model names (default: the zoo)")
    b.add_argument("--batch-size", type=int, help="batch size (default: the model's recipe, 60 or 128)")
    b.add_argument("--replicates", type=int, default=2, help="R for the vmapped-replicates comparison (1 = skip)")
    b.add_argument("--width", type=float, default=1.0, help="width multiplier")
    b.add_argument("--dataset", help="input shape and classes of this dataset (e.g. mnist1d: 40 features) "
                   "instead of the model's default (MNIST, CIFAR-10, 128 tokens)")
    b.add_argument("--devices", type=int, default=0, help="data-parallel devices (0 = all)")
    b.add_argument("--seconds", type=float, default=2.0, help="timing window per measurement")
    b.add_argument("--replicate-mode", default="auto", choices=["auto", "vmap", "unroll", "sequential"],
                   help="how R replicates share a step (auto: conv nets on CPU unrolled up to R = 2, sequential beyond; vmap otherwise)")
    b.add_argument("--save", metavar="FILE", help="write the results as JSON")
    b.add_argument("--compare", metavar="FILE", help="print the ratio of these results to an earlier --save FILE")
    b.add_argument("--conv-impl", default="auto", choices=["auto", "xla", "gemm"],
                   help="convolutions: auto (gemm on CPU, xla elsewhere), xla or gemm (model.conv_impl)")
    b.add_argument("--synflow", action="store_true", help="time iterative SynFlow to 10^3 instead (both precisions)")
    b.add_argument("--synflow-model", default="vgg16", help="model for --synflow")
    b.add_argument("--rounds", type=int, default=100, help="SynFlow rounds for --synflow")
    b.add_argument("--obd", action="store_true", help="time OBD Hessian diagonals on LeNet-300-100 instead")
    b.set_defaults(func=commands.bench)

    c = sub.add_parser("compress", help="int8 quantization (PTQ, QAT) and distillation of a ticket, with sizes in bytes",
                       description="Quantize a finished level of a `lth lottery` run to int8 with qwix (per-channel "
                                   "weights; activations per compress.activations), optionally fine-tune it "
                                   "quantization-aware (compress.qat_duration) and distilled (train.distill.*), and "
                                   "report accuracy and bytes for each stage.")
    c.add_argument("--run-dir", required=True, help="a run directory of `lth lottery`")
    c.add_argument("--level", type=int, help="the level to compress (default: the sparsest within one std of dense)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="compress.*, train.distill.* or run.* settings, e.g. compress.qat_duration=2ep")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=commands.compress)

    models = sub.add_parser("models", help="list model names")
    models.set_defaults(func=commands.models)
    return p


def main(argv=None) -> int:
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)  # tfds/orbax chatter, not the user's business
    p = parser()
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    from lth.signals import raise_on_sigterm

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
