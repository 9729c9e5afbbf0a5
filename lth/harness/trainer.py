"""A trainer from a config's `train` section: durations ('20ep', '500it', milestones, warmup) turned
into the step counts lth.training takes."""
from __future__ import annotations

from lth.errors import UserError
from lth.harness.config import parse_duration
from lth.options import split_list
from lth.training.step import make_trainer, steps_per_epoch


def trainer_from_config(model, train_cfg, num_train: int, **kw):
    """training.step.make_trainer for a config's `train` section: its durations ('20ep', '500it')
    converted to step counts with the epoch length of `num_train` examples (`kw`: augment, mesh,
    replicates, teacher, drop_last)."""
    spe = max(steps_per_epoch(num_train, max(train_cfg.batch_size, 1), kw.get("drop_last", True)), 1)
    total = parse_duration(train_cfg.duration, spe, "train.duration")
    if total < 1:
        raise UserError(f"train.duration {train_cfg.duration!r} is zero iterations; allowed: at least 1it")
    warmup = parse_duration(train_cfg.warmup, spe, "train.warmup")
    milestones = [parse_duration(m, spe, "train.milestones") for m in split_list(train_cfg.milestones)]
    return make_trainer(model, train_cfg, num_train, total=total, warmup=warmup, milestones=milestones, **kw)
