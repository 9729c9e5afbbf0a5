"""Pruning scores. Each is a pure function (apply_fn, variables, masks, batch | None, rng) → pytree
shaped like variables['params']; higher scores are kept. Registry: SCORES[name] (function, data
needs, options); Scorer binds one to a model and the config's options."""
from lth.scores.registry import DATA_FREE, SCORES, get  # noqa: F401
from lth.scores.scorer import Scorer, make_scorer  # noqa: F401
