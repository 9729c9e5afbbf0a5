"""Pruning scores. Each is a pure function (apply_fn, variables, masks, batch | None, rng) → pytree
shaped like variables['params']; higher scores are kept. Registry: SCORES[name]."""
from lth.scores.registry import SCORES, get  # noqa: F401
