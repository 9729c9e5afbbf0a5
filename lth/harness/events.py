"""Training curves as TensorBoard event files (tensorboardX; no TensorFlow needed): one run per arm
and replicate, ARM/tensorboard/replicate_R, written from the arm's whole history when it finishes
(so a resumed arm's curve is whole too). `tensorboard --logdir RUN_DIR` shows every arm of a run."""
from __future__ import annotations

import os
import shutil

# history key → TensorBoard tag (grouped by the part before '/')
TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "test_loss": "loss/test",
        "val_acc": "accuracy/val", "test_acc": "accuracy/test"}


def folder(adir: str, replicate: int) -> str:
    return os.path.join(adir, "tensorboard", f"replicate_{replicate}")


def write(adir: str, history: list) -> None:
    """Every entry of `history` (fit.fit's: per-replicate lists at each evaluated step)."""
    from tensorboardX import SummaryWriter

    if not history:
        return
    shutil.rmtree(os.path.join(adir, "tensorboard"), ignore_errors=True)   # rewritten whole: no duplicate points
    for r in range(len(history[0]["train_loss"])):
        with SummaryWriter(folder(adir, r), flush_secs=3600) as w:
            for entry in history:
                for key, tag in TAGS.items():
                    if key in entry and entry[key][r] is not None:
                        w.add_scalar(tag, float(entry[key][r]), entry["step"])
