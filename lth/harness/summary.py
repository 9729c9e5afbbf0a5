"""Summaries of arms: means over the healthy replicates (not diverged, not skipped), and the count
of arms with a diverged replicate (the CLI's exit code 3)."""
from __future__ import annotations

import numpy as np


def healthy(row) -> bool:
    return row.get("diverged_at_step") is None and not row.get("skipped")


def arm_entry(rows: list, **fields) -> dict:
    """Summary of an arm: means over the healthy replicates (not diverged, not skipped), stds, the
    number left out (`diverged`), and the per-replicate rows."""
    out = dict(fields)
    ok = [r for r in rows if healthy(r)]
    for key in ("density", "test_accuracy", "best_val_loss_step", "test_accuracy_at_best_val"):
        vals = [r[key] for r in (rows if key == "density" else ok) if r.get(key) is not None]
        if vals:
            out[key] = float(np.mean(vals))
            out[key + "_std"] = float(np.std(vals))
    if len(ok) < len(rows):
        out["diverged"] = len(rows) - len(ok)
    out["replicates"] = rows
    return out


def any_diverged(summary: dict) -> int:
    """How many arms of a summary have a diverged replicate."""
    entries = summary.get("levels", []) + [e for rows in summary.get("controls", {}).values() for e in rows]
    entries += summary.get("arms", [])
    return sum(1 for e in entries if any(r.get("diverged_at_step") is not None for r in e.get("replicates", [])))
