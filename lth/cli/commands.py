"""The bodies of the `lth` commands (the parser lives in lth/cli/__init__.py): the shared shape of a
study command (setup → locked run directory → run → table and plots → exit code), over the Python
API, and the data, bench and models commands. User errors raise UserError (cli: one line, exit 2)."""
from __future__ import annotations

import os
import sys
import time

from lth import api
from lth.compression import sparse_exec
from lth.data import files, tfds_source
from lth.data import shapes as data_shapes
from lth.data.text import GLUE
from lth.errors import UserError, check_choice
from lth.harness import bench as B
from lth.harness import runlog
from lth.harness.summary import any_diverged
from lth.models import names, zoo
from lth.registry import DATASETS, STUDIES
from lth.training.hosts import is_main


def study(args) -> int:
    """Any registered study (lth.studies): config (--config or the study's default, its FLAGS, then
    --set), setup and checks, a header line, the run in its locked directory (progress lines printed),
    the table and the study's closing lines; exit 3 if a replicate diverged. Over the Python API."""
    mod = STUDIES.get(args.study)
    if getattr(mod, "FROM_RUN", False):   # a study of a finished run's level
        s, run_dir = api.prepare_from_run(args.study, args.run_dir, args.level, args.set, not args.no_progress)
    else:
        sets = [f"{key}={getattr(args, _dest(flag))}" for flag, key, _ in getattr(mod, "FLAGS", ())
                if key and getattr(args, _dest(flag)) is not None]
        cfg = api.load_config(args.config or mod.DEFAULT_CONFIG, sets + args.set)
        s, run_dir = api.prepare(args.study, cfg, run_dir=args.run_dir or getattr(args, "out_dir", None),
                                 out=getattr(args, "out", None), replicates=getattr(args, "replicates", None),
                                 progress=False if getattr(args, "no_progress", False) else None)
    runlog.attach(run_dir, args.argv)   # stderr → RUN/lth.log from here on
    print(f"run directory: {run_dir}  ({mod.describe(s)})", flush=True)
    t0 = time.time()
    result = api.execute(args.study, s, run_dir, log=print, repair=args.repair)
    if not is_main():   # process 0 prints the table and writes the plot
        return 0
    print()
    files = mod.files(result) if hasattr(mod, "files") else [
        f"summary: {os.path.join(result.run_dir, 'summary.json')}", f"plot: {result.plot()}"]
    print("\n".join([result.table(), ""] + files))
    if getattr(mod, "TRAINS", True):
        print(f"time: {time.time() - t0:.1f} s")
    return diverged_exit(mod.outcome(result.summary) if hasattr(mod, "outcome") else result.summary)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def diverged_exit(summary) -> int:
    """Exit code 3 (and one line on stderr) when any arm had a diverged replicate, else 0."""

    n = any_diverged(summary)
    if n:
        print(f"lth: error: {n} arm(s) had a diverged replicate (non-finite or too large training loss); "
              f"see diverged_at_step in summary.json", file=runlog.terminal(), flush=True)
        return 3
    return 0


def data(args) -> int:
    """`lth data list`; `lth data prepare NAME --from PATH`: the formats of lth/data/files.py converted
    to DATA_DIR/NAME.npz (no TensorFlow); without --from, tfds's download and prepare."""

    if args.action == "list":
        for name in sorted(DATASETS.names()):
            print(f"{name:16s} {DATASETS.get(name).help}")
        return 0
    if args.source:
        check_choice("dataset to convert", args.name, sorted(files.CLASSES))
        src = os.path.expanduser(args.source)
        found = files.find(args.name, src) if os.path.isdir(src) else ("npz", src) if os.path.isfile(src) else None
        if found is None:
            raise UserError(f"--from {args.source!r}: no {args.name} found; "
                            f"looked for {files.looked_for(args.name, src)}")
        train, test, k = files.read(*found, args.name)    # read and checked whole before anything is written
        out_dir = os.path.expanduser(args.data_dir or tfds_source.default_data_dir())
        os.makedirs(out_dir, exist_ok=True)
        out = os.path.join(out_dir, f"{args.name}.npz")
        files.write_npz(out, train, test, k)
        print(f"{out}: {len(train[1])} train / {len(test[1])} test, inputs {train[0].shape[1:]}, {k} classes "
              f"(read from {found[1]})")
        return 0

    allowed = ("mnist", "fashion_mnist", "cifar10", "cifar100", *(f"glue/{t}" for t in GLUE))
    if args.name not in allowed:
        raise UserError(f"unknown dataset {args.name!r} to prepare; allowed: {', '.join(allowed)}")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise UserError("preparing tfds data needs TensorFlow: pip install -e '.[prepare]'; or convert files you "
                        "have: lth data prepare NAME --from PATH (CIFAR pickles, IDX files, .npz)") from None
    print(tfds_source.prepare(args.name, args.data_dir))
    return 0


def bench(args) -> int:
    import jax


    for name in args.model:
        zoo.find(name)
    if args.dataset is not None:
        check_choice("--dataset", args.dataset, sorted(data_shapes()))
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
    if args.sparse:
        if args.sparse_repeats < 1:
            raise UserError(f"--sparse-repeats {args.sparse_repeats}: allowed: an integer >= 1")
        if earlier is not None:
            print("note: --compare does not apply to --sparse; ignored", file=sys.stderr)
        try:
            rows = tuple(int(v) for v in args.sparse_rows.split(","))
        except ValueError:
            rows = ()
        if not rows or min(rows) < 1:
            raise UserError(f"--sparse-rows {args.sparse_rows!r}: allowed: a comma list of integers >= 1")
        r = sparse_exec.sparse_break_even(repeats=args.sparse_repeats, batches=rows)
        print(f"sparse (BCSR) vs dense x @ W, jax {r['jax']}, {r['device']}, median of {r['repeats']} calls:")
        print(sparse_exec.sparse_table(r))
        return B.save_and_compare(args, {"kind": "sparse", **r}, None)
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


def models(args) -> int:
    print("\n".join(names()))
    return 0
