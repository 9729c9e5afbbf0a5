"""Frankle & Carbin 2019, LeNet-300-100 on MNIST (their Figures 3-4): IMP with rewinding to init
across levels and replicates, with random-reinit and random-prune controls. Draws test accuracy at
early stop, final test accuracy and the early-stop iteration against density.

    python experiments/frankle_carbin_lenet.py --replicates 5            # full protocol (GPU)
    python experiments/frankle_carbin_lenet.py --quick                   # 5K iterations, 8 levels (CPU)

Needs MNIST prepared for tfds (`lth data prepare mnist`). Resumable: rerun the same command.
"""
from __future__ import annotations

import argparse
import os
import sys

import lth
from lth.studies.plots import metric_vs_density

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "lenet_300_100_frankle_carbin.py")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicates", type=int, default=5)
    p.add_argument("--levels", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="5K iterations and 8 levels: a CPU-sized run")
    p.add_argument("--data-dir", default="", help="tfds data dir with MNIST prepared")
    p.add_argument("--out", default="runs", help="root of run directories")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    a = p.parse_args(argv)
    sets = [f"lottery.levels={8 if a.quick else a.levels}", f"data.data_dir={a.data_dir}"]
    if a.quick:
        sets += ["train.duration=5000it", "train.eval_every=250it", "run.checkpoint_every=2500it"]
    sets += a.set
    try:
        result = lth.lottery(CONFIG, sets, out=a.out, replicates=a.replicates, progress=True, log=print)
    except lth.UserError as e:
        print(f"lth: error: {e}", file=sys.stderr)
        return 2
    print(result.table())
    run_dir, summary = result.run_dir, result.summary
    path = metric_vs_density(summary, os.path.join(run_dir, "frankle_carbin_figure.png"),
                             ("test_accuracy_at_best_val", "test_accuracy", "best_val_loss_step"),
                             title="LeNet-300-100 on MNIST, IMP (Frankle & Carbin 2019)")
    print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
