"""What a registered score is: its function, whether it needs data, and its options.

Each score declares the keyword options its function takes and the `pai.*` config field each comes
from, with that field's default (`declares`), so one Scorer (lth/scores/scorer.py) serves every score
and every study with the same defaults, and the config schema gets the field from the declaration;
`prepare` (optional) settles options that depend on the model (SynFlow's precision, the prunable set
GraSP differentiates)."""
from __future__ import annotations

import dataclasses
from typing import Callable

from lth.options import options
from lth.registry import SCORES

# Options every data-dependent score reads: the fixed batch the scores see (`pai` section).
SHARED = options(
    batch_size=(256, "examples per batch for data-dependent scores"),
    batches=(1, "batches for snip / grasp (gradients summed)"),
)


@dataclasses.dataclass(frozen=True)
class Score:
    fn: Callable                      # (apply_fn, variables, masks, batch | None, rng, **options) → scores
    needs_data: bool
    options: dict = dataclasses.field(default_factory=dict)   # fn keyword → pai config field
    checks: dict = dataclasses.field(default_factory=dict)    # fn keyword → allowed values
    prepare: Callable | None = None   # (apply_fn, variables, prunable, input_shape, options) → options
    rounds: int = 1                   # default score-and-prune rounds at init (pai.rounds = 0)
    regrow: bool = False              # each round selects among all weights (pruned ones may come back)
    declares: dict = dataclasses.field(default_factory=dict)  # pai field → Option (default, help)
    stats: bool = False               # fn takes stats_fn(variables, x) → batch_stats (a train-mode pass)
    host: bool = False                # fn runs on the host (numpy), not jit-compiled
    density: bool = False             # fn takes the round's target density (a mask builder, e.g. PHEW)
    order: bool = False               # fn takes the prunable paths in network order

    def defaults(self) -> dict:
        """{pai field: default} of the fields this score reads."""
        return {k: v.default for k, v in {**SHARED, **self.declares}.items()}


def data_free() -> list[str]:
    """The registered scores that need no data."""
    return [name for name, s in SCORES.items() if not s.needs_data]
