"""Reproduce the SynFlow paper's Figure 6 (Tanaka et al. 2020: VGG-16-BN on CIFAR-100, prune at init
to 10×, 100×, 1000×, then train) with configs/synflow_cifar100_vgg_16.py, printing lth's test accuracy
beside the published means of 3 runs (computed from the ganguli-lab/Synaptic-Flow repository's
Results files). Needs a GPU and CIFAR-100:

    .venv/bin/python experiments/reproduce_synflow_fig6.py --data-dir DIR   # DIR holds cifar-100-python
    .venv/bin/python experiments/reproduce_synflow_fig6.py --data-dir DIR --smoke   # a few steps: the plumbing

--smoke trains a narrow VGG-16 a few steps (any CIFAR-100-shaped folder, e.g. the tests' fake one).
"""
from __future__ import annotations

import argparse
import math
import sys

import lth

PUBLISHED = {   # test accuracy %, compression 10×, 100×, 1000×
    "synflow": (72.1, 63.5, 41.4), "snip": (70.8, 61.3, 16.1), "grasp": (70.7, 61.1, 4.6),
    "magnitude": (72.2, 60.9, 1.0), "random": (68.8, 52.3, 1.0),
}
SMOKE = ["model.width=0.0625", "train.duration=2it", "train.eval_every=1it", "run.checkpoint_every=0it",
         "train.batch_size=8", "train.eval_batch_size=16", "pai.batch_size=4", "pai.batches=1", "replicates=1",
         "pai.compression=10^1", "model.conv_impl=xla", "run.tensorboard=false", "run.progress=false"]


def table(summary, published=PUBLISHED) -> str:
    rows = {}
    for r in summary["arms"]:
        if r.get("sanity"):
            continue
        rows.setdefault(r["method"], {})[round(math.log10(r["compression"]))] = r
    lines = ["| score | " + " | ".join(f"10^{k}: lth | published" for k in (1, 2, 3)) + " |",
             "|---|" + "---|---|" * 3]
    for m, pub in published.items():
        cells = []
        for k, p in zip((1, 2, 3), pub):
            r = rows.get(m, {}).get(k)
            cells.append((f"{100 * r['test_accuracy']:.1f} ± {100 * r['test_accuracy_std']:.1f}" if r else "-")
                         + f" | {p}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="", help="the folder holding cifar-100-python ('' = tfds)")
    p.add_argument("--smoke", action="store_true", help="a few steps of a narrow network (the plumbing only)")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--set", action="append", default=[], help="more config overrides KEY=VALUE")
    a = p.parse_args(argv)
    sets = ([f"data.data_dir={a.data_dir}"] if a.data_dir else []) + (SMOKE if a.smoke else []) + a.set
    try:
        res = lth.pai("synflow_cifar100_vgg_16", sets, run_dir=a.run_dir, log=print)
    except lth.UserError as e:
        print(f"lth: error: {e}", file=sys.stderr)
        return 2
    print(table(res.summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
