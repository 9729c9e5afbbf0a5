"""PNG plots of lottery summaries: test accuracy vs density, one line per arm."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.tables import arms  # noqa: E402


def accuracy_vs_density(summary: dict, path: str, key: str = "test_accuracy", title: str | None = None) -> str:
    """Write the plot to `path` (log-scaled density axis, error bars = std over replicates)."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, rows in arms(summary).items():
        rows = sorted(rows, key=lambda e: -e["density"])
        x = [100 * e["density"] for e in rows]
        y = [100 * e[key] for e in rows]
        err = [100 * e.get(key + "_std", 0.0) for e in rows]
        ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=2, label=name)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel(key.replace("_", " ") + " (%)")
    ax.set_title(title or summary.get("config", {}).get("name", ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
