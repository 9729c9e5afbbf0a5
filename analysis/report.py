"""Table and plot of any finished (or partial) study: `python -m analysis.report RUN_DIR [--plot PNG]`.

Works on every study's directory (lottery, pai, stability, collapse, a heads or compress results
folder) through `lth.open_run`; for a lottery run it also prints one table per metric of `--metrics`
and plots them side by side."""
from __future__ import annotations

import argparse
import os
import sys

import lth


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_dir", help="an lth run directory (or a heads / compress results folder)")
    p.add_argument("--plot", help="PNG path (default: in RUN_DIR)")
    p.add_argument("--metrics", default="test_accuracy,test_accuracy_at_best_val,best_val_loss_step",
                   help="lottery runs: comma-separated metrics, one table and one panel each")
    a = p.parse_args(argv)
    try:
        result = lth.open_run(a.run_dir)
    except lth.UserError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    if result.study != "lottery":
        print(result.table())
        if result.study != "compress":
            print(result.plot(a.plot))
        return 0
    keys = [k for k in a.metrics.split(",") if k]
    for key in keys:
        if key != "best_val_loss_step":
            print(f"\n{key}:\n" + lth.tables.lottery_table(result.summary, key))
    print(lth.plots.metric_vs_density(result.summary, a.plot or os.path.join(a.run_dir, "report.png"), keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
