"""Pruning during training and sparse training from scratch beside IMP, at matching densities.

    python experiments/sparse_vs_imp.py          # MNIST-1D MLP, 3 seeds (2-core CPU, minutes)

runs `lth sparse` on configs/mnist1d_mlp.py (GMP, static, SET and RigL, each with ERK and uniform
layer densities, one training run each) at the densities of IMP levels 7, 10 and 14 of the same
config (`lth lottery`, rewinding to init, no controls: 15 trainings), and prints one table: test
accuracy (mean ± std over the seeds) per method at each density, and each method's training time.
The CIFAR recipe, on a GPU:

    lth sparse --config configs/openlth_cifar_resnet_20.py --set sparse.densities=0.2,0.1,0.05 --set replicates=3
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import lth
from lth.harness import paths

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "mnist1d_mlp.py")


def cell(e) -> str:
    if e is None or "test_accuracy" not in e:
        return "-"
    return f"{100 * e['test_accuracy']:.2f} ± {100 * e.get('test_accuracy_std', 0):.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=CONFIG)
    p.add_argument("--levels", default="7,10,14", help="IMP levels whose densities the sparse methods train at")
    p.add_argument("--replicates", type=int, default=3)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    a = p.parse_args(argv)
    levels = [int(x) for x in a.levels.split(",")]
    try:
        imp = lth.lottery(a.config, [f"lottery.levels={max(levels)}", "lottery.controls=", *a.set],
                          replicates=a.replicates, log=print)
        by_level = {e["level"]: e for e in imp.summary["levels"]}
        dens = [round(by_level[lv]["density"], 4) for lv in levels]
        sparse = lth.sparse(a.config, [f"sparse.densities={','.join(map(str, dens))}", *a.set],
                            replicates=a.replicates, log=print)
    except lth.UserError as e:
        print(f"lth: error: {e}", file=sys.stderr)
        return 2
    cols = list(dict.fromkeys(f"{e['method']}-{e['distribution']}" for e in sparse.summary["arms"]))
    by = {(f"{e['method']}-{e['distribution']}", e["target_density"]): e for e in sparse.summary["arms"]}
    lines = ["| density % | IMP (level) | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for lv, d in zip(levels, dens):
        lines.append(f"| {100 * d:.2f} | {cell(by_level[lv])} ({lv}) | "
                     + " | ".join(cell(by.get((c, d))) for c in cols) + " |")
    imp_s = sum(json.load(open(paths.metrics(paths.level(imp.run_dir, lv)))).get("seconds") or 0
                for lv in range(max(levels) + 1))
    secs = [f"{sum(by[(c, d)].get('seconds') or 0 for d in dens if (c, d) in by):.0f}" for c in cols]
    lines.append(f"| seconds | {imp_s:.0f} ({max(levels) + 1} trainings) | " + " | ".join(secs) + " |")
    print("\n".join(lines))
    print(f"IMP: {imp.run_dir}\nsparse: {sparse.run_dir}\nplot: {sparse.plot()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
