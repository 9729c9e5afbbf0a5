"""Command line: one subcommand per registered study (lth.registry.STUDIES: `lth lottery`, `lth pai`,
`lth compress`, ...), plus `lth data`, `lth bench`, `lth models` — the parser and the exit codes; command
bodies in lth/cli/commands.py. User errors: one line, exit 2."""
from __future__ import annotations

import argparse
import os
import re
import sys

from lth.cli import commands
from lth.errors import DISK_FULL_EXIT, UserError, disk_full, first_line
from lth.harness import distributed, runlog
from lth.harness.distributed import peer_failure
from lth.registry import STUDIES
from lth.training.signals import raise_on_sigterm

PEER_EXIT = 5   # a process of a several-process run died: the others stop with one line

REPAIR_HELP = ("move a corrupt or partial arm (a checkpoint failing its checksums, an unreadable metrics.json) to "
               "RUN/quarantine/ and recompute it from what it depends on")
EPILOG = "Config keys: docs/guide (or lth.harness.config.keys_table()); configs/*.py hold ready-made experiments."


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage + error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def study_options(p, mod) -> None:
    """Options of a study subcommand: --config (required unless the study has a default), --set, its
    FLAGS (each sets one config key), --out, --run-dir and, for studies that train, --replicates and
    --no-progress, and --repair. A study of a finished run (FROM_RUN) takes --run-dir (required) and --level instead
    of a config."""
    if getattr(mod, "FROM_RUN", False):
        p.add_argument("--run-dir", required=True, help="a run directory of `lth lottery`")
        p.add_argument("--level", type=int, help="the level to use (default: the sparsest within one std of dense)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="settings that leave the trained run as it is, e.g. compress.qat_duration=2ep")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("--repair", action="store_true", help=REPAIR_HELP)
        return
    default = getattr(mod, "DEFAULT_CONFIG", None)
    p.add_argument("--config", required=default is None,
                   help=f"configs/<name>.py defining get_config(), or a config name (default: {default})"
                   if default else "configs/<name>.py defining get_config(), or a config name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set lottery.levels=3 (repeatable)")
    for flag, key, kw in getattr(mod, "FLAGS", ()):
        kw = dict(kw)
        if kw.get("help") == "==SUPPRESS==":
            kw["help"] = argparse.SUPPRESS
        p.add_argument(flag, **kw)
    if getattr(mod, "TRAINS", True):
        p.add_argument("--replicates", type=int, help="train R seeds together in one compiled program")
    p.add_argument("--out", help="root folder of run directories (default: config run.out, 'runs')")
    p.add_argument("--run-dir", help="exact run directory (default: <out>/<name>-<config hash>)")
    if getattr(mod, "TRAINS", True):
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--repair", action="store_true", help=REPAIR_HELP)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="lth", description="Lottery tickets and pruning at initialization (JAX).",
                                epilog=EPILOG)
    g = p.add_argument_group("several processes, one run (jax.distributed; or JAX_COORDINATOR_ADDRESS, "
                             "JAX_NUM_PROCESSES, JAX_PROCESS_ID; SLURM is detected)")
    g.add_argument("--coordinator", help="HOST:PORT of process 0")
    g.add_argument("--num-processes", type=int, help="processes in the run")
    g.add_argument("--process-id", type=int, help="this process's index, 0 .. N-1")
    g.add_argument("--join-timeout", type=int, default=60, help="seconds to wait for the coordinator (default 60)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, mod in STUDIES.items():   # one subcommand per registered study
        sp = sub.add_parser(name, help=mod.HELP, description=mod.DESCRIPTION, epilog=EPILOG)
        study_options(sp, mod)
        sp.set_defaults(func=commands.study, study=name)

    data = sub.add_parser("data", help="list datasets; prepare one (from files you have, or tfds)")
    data.add_argument("action", choices=["list", "prepare"],
                      help="list: the datasets; prepare: --from PATH converts to DATA_DIR/NAME.npz (no TensorFlow), "
                           "else tfds download and prepare (needs internet and the [prepare] extra)")
    data.add_argument("name", nargs="?", default="",
                      help="mnist | fashion_mnist | cifar10 | cifar100 | glue/<task> (sst2, mnli, ...)")
    data.add_argument("--from", dest="source", default="",
                      help="a cifar-10-batches-py / cifar-100-python folder, a folder of IDX files, or an .npz")
    data.add_argument("--data-dir", help="output / tfds data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
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
                   help="how R replicates share a step "
                        "(auto: conv nets on CPU unrolled up to R = 2, sequential beyond; vmap otherwise)")
    b.add_argument("--save", metavar="FILE", help="write the results as JSON")
    b.add_argument("--compare", metavar="FILE", help="print the ratio of these results to an earlier --save FILE")
    b.add_argument("--conv-impl", default="auto", choices=["auto", "xla", "gemm"],
                   help="convolutions: auto (gemm on CPU, xla elsewhere), xla or gemm (model.conv_impl)")
    b.add_argument("--synflow", action="store_true", help="time iterative SynFlow to 10^3 instead (both precisions)")
    b.add_argument("--synflow-model", default="vgg16", help="model for --synflow")
    b.add_argument("--rounds", type=int, default=100, help="SynFlow rounds for --synflow")
    b.add_argument("--obd", action="store_true", help="time OBD Hessian diagonals on LeNet-300-100 instead")
    b.add_argument("--sparse", action="store_true", help="time unstructured sparse (BCSR) against dense matmuls of "
                   "MiniLM-L6's FFN kernels at densities 1 to 0.01 instead: break-even density per shape and batch")
    b.add_argument("--sparse-repeats", type=int, default=20, help="timed calls per measurement for --sparse (median)")
    b.add_argument("--sparse-rows", default="1,64,4096",
                   help="rows of x for --sparse (comma list; a BERT layer multiplies batch × tokens rows: 64 = one "
                        "64-token sequence, 4096 = a batch of 64 of them)")
    b.set_defaults(func=commands.bench)

    models = sub.add_parser("models", help="list model names")
    models.set_defaults(func=commands.models)
    return p


def _line(text: str, always_log: bool = False) -> None:
    """The command's one line on the terminal, with the log's location once the run has one (or,
    `always_log`, the temporary file that holds the detail so far)."""
    where = runlog.location()
    if where and os.path.exists(where) and (always_log or os.path.basename(where).startswith(runlog.LOG)):
        text += f" (log: {where})"
    print(f"lth: error: {text}", file=runlog.terminal(), flush=True)


def _peer_stopped(why: str) -> None:
    """Another process of a several-process run died: one line, and exit now (background save
    threads waiting on the dead process would otherwise hold the exit)."""
    _line(f"another process of this jax.distributed run stopped ({why}); rerun every process with the same "
          f"command to resume")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(PEER_EXIT)


def main(argv=None) -> int:
    """The `lth` program (argv None: sys.argv) or, in-process, the same with these arguments. A study
    command runs with stderr captured into its run's lth.log (lth.harness.runlog): the terminal gets
    stdout, the progress bar and at most one `lth: error:` line. Exit codes: 0 done, 1 internal error,
    2 bad input or unreadable state, 3 a replicate diverged, 4 disk full, 5 another process died,
    128 + N stopped by signal N."""
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)  # tfds/orbax chatter, not the user's business
    p = parser()
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.func is not commands.study:   # data, bench, models: no run directory, nothing to capture
        return _run(args)
    with runlog.Capture(keep=argv is None) as cap:   # the program keeps it to the end (shutdown reports)
        code = _run(args)
        if code in (0, 2) and not cap.attached:
            cap.discard()
    return code


