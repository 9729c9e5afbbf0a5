"""Tanaka et al. 2020 (SynFlow), layer collapse: for each model, sweep compression 10^0 … 10^x
with every pruning-at-init score and report critical compressions (their Figures 1 and 3).

    python experiments/synflow_layer_collapse.py                              # VGG-16 and ResNet-18
    python experiments/synflow_layer_collapse.py --models vgg11 --width 0.25 --max-log10 2   # CPU-sized

Uses CIFAR-10 for the data-dependent scores when prepared (`lth data prepare cifar10`), synthetic
inputs otherwise (said in the output). Writes runs/collapse_<model>_w<width>/ per model and prints a
combined table.
"""
from __future__ import annotations

import argparse
import os
import sys

import lth


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vgg16", "resnet18"])
    p.add_argument("--methods", default="synflow,magnitude,random,snip,grasp,obd")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--max-log10", type=float, default=3.0)
    p.add_argument("--step", type=float, default=0.25)
    p.add_argument("--data-dir", default="")
    a = p.parse_args(argv)
    rows = []
    for model in a.models:
        out = os.path.join("runs", f"collapse_{model}_w{a.width:g}")
        try:
            s = lth.collapse("synflow_layer_collapse", {"model.name": model, "collapse.methods": a.methods,
                                                        "model.width": a.width, "collapse.max_log10": a.max_log10,
                                                        "collapse.step": a.step, "data.data_dir": a.data_dir},
                             run_dir=out, log=print).summary
        except lth.UserError as e:
            print(f"lth: error: {e}", file=sys.stderr)
            return 2
        rows += [(model, name, m["critical_compression_log10"], m["reaches_max_compression"], s["data"])
                 for name, m in s["methods"].items()]
    print("\n| model | method | critical compression | reaches max | data |\n|---|---|---|---|---|")
    for model, name, crit, reach, data in rows:
        print(f"| {model} | {name} | 10^{crit:.2f} | {'yes' if reach else 'no'} | {data} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
