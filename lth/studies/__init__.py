"""The studies, one module each, and the registry the API (lth/api.py) and the CLI read.

A study module declares, by name:
  COMMAND               its identity and checks (lth.run.Command; or `command()` building one)
  run(s, run_dir, log)  the study in its locked run directory, resuming what is there → summary
  HELP, DESCRIPTION     the CLI's one-line help and description
  describe(s)           the header line's detail (model, data, what is swept)
  table(summary)        a markdown table; plot(summary, path) → path, written to PLOT_FILE by default
and may declare:
  FLAGS                 [(flag, config key, argparse options)]: CLI flags that set config keys
  DEFAULT_CONFIG        the config file used when --config is not given (else --config is required)
  prepare_config(cfg)   config adjustments before validation; SYNTHETIC_OK: shape-only data allowed
  results_dir(run_dir, cfg)  where its results live inside the run directory (default: there)
  files(result)         the CLI's closing lines (default: summary.json and the plot)
  outcome(summary)      the arms whose diverged replicates set exit code 3 (default: the summary)
A new study is its module plus one line in REGISTRY (or `register(name, module)` at run time).
"""
from __future__ import annotations

import importlib

REGISTRY = {
    "lottery": "lth.studies.lottery",
    "heads": "lth.studies.heads",
    "pai": "lth.studies.pai",
    "stability": "lth.studies.stability",
    "collapse": "lth.studies.collapse",
    "sparse": "lth.studies.sparse",
    "compare": "lth.studies.compare",
}


def register(name: str, module) -> None:
    """Add a study (a module path or a module object) under `name`."""
    REGISTRY[name] = module


def get(name: str):
    """The study module registered as `name`."""
    from lth.errors import check_choice

    check_choice("study", name, REGISTRY)
    mod = REGISTRY[name]
    return importlib.import_module(mod) if isinstance(mod, str) else mod


def command(mod):
    return mod.COMMAND if hasattr(mod, "COMMAND") else mod.command()
