"""The teacher of knowledge distillation (`train.distill.teacher`): a trained level of a run —
`level_L` of the run being trained or RUN_DIR/level_L of another — found, checked against the
student's data and loaded (the harness's part of distillation; the loss is lth/training/distill.py)."""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from lth.errors import UserError
from lth.harness import checkpoint, paths
from lth.harness.rundir import read_json
from lth.harness.trainer import trainer_from_config
from lth.models import zoo
from lth.pruning import masks as M


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A trained level: its eval-mode logits function and variables [R] (params + model state)."""

    path: str
    apply: Callable          # (variables of one replicate, x) → logits
    variables: dict
    test_accuracy: float | None
    model: object = None     # the teacher's model (intermediate-layer distillation asks it for features="all")

    def features(self, v, x):
        """Eval-mode {logits, hidden, scores, fit} of a BERT teacher (lth/training/distill.py)."""
        return self.model.apply(v, x, train=False, features="all")


def own_level(spec: str) -> int | None:
    """L when `spec` is 'level_L' (a level of the run being trained), else None (a path)."""
    m = re.fullmatch(r"level_(\d+)", spec.strip())
    return int(m.group(1)) if m else None


def level_dir(spec: str, run_dir: str) -> str:
    """'level_L' → that level of `run_dir`; anything else is a path to a level directory."""
    return os.path.join(run_dir, spec.strip()) if own_level(spec) is not None else spec


INPUT_KEYS = ("name", "normalize", "tokenizer", "max_length")  # data keys that decide inputs and classes


def load(spec: str, run_dir: str, data_cfg, dataset, replicates: int) -> Teacher:
    """The teacher named by `spec`, checked against the student's data (classes, inputs) before
    anything is written: one-line UserErrors for a missing level or a run of other inputs."""

    path = level_dir(spec, run_dir)
    root = os.path.dirname(os.path.normpath(path))
    if not paths.done(path) or not checkpoint.exists(paths.final(path)):
        raise UserError(f"train.distill.teacher {spec!r}: no finished level at {path}; allowed: 'level_0' (this "
                        f"run's dense level, trained first) or RUN_DIR/level_L of a finished run")
    tcfg = ml_collections.ConfigDict(read_json(paths.config(root))["config"])
    for key in INPUT_KEYS:
        if key in tcfg.data and tcfg.data[key] != data_cfg[key]:
            raise UserError(f"train.distill.teacher {spec!r} was trained with data.{key} = {tcfg.data[key]!r}, the "
                            f"student with {data_cfg[key]!r}; allowed: a teacher of the same inputs and classes")
    model = zoo.from_config(tcfg.model, dataset.num_classes, dataset.input_shape)
    trainer = trainer_from_config(model, tcfg.train, len(dataset.y_train))
    r = tcfg.replicates
    rngs = jax.random.split(jax.random.PRNGKey(0), r)
    params, ms = trainer.init_replicates(rngs, dataset.input_shape)
    state = checkpoint.load_final(path, trainer.new_state(params, ms, M.ones_like(params), 0, rngs, rngs), own=False)
    variables = {"params": state.params, **state.model_state}
    if r != replicates:
        if r != 1:
            raise UserError(f"train.distill.teacher {spec!r} has {r} replicates, the student {replicates}; "
                            f"allowed: a teacher with 1 replicate or as many as the student")
        variables = jax.tree.map(lambda a: jnp.broadcast_to(a, (replicates, *a.shape[1:])), variables)
    rows = read_json(paths.metrics(path))["replicates"]
    accs = [row["test_accuracy"] for row in rows if row.get("test_accuracy") is not None]
    return Teacher(path, lambda v, x: model.apply(v, x, train=False), variables,
                   sum(accs) / len(accs) if accs else None, model)
