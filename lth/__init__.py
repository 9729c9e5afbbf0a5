"""lth: lottery tickets and pruning at initialization in JAX/Flax.

The public API (everything in `__all__`; the rest is internal):

studies, one function per registered study (lth.registry.STUDIES), each returning a `Result` (run_dir,
summary, table(), plot()) and resuming what is on disk:
    lottery, pai, sparse, compare, stability, heads, collapse, compress, oneshot, and any study registered with
    lth.register('study', NAME, module); run_study(NAME, ...) runs one by name; open_run reads a finished one
configs:
    load_config (a configs/*.py path or name, a ConfigDict or a dict, plus overrides)
building blocks:
    build_model, load_data, score, prune_at_init, train_masked, prune_oneshot (magnitude / Wanda /
    SparseGPT / OBS / OBD after training, unstructured or N:M), and the modules masks (bool pytrees
    shaped like params), prune (scores → masks: exact top-k, global / layerwise, overrides, N:M),
    nm (N:M patterns: nm_keep, nm_select, check_nm), surgeons (one layer: sparsegpt, wanda_metric /
    wanda_keep, magnitude_keep; obs: the blocked Fisher inverse, scores, update, prune_obs),
    sparsity (layer density distributions: uniform, uniform_plus, er, erk, smart_ratio), sparse_train
    (GMP, SET, RigL and SR-STE mask updates: schedules, drop and grow, srste, MaskUpdate for the
    training loop) and movement (movement pruning: binarizers, threshold schedule, the scores' optimizer);
    compression: shrink (a ticket's dead units, switched-off heads / MLPs removed from the arrays),
    factorize (truncated-SVD factors of kernels / embeddings: plan, factorize, low_rank) and speed
    (latency and throughput of several models side by side, accuracy); tables and plots (what the
    studies print and draw, for analysis/)
extending:
    register(kind, name, entry): a score, model family, dataset, distribution, sparse method or study
    from outside the package (lth/registry.py); Option (and lth.options.options) declare an entry's config fields
errors:
    UserError (a ValueError; the one-line message the CLI prints, exit 2)

Attributes load on first use, so `import lth` stays cheap.
"""
import importlib

from lth.registry import STUDIES, register  # noqa: F401  (light: names and module paths only)

__version__ = "0.1.0"

_FROM = {
    **{name: "lth.api" for name in ("open_run", "Result", "load_config", "build_model", "load_data", "score",
                                    "prune_at_init", "train_masked", "run_study")},
    "prune_oneshot": "lth.surgeons.model",
    "UserError": "lth.errors",
    "Option": "lth.options",
}
_MODULES = {"masks": "lth.pruning.masks", "prune": "lth.pruning.prune", "sparsity": "lth.pruning.sparsity",
            "nm": "lth.pruning.nm", "movement": "lth.pruning.movement",
            "sparse_train": "lth.pruning.sparse_train", "shrink": "lth.compression.shrink",
            "factorize": "lth.compression.factorize", "speed": "lth.compression.speed",
            "surgeons": "lth.surgeons", "tables": "lth.studies.tables", "plots": "lth.studies.plots"}
__all__ = sorted([*_FROM, *_MODULES, "register", *STUDIES.names()])


def __getattr__(name):
    if name in _FROM:
        return getattr(importlib.import_module(_FROM[name]), name)
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    if not name.startswith("_") and name in STUDIES:   # lth.lottery, lth.compress, a registered study
        return importlib.import_module("lth.api").study_function(name)
    raise AttributeError(f"module 'lth' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(STUDIES.names()))
