"""One registry pattern for everything lth can be extended with: scores, models, datasets, layer-density
distributions, sparse-training methods and studies.

A registry maps a name to an entry. Entries are added where they are defined (`SCORES.add(...)` in
lth/scores/__init__.py, one line each) or from outside the package with `lth.register(kind, name,
entry)`. An entry may be a module path ('lth.studies.lottery'), imported on first use, so listing
names stays cheap. Each registry names the package whose import registers its built-in entries, so
`names()` and `get()` see them without the caller importing that package (the harness reads the
studies' declarations through STUDIES without an import arrow pointing up).

An entry's options (config fields with defaults and help, see lth/options.py) are declared beside
it; lth.harness.config assembles the config schema from every registry.
"""
from __future__ import annotations

import importlib

from lth.errors import UserError


class Registry:
    def __init__(self, kind: str, package: str):
        self.kind = kind              # what an entry is, for messages: 'score', 'study', ...
        self.package = package        # imported before the first look-up: it registers the built-ins
        self._entries: dict = {}
        self._loaded = False

    def add(self, name: str, entry=None):
        """Register `entry` as `name` (a later registration replaces an earlier one); without
        `entry`, a decorator. Returns the entry."""
        if entry is None:
            return lambda e: self.add(name, e)
        if not isinstance(name, str) or not name or "," in name or name != name.strip():
            raise UserError(f"{self.kind} name {name!r}; allowed: a non-empty string without commas or outer spaces")
        self._entries[name] = entry
        return entry

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self.package)

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def __contains__(self, name) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self):
        return iter(self.names())

    def get(self, name: str):
        """The entry registered as `name` (a module path is imported once); a UserError naming the
        allowed names otherwise."""
        self._load()
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self._entries)}")
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = self._entries[name] = importlib.import_module(entry)
        return entry

    def items(self):
        return [(name, self.get(name)) for name in self.names()]


SCORES = Registry("score", "lth.scores")
MODELS = Registry("model family", "lth.models")
DATASETS = Registry("dataset", "lth.data")
DISTRIBUTIONS = Registry("distribution", "lth.pruning.sparsity")
SPARSE_METHODS = Registry("sparse method", "lth.pruning.sparse_train")
STUDIES = Registry("study", "lth.studies")
KINDS = {"score": SCORES, "model": MODELS, "dataset": DATASETS, "distribution": DISTRIBUTIONS,
         "sparse_method": SPARSE_METHODS, "study": STUDIES}


def register(kind: str, name: str, entry=None):
    """Add `entry` under `name` to the registry of `kind` (score, model, dataset, distribution,
    sparse_method, study); without `entry`, a decorator. Works from outside the package: a score's
    options join the config schema, a study gets its `lth NAME` subcommand and `lth.NAME` function."""
    if kind not in KINDS:
        raise UserError(f"unknown registry {kind!r}; allowed: {', '.join(KINDS)}")
    return KINDS[kind].add(name, entry)
