"""Score name → its function, whether it needs data, and its options.

Each entry declares the keyword options its function takes and the `pai.*` config key each comes
from, so one Scorer (lth/scores/scorer.py) serves every score and every command with the same
defaults; `prepare` (optional) settles options that depend on the model (SynFlow's precision, the
prunable set GraSP differentiates)."""
from __future__ import annotations

import dataclasses
from typing import Callable

from lth.errors import check_choice
from lth.scores import basic, force, grasp, obd, prospr, snip, synflow


@dataclasses.dataclass(frozen=True)
class Score:
    fn: Callable                      # (apply_fn, variables, masks, batch | None, rng, **options) → scores
    needs_data: bool
    options: dict = dataclasses.field(default_factory=dict)   # fn keyword → pai config key
    checks: dict = dataclasses.field(default_factory=dict)    # fn keyword → allowed values
    prepare: Callable | None = None   # (apply_fn, variables, prunable, input_shape, options) → options
    rounds: int = 1                   # default score-and-prune rounds at init (pai.rounds = 0)
    regrow: bool = False              # each round selects among all weights (pruned ones may come back)


GRASP_OPTIONS = {"batches": "batches", "temperature": "grasp_temperature"}
SCORES = {
    "magnitude": Score(basic.magnitude, False),
    "random": Score(basic.random, False),
    "snip": Score(snip.snip, True, {"batches": "batches"}),
    "grasp": Score(grasp.grasp, True, GRASP_OPTIONS, prepare=grasp.prepare),
    "grasp_abs": Score(grasp.grasp_abs, True, GRASP_OPTIONS, prepare=grasp.prepare),
    # 100 rounds: the SynFlow code's prune_epochs for synflow (Results/data/singleshot/*/args.json)
    "synflow": Score(synflow.synflow, False, {"precision": "synflow_precision"},
                     {"precision": synflow.PRECISIONS}, synflow.prepare, rounds=100),
    "obd": Score(obd.obd, True, {"method": "obd_method", "probes": "obd_probes"}, {"method": obd.METHODS}),
    # 10 rounds: naver/force train_cifar_tiny_imagenet.py --num_steps default (its README's runs use 60)
    "iter_snip": Score(snip.snip, True, {"batches": "batches"}, rounds=10),
    "force": Score(force.force, True, {"batches": "batches"}, rounds=10, regrow=True),
    "prospr": Score(prospr.prospr, True, {"steps": "prospr_steps", "lr": "prospr_lr"}),
}
DATA_FREE = tuple(name for name, s in SCORES.items() if not s.needs_data)


def get(name: str):
    check_choice("score", name, SCORES)
    return SCORES[name].fn


def entry(name: str) -> Score:
    check_choice("score", name, SCORES)
    return SCORES[name]