def _full_where(e: BaseException) -> str:
    """The file a full disk stopped: the OSError's, else the checkpoint tensorstore names in its
    message (orbax's temporary folder name mapped back to the checkpoint's), else the run directory."""
    if getattr(e, "filename", None):
        return e.filename
    m = re.search(r'local file "([^"]+)"', str(e))
    if m:
        return re.sub(r"\.orbax-checkpoint-tmp.*", "", m.group(1))
    where = runlog.location()
    return os.path.dirname(where) if where and os.path.basename(where) == runlog.LOG else "the run directory"


def _run(args) -> int:
    raise_on_sigterm()
    try:
        if distributed.initialize(args.coordinator, args.num_processes, args.process_id, args.join_timeout):
            distributed.watch_peers(_peer_stopped)
        return args.func(args)
    except UserError as e:   # bad input (nothing written), or state that cannot be read back (Corrupt)
        runlog.log_exception(e)
        _line(str(e))
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or signals.Stopped for SIGINT / SIGTERM (state saved at the step)
        signum = getattr(e, "signum", 2)
        runlog.log_exception(e)
        _line(f"stopped by {'SIGTERM' if signum == 15 else 'SIGINT'} (the state at the last step is saved); "
              f"rerun the same command to resume")
        return 128 + signum
    except Exception as e:
        runlog.log_exception(e)
        peer = peer_failure(e)
        if peer is not None:
            _peer_stopped(peer)
        full = disk_full(e)
        if full is not None:
            where = _full_where(full)
            _line(f"disk full while writing {where}; free space and rerun the same command to resume "
                  f"(finished arms and the last good checkpoint are kept)")
            return DISK_FULL_EXIT
        _line(f"internal error ({type(e).__name__}: {first_line(e, 160)}); the traceback is in the log; "
              f"please report it", always_log=True)
        return 1
