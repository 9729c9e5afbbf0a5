"""The studies: one module per command (lottery, pai, stability, heads, collapse, compress), each
with its identity (`COMMAND`), validation, checks and `run`; they use the harness (lth/run.py,
lth/experiment.py, lth/checkpoint.py) and the library, never the CLI."""
