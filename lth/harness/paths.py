"""Where a run directory keeps each thing: every path a study reads or writes, in one place.

  RUN/config.json, RUN/summary.json
  RUN/level_0/rewind                  params + model state at IMP's rewind step k (orbax)
  RUN/level_L/                        an arm (`arm`): final/ (TrainState, orbax), metrics.json (its
                                      presence marks the arm done), ckpt/ (rolling, while training)
  RUN/controls/<name>/level_L/        the same for each IMP control
  RUN/arms/<name>/                    a study's named arms (sparse training, comparisons)

An arm is done when its metrics.json exists (written after final/); `checkpoint.load_final` reads a
finished arm's state into the shapes of a template state.
"""
from __future__ import annotations

import os
import re

CONFIG = "config.json"
SUMMARY = "summary.json"


def config(run_dir: str) -> str:
    return os.path.join(run_dir, CONFIG)


def summary(run_dir: str) -> str:
    return os.path.join(run_dir, SUMMARY)


def level(run_dir: str, lv: int, control: str = "") -> str:
    """The arm directory of IMP level `lv` (of control `control` when given)."""
    base = os.path.join(run_dir, "controls", control) if control else run_dir
    return os.path.join(base, f"level_{lv}")


def named_arm(run_dir: str, name: str) -> str:
    return os.path.join(run_dir, "arms", name)


def rewind(run_dir: str) -> str:
    """IMP's rewind point (params and model state at step k), saved while level 0 trains."""
    return os.path.join(level(run_dir, 0), "rewind")


def final(arm: str) -> str:
    return os.path.join(arm, "final")


def metrics(arm: str) -> str:
    return os.path.join(arm, "metrics.json")


def rolling(arm: str) -> str:
    return os.path.join(arm, "ckpt")


def done(arm: str) -> bool:
    return os.path.exists(metrics(arm))


def finished_levels(run_dir: str) -> list[int]:
    """The IMP levels of `run_dir` whose arm is done, sorted."""
    if not os.path.isdir(run_dir):
        return []
    out = [int(m.group(1)) for name in os.listdir(run_dir) if (m := re.fullmatch(r"level_(\d+)", name))]
    return sorted(lv for lv in out if done(level(run_dir, lv)))

