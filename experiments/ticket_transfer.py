"""Tickets across datasets and optimizers (Morcos et al. 2019, "One ticket to win them all"), on real
MNIST digits offline: LeNet-300-100 on `mnist_5k` with configs/mnist5k_lenet_300_100.py (Frankle &
Carbin's recipe, 3 seeds), three pairs of source / target:

- labels: digits 0–4 vs digits 5–9 (data.classes, relabeled 0–4 in both);
- data: the first vs the second half of the training split (data.train_part=1/2, 2/2);
- optimizer: Adam 1.2e-3 (the recipe's) vs SGD 0.1 with momentum 0.9.

For each side an IMP run (`lth lottery`, no controls) finds its tickets; each side's config is then the
target of `lth transfer` with both sides' tickets at the last level's density (their own rewind
weights), beside a random mask and the magnitude of the target's init with the same per-layer
counts. The table (Morcos et al.'s layout): rows = the ticket's source, columns = the target.

    .venv/bin/python experiments/ticket_transfer.py                 # ~15 min on 2 cores
    .venv/bin/python experiments/ticket_transfer.py --levels 5 --replicates 1   # a quick look
"""
from __future__ import annotations

import argparse
import os
import sys

import lth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "mnist5k_lenet_300_100"
PAIRS = {
    "labels": (("digits 0-4", ["data.classes=0,1,2,3,4"]), ("digits 5-9", ["data.classes=5,6,7,8,9"])),
    "data": (("train half 1", ["data.train_part=1/2"]), ("train half 2", ["data.train_part=2/2"])),
    "optimizer": (("Adam", []), ("SGD", ["train.optimizer=sgd", "train.lr=0.1", "train.momentum=0.9"])),
}


def tag(name: str) -> str:
    return name.replace(" ", "_").replace("-", "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", default=",".join(PAIRS), help="comma list of " + ", ".join(PAIRS))
    p.add_argument("--levels", type=int, default=10, help="IMP levels of each source (default: the recipe's 10)")
    p.add_argument("--replicates", type=int, default=3)
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "ticket_transfer"))
    a = p.parse_args(argv)
    try:
        pairs = [x.strip() for x in a.pairs.split(",") if x.strip()]
        for x in pairs:
            if x not in PAIRS:
                raise lth.UserError(f"--pairs entry {x!r}; allowed: {', '.join(PAIRS)}")
        if a.levels < 1 or a.replicates < 1:
            raise lth.UserError("--levels and --replicates: allowed 1 or more")
        out = []
        for pair in pairs:
            runs, density = {}, None
            for name, sets in PAIRS[pair]:
                r = lth.lottery(CONFIG, sets + [f"lottery.levels={a.levels}", "lottery.controls=",
                                                f"replicates={a.replicates}"],
                                run_dir=os.path.join(a.out, f"{pair}-{tag(name)}"), log=print)
                runs[name] = r.run_dir
                density = r.summary["levels"][-1]["density"]
            sources = ",".join(f"{tag(n)}={d}" for n, d in runs.items())
            cells = {}
            for name, sets in PAIRS[pair]:
                t = lth.transfer(CONFIG, sets + [f"transfer.sources={sources}", f"transfer.densities={density}",
                                                 "transfer.dense=False", f"replicates={a.replicates}"],
                                 run_dir=os.path.join(a.out, f"{pair}-to-{tag(name)}"), log=print)
                for row in t.summary["rows"]:
                    cells[(row["name"], name)] = row
            names = [n for n, _ in PAIRS[pair]]
            out += [f"**{pair}** (density {100 * density:.1f} % of the prunable weights; test accuracy %, mean ± "
                    f"std over {a.replicates} seeds)", "",
                    "| ticket found on ↓ / trained on → | " + " | ".join(names) + " |",
                    "|---|" + "---|" * len(names)]
            for src in [tag(n) for n in names] + ["random", "magnitude"]:
                label = next((n for n in names if tag(n) == src), src + " (same per-layer counts)")
                out.append(f"| {label} | " + " | ".join(
                    f"{100 * cells[(src, n)]['test_accuracy']:.2f} ± {100 * cells[(src, n)]['test_accuracy_std']:.2f}"
                    for n in names) + " |")
            out.append("")
        print("\n".join(out))
        with open(os.path.join(a.out, "table.md"), "w") as f:
            f.write("\n".join(out) + "\n")
    except lth.UserError as e:
        print(f"lth: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
