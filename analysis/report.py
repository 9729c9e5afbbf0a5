"""Table and plot of a finished (or partial) run: `python -m analysis.report RUN_DIR [--plot PNG]`."""
from __future__ import annotations

import argparse
import json
import os

from analysis.plots import metric_vs_density
from analysis.tables import lottery_table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_dir", help="an lth run directory (holds summary.json)")
    p.add_argument("--plot", help="PNG path (default: RUN_DIR/report.png)")
    p.add_argument("--metrics", default="test_accuracy,test_accuracy_at_best_val,best_val_loss_step",
                   help="comma-separated metrics, one panel each")
    a = p.parse_args(argv)
    with open(os.path.join(a.run_dir, "summary.json")) as f:
        summary = json.load(f)
    keys = [k for k in a.metrics.split(",") if k]
    for key in keys:
        if key != "best_val_loss_step":
            print(f"\n{key}:\n" + lottery_table(summary, key))
    print(metric_vs_density(summary, a.plot or os.path.join(a.run_dir, "report.png"), keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
