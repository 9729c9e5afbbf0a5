"""A command's identity: the config fields that decide its results (those that differ from the
schema's defaults), their hash, and the run directory named by it — with directories of the former
identity format (the full sections) still found."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Callable

from lth.harness import config

# How identities were made before they held only non-default fields: the full sections, except these
# sections while their switch was empty. Kept only so that run directories of that format are found.
LEGACY_OFF_UNLESS = {"train.distill": "teacher"}
# Fields added to the schema after that format was left: absent from its identities.
LEGACY_ABSENT = ("data.drop_last", "model.share_layers", "prune.structure", "compress.heads", "compress.mlps",
                 "compress.shrink", "compress.factorize", "compress.rank", "compress.energy", "compress.finetune",
                 "compress.speed", "compress.speed_repeats", "prune.pattern", "data.mlm_windows", "data.mlm_rate",
                 "data.sop_pairs", "compress.low_bits", "compress.group_size", "compress.mixed",
                 "compress.hessian_batches", "compress.power_iters", "model.layerdrop", "compress.layers",
                 "model.fit_size", "model.pretrained_layers", "train.distill.kind", "train.distill.beta",
                 "train.distill.normalize", "data.mlm_predictions",
                 "transfer.masks", "data.classes", "data.train_part")


def _fields(full: dict, sections, unhashed) -> dict:
    """The `sections` of a config's JSON, less the `unhashed` keys (missing keys are left out)."""
    out = {}
    for key in sections:
        node, dst = full, out
        *head, last = key.split(".")
        for h in head:
            node, dst = node.get(h, {}), dst.setdefault(h, {})
        if last in node:
            dst[last] = node[last]
    return _drop(out, unhashed)


def _drop(tree: dict, keys) -> dict:
    """`tree` less the dotted `keys` (in place)."""
    for key in keys:
        *head, last = key.split(".")
        node = tree
        for h in head:
            node = node.get(h, {})
        node.pop(last, None)
    return tree


def _diff(a: dict, b: dict) -> dict:
    """The entries of `a` that differ from `b` (nested dicts compared key by key)."""
    out = {}
    for k, v in a.items():
        if isinstance(v, dict) and isinstance(b.get(k), dict):
            sub = _diff(v, b[k])
            if sub:
                out[k] = sub
        elif k not in b or b[k] != v:
            out[k] = v
    return out


def _digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    sections: tuple                      # config keys (sections or fields) hashed into the run's identity
    unhashed: tuple = ()                 # keys inside those sections left out of it
    prefix: str = ""                     # run directory name prefix
    validate: Callable | None = None     # (cfg) → None, before any data is read
    check: Callable | None = None        # (setup) → None, before anything is written
    label: Callable | None = None        # (cfg) → readable part of the run directory name (default: cfg.name)

    def identity(self, cfg) -> dict:
        """The fields of this command's sections (less `unhashed`) whose values differ from the config
        schema's defaults (lth.harness.config.base()), as OpenLTH's Desc hashes only non-default hparams: a
        field added to the schema with a default never moves an existing run."""

        return _diff(_fields(json.loads(cfg.to_json()), self.sections, self.unhashed),
                     _fields(json.loads(config.base().to_json()), self.sections, self.unhashed))

    def legacy_identity(self, cfg) -> dict:
        """The identity as run directories written before the non-default format stored it."""
        out = _fields(json.loads(cfg.to_json()), self.sections, self.unhashed)
        for key, switch in LEGACY_OFF_UNLESS.items():
            *head, last = key.split(".")
            node = out
            for h in head:
                node = node.get(h, {})
            if last in node and not node[last].get(switch):
                node.pop(last)
        return _drop(out, LEGACY_ABSENT)

    def hash(self, cfg) -> str:
        return _digest(self.identity(cfg))

    def matches(self, stored: dict, cfg) -> bool:
        """Whether a stored identity (either format) is this config's."""
        return stored in (self.identity(cfg), self.legacy_identity(cfg))

    def dir_for(self, parent: str, stem: str, cfg) -> str:
        """<parent>/<stem>-<hash>; a directory of the legacy format for the same config, where one
        exists and the new one does not, is found again instead."""
        new = os.path.join(parent, f"{stem}-{self.hash(cfg)}")
        old = os.path.join(parent, f"{stem}-{_digest(self.legacy_identity(cfg))}")
        return old if not os.path.exists(new) and os.path.exists(old) else new

    def run_dir(self, cfg, out: str | None = None) -> str:
        """<out>/<prefix><name>-<hash of this command's identity>."""
        base = self.label(cfg) if self.label else cfg.name
        name = base if base.startswith(self.prefix) else self.prefix + base
        return self.dir_for(out or cfg.run.out, name, cfg)
