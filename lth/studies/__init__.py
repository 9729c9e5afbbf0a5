"""The studies, one module each, registered below (one line each) in lth.registry.STUDIES, which the
config schema, the API (`lth.NAME`, lth/api.py) and the CLI (`lth NAME`) read.

A study module declares, by name:
  COMMAND               its identity and checks (lth.harness.identity.Command)
  OPTIONS               {config section: {field: Option}}: its own options (lth/options.py)
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
  RESULT_FILE           the JSON `lth.open_run` reads back (default: summary.json)
  FROM_RUN = True       a study of one level of a finished `lth lottery` run: `from_run(run_dir, overrides,
                        level, progress)` → (job, results dir) replaces the config (`lth NAME --run-dir RUN
                        [--level L]`, `lth.NAME(run_dir, level, overrides)`)
A new study is its module plus one line here (or lth.register('study', NAME, module) from outside).
"""
from lth.registry import STUDIES

STUDIES.add("lottery", "lth.studies.lottery")
STUDIES.add("heads", "lth.studies.heads")
STUDIES.add("pai", "lth.studies.pai")
STUDIES.add("stability", "lth.studies.stability")
STUDIES.add("collapse", "lth.studies.collapse")
STUDIES.add("sparse", "lth.studies.sparse")
STUDIES.add("compare", "lth.studies.compare")
STUDIES.add("compress", "lth.studies.compress")
STUDIES.add("oneshot", "lth.studies.oneshot")
STUDIES.add("transfer", "lth.studies.transfer")
