"""Harness layer: everything a study needs around training. The config schema, assembled from the
options each registered score, model, dataset, method and study declares, with overrides and
parsing (`config`); a run's identity and directory name (`identity`); every path inside a run
directory (`paths`); the lock and strict JSON (`rundir`); checkpoints, the only orbax importer
(`checkpoint`); joining jax.distributed (`distributed`); signals, TensorBoard events, summaries;
and `run`: config → validated Setup → arms trained resumably."""
