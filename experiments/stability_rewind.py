"""The rewind-point study of Frankle, Dziugaite, Roy & Carbin (2020): IMP tickets match the dense
network once they are stable to SGD noise — two copies trained from the rewind point k end in one
linearly connected basin (error barrier ≈ 0).

    python experiments/stability_rewind.py            # MNIST-1D MLP, the demo's IMP run (2-core CPU, minutes)

runs `lth stability` on configs/mnist1d_mlp.py for rewind points k ∈ {0, 10, 35, 105, 350} iterations
on the dense network and the tickets of levels 2, 4, 8 and 12 — each k's tickets found by IMP rewound
to that k (`lth lottery` runs with lottery.rewind = k, reused when done: the demo's run is k = 0) —
then prints instability beside each ticket's accuracy. The CIFAR recipes, on a GPU:

    lth stability --config configs/openlth_cifar_resnet_20.py \\
        --set stability.rewind_points=0it,100it,500it,2000it,2ep --set stability.levels=3,6,9
    lth stability --config configs/openlth_cifar_vgg_16.py --set stability.rewind_points=0it,100it,1000it,2ep

(a CPU smoke run of the same path: add --set model.width=0.125 --set train.duration=20it
--set stability.rewind_points=0it,5it).
"""
from __future__ import annotations

import argparse
import os
import sys

import lth

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "mnist1d_mlp.py")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=CONFIG)
    p.add_argument("--rewind-points", default="0it,10it,35it,105it,350it")
    p.add_argument("--levels", default="2,4,8,12")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    a = p.parse_args(argv)
    try:
        result = lth.stability(a.config, [f"stability.rewind_points={a.rewind_points}", f"stability.levels={a.levels}",
                                          *a.set], log=print)
    except lth.UserError as e:
        print(f"lth: error: {e}", file=sys.stderr)
        return 2
    print(result.table())
    print(f"summary: {os.path.join(result.run_dir, 'summary.json')}\nplot: {result.plot()}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
