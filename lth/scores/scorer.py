"""A score bound to a model and its options: scorer(variables, masks, rng) → scores, jit-compiled
once. Options come from the config's `pai` section through the score's declarations."""
from __future__ import annotations

import jax

from lth.errors import UserError, check_choice
from lth.registry import SCORES
from lth.scores.score import data_free

# Ranges of the numeric `pai` fields: field → (test, what is allowed).
RANGES = {
    "batch_size": (lambda v: v >= 1, "1 or more examples"),
    "batches": (lambda v: v >= 1, "1 or more batches"),
    "obd_probes": (lambda v: v >= 1, "1 or more probes"),
    "grasp_temperature": (lambda v: v > 0, "a positive temperature"),
    "prospr_steps": (lambda v: v >= 1, "1 or more inner steps"),
    "prospr_lr": (lambda v: v > 0, "a positive learning rate"),
    "ntksap_epsilon": (lambda v: v > 0, "a positive standard deviation"),
    "ntksap_r": (lambda v: v >= 1 and int(v) == v, "1 or more passes"),
}


def check_option(field: str, value, method: str | None = None) -> None:
    """A UserError naming `pai.<field>` when `value` is out of its range (RANGES) or not one of the
    values a registered score allows for it (Score.checks)."""
    if field in RANGES:
        test, allowed = RANGES[field]
        try:
            ok = not isinstance(value, (bool, str)) and bool(test(value))
        except TypeError:
            ok = False
        if not ok:
            raise UserError(f"pai.{field} {value!r} out of range; allowed: {allowed}")
    for name, score in SCORES.items():
        if method in (None, name):
            for arg, allowed in score.checks.items():
                if score.options.get(arg) == field:
                    check_choice(f"pai.{field}", value, allowed)


def check_options(options) -> None:
    """check_option for every `pai` field in `options` (the config's `pai` section)."""
    for field in options:
        check_option(field, options[field])


class Scorer:
    def __init__(self, method, apply_fn, variables, prunable, batch, input_shape, options, stats_fn=None, order=None):
        """`options`: the `pai` config section (or any mapping with its keys); `stats_fn(variables, x)`:
        the model's train-mode pass returning its updated batch_stats (scores that declare `stats`);
        `order`: the prunable paths in network order (scores that declare `order`)."""
        score = SCORES.get(method)
        if score.needs_data and batch is None:
            raise UserError(f"score {method!r} needs data but no batch is available; allowed without data: "
                            f"{', '.join(data_free())}")
        kw = {arg: options[key] for arg, key in score.options.items()}
        for arg, key in score.options.items():
            check_option(key, kw[arg], method)
        if score.prepare is not None:
            kw = score.prepare(apply_fn, variables, prunable, tuple(input_shape), kw)
        if score.stats:
            kw = {**kw, "stats_fn": stats_fn}
        if score.order:
            kw = {**kw, "order": list(order) if order is not None else None}
        self.takes_density = score.density
        self.method, self.batch, self.options = method, batch, kw
        self.precision = kw.get("precision")
        self.x64 = self.precision == "float64"
        fn = score.fn
        if score.host:
            self._fn = lambda v, m, b, k, **d: fn(apply_fn, v, m, b, k, **kw, **d)
        else:
            self._fn = jax.jit(lambda v, m, b, k: fn(apply_fn, v, m, b, k, **kw))

    def __call__(self, variables, masks, rng, density=None):
        """Scores of `variables` under `masks`; `density`: the round's target (read by mask builders)."""
        if self.takes_density:
            return self._fn(variables, masks, self.batch, rng, density=1.0 if density is None else density)
        if self.x64:
            with jax.enable_x64(True):
                return jax.block_until_ready(self._fn(variables, masks, self.batch, rng))
        return jax.block_until_ready(self._fn(variables, masks, self.batch, rng))


def make_scorer(method, apply_fn, variables, prunable, batch, input_shape, stats_fn=None, order=None,
                **pai_options) -> Scorer:
    """A Scorer with the score's declared defaults, overridden by `pai_options` (its `pai` fields,
    e.g. synflow_precision='auto', obd_probes=8): for use outside a run."""
    options = SCORES.get(method).defaults()
    for _, other in SCORES.items():   # any score's field is accepted, as in a config's `pai` section
        options = {**other.defaults(), **options}
    for key, value in pai_options.items():
        if key not in options:
            raise UserError(f"unknown score option {key!r}; allowed: {', '.join(sorted(options))}")
        options[key] = value
    return Scorer(method, apply_fn, variables, prunable, batch, input_shape, options, stats_fn, order)
