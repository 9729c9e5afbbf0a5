"""lth: lottery tickets and pruning at initialization in JAX/Flax.

The public API (everything in `__all__`; the rest is internal):

studies, each returning a `Result` (run_dir, summary, table(), plot()) and resuming what is on disk:
    lottery, pai, sparse, compare, stability, heads, collapse, compress, open_run, and run_study (any registered
    study by name: lth.studies.REGISTRY, one line per study module)
configs:
    load_config (a configs/*.py path or name, a ConfigDict or a dict, plus overrides)
building blocks:
    build_model, load_data, score, prune_at_init, train_masked, and the modules masks (bool pytrees
    shaped like params), prune (scores → masks: exact top-k, global / layerwise, overrides),
    sparsity (layer density distributions: uniform, uniform_plus, er, erk) and sparse_train (GMP,
    SET and RigL mask updates: schedules, drop and grow, MaskUpdate for the training loop);
    compression: shrink (a ticket's dead units, switched-off heads / MLPs removed from the arrays),
    factorize (truncated-SVD factors of kernels / embeddings: plan, factorize, low_rank) and speed
    (latency and throughput of several models side by side, accuracy)
errors:
    UserError (a ValueError; the one-line message the CLI prints, exit 2)

Attributes load on first use, so `import lth` stays cheap.
"""
import importlib

__version__ = "0.1.0"

_FROM = {
    **{name: "lth.api" for name in ("lottery", "pai", "sparse", "compare", "stability", "heads", "collapse", "compress", "open_run",
                                    "Result", "load_config", "build_model", "load_data", "score", "prune_at_init",
                                    "train_masked", "run_study")},
    "UserError": "lth.errors",
}
_MODULES = ("masks", "prune", "sparsity", "sparse_train", "shrink", "factorize", "speed")
__all__ = sorted([*_FROM, *_MODULES])


def __getattr__(name):
    if name in _FROM:
        return getattr(importlib.import_module(_FROM[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"lth.{name}")
    raise AttributeError(f"module 'lth' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
