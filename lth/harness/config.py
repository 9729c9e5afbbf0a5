"""The config schema, assembled from the options every piece declares beside its code (lth/options.py),
with config files, names and overrides. configs/*.py start from `base()`.

Durations are strings: '500it' (iterations) or '2ep' (epochs, converted with the training set's
steps per epoch); a bare integer means iterations.
"""
from __future__ import annotations

import ast
import importlib.util
import math
import os
import re

import ml_collections

from lth.data import catalog
from lth.errors import UserError
from lth.models import zoo
from lth.options import add as add_options
from lth.options import options
from lth.options import table as options_table
from lth.pruning import prune as P
from lth.registry import SCORES, STUDIES
from lth.scores.score import SHARED
from lth.training import distill, optim

# The harness's own fields: the run's name and seeds (top level) and how it runs (`run`, never hashed).
TOP = options(
    name=("lottery", "readable prefix of the run directory"),
    seed=(0, "replicate r uses seed + r (init, data order, controls)"),
    replicates=(1, "R seeds trained together in one vmapped program"),
)

RUN = options(
    out=("runs", "root folder of run directories"),
    checkpoint_every=("2ep", "mid-training checkpoint period ('0it' = only at level ends)"),
    progress=(True, "show a progress bar"),
    devices=(0, "use this many devices (0 = all visible, in every process of a jax.distributed run)"),
    parallel=("auto", "replicates (each device trains R/D replicates) | data (each batch split) | auto (replicates "
                      "when R >= devices; R < devices: R groups splitting batches)"),
    tensorboard=(True, "write each arm's loss / accuracy history as TensorBoard events (ARM/tensorboard/replicate_R)"),
    replicate_mode=("auto", "vmap | unroll | sequential | auto (CPU conv nets: unroll R <= 2, else sequential; "
                            "others vmap)"),
)


def declarations() -> list[tuple[str, dict]]:
    """(section, {field: Option}) of every declared option, in the schema's order: the harness's,
    the model zoo's, the data's, training's, the prune rule's, each registered study's, each
    registered score's (`pai`), then `run`."""
    out = [("", TOP), ("model", zoo.OPTIONS), ("data", catalog.OPTIONS), ("train", optim.OPTIONS),
           ("train.distill", distill.OPTIONS), ("prune", P.OPTIONS)]
    for _, study in STUDIES.items():
        out += list(getattr(study, "OPTIONS", {}).items())
    out += [("pai", {**SHARED, **score.declares}) for _, score in SCORES.items()]
    return out + [("run", RUN)]


def base() -> ml_collections.ConfigDict:
    """The config schema with every default, assembled from the declarations (configs/*.py start
    from it)."""
    c = ml_collections.ConfigDict()
    for section, declared in declarations():
        add_options(c, section, declared)
    return c


def keys_table() -> str:
    """A markdown table of every config field: key, default, meaning (for the docs)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, help_ in options_table(declarations()):
        rows.append(f"| `{key}` | `{default!r}` | {help_.replace('|', '&#124;')} |")
    return "\n".join(rows)


MAX_STEPS = 1e12   # a duration beyond this is a typo, not a run


def parse_duration(text: str, steps_per_epoch: int, what: str = "duration") -> int:
    """'500it' | '2ep' | '500' → iterations."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(it|ep)?\s*", str(text))
    if not m:
        raise UserError(f"bad {what} {text!r}; expected e.g. '500it' or '2ep'")
    value, unit = float(m.group(1)), m.group(2) or "it"
    steps = value * steps_per_epoch if unit == "ep" else value
    if not steps <= MAX_STEPS:   # also inf, from a number too long for a float
        raise UserError(f"{what} {str(text).strip()[:40]!r} out of range; allowed: at most {MAX_STEPS:.0e} iterations")
    return int(round(steps)) if unit == "ep" else int(value)


def apply_overrides(cfg, items) -> None:
    """Apply ['key=value', ...]; unknown keys and wrong types are UserErrors."""
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"bad --set {item!r}; expected key=value")
        *head, last = key.strip().split(".")
        node = cfg
        for h in head:
            if not isinstance(node, ml_collections.ConfigDict) or h not in node:
                raise UserError(f"unknown config key {key!r}; allowed: {', '.join(all_keys(cfg))}")
            node = node[h]
        if (not isinstance(node, ml_collections.ConfigDict) or last not in node
                or isinstance(node[last], ml_collections.ConfigDict)):
            raise UserError(f"unknown config key {key!r}; allowed: {', '.join(all_keys(cfg))}")
        current = node[last]
        if isinstance(current, str):
            value = raw
        else:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                value = raw
            if isinstance(current, bool) and raw.lower() in ("true", "false"):
                value = raw.lower() == "true"
            if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
                try:
                    value = float(value)
                except OverflowError:   # an integer beyond the float range
                    raise UserError(f"bad value {raw!r} for {key} (out of the float range)") from None
        try:
            node[last] = value
        except TypeError:
            raise UserError(f"bad value {raw!r} for {key} (expected {type(current).__name__})") from None


def check_values(cfg) -> None:
    """A UserError naming the first declared field whose value is not of its declared type (a bool,
    an int, a float — an int is one too — or a string), or is a NaN or infinite float: what a config
    built in Python (cfg.train.lr = float('nan'), cfg.seed = None) can hold that `--set` refuses."""
    allowed = {bool: "True or False", int: "an integer", float: "a finite number", str: "a string"}
    for section, declared in declarations():
        node = cfg
        for part in [p for p in section.split(".") if p]:
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(node, ml_collections.ConfigDict):
            continue
        for key, opt in declared.items():
            if key not in node:
                continue
            value, kind = node[key], type(opt.default)
            if kind not in allowed:
                continue
            if kind is float:
                ok = (isinstance(value, int) and not isinstance(value, bool)
                      or isinstance(value, float) and math.isfinite(value))
            elif kind is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, kind)
            if not ok:
                where = f"{section}.{key}" if section else key
                raise UserError(f"bad value {value!r} for {where}; allowed: {allowed[kind]}")


def all_keys(cfg, prefix="") -> list[str]:
    out = []
    for k, v in cfg.items():
        if isinstance(v, ml_collections.ConfigDict):
            out += all_keys(v, f"{prefix}{k}.")
        else:
            out.append(prefix + k)
    return out


# ----- configs: files, names, dicts ----------------------------------------------------------------
def config_dir() -> str:
    """The folder of the ready-made configs: the top-level configs/ of the source tree, installed with
    the package as `lth.configs` (so names work from any folder after `pip install`)."""
    spec = importlib.util.find_spec("lth.configs")
    if spec is not None and spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def config_names() -> list[str]:
    d = config_dir()
    return (sorted(f[:-3] for f in os.listdir(d) if f.endswith(".py") and not f.startswith("_"))
            if os.path.isdir(d) else [])


def override_items(overrides) -> list[str]:
    """['key=value', ...] from None, a dict {'key': value} or a list of 'key=value' strings."""
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return [f"{k}={v}" for k, v in overrides.items()]
    return list(overrides)


def load_config(cfg="mnist1d_mlp", overrides=None) -> ml_collections.ConfigDict:
    """A ConfigDict from `cfg`: a path to a Python file defining get_config(), the name of a shipped
    config ('mnist1d_mlp', see configs/), a ConfigDict (copied), or a dict {'config': path or name,
    'train.lr': 0.1, ...}; `overrides` ({'lottery.levels': 2} or ['lottery.levels=2']) are applied on
    top, type-checked like --set."""
    items = override_items(overrides)
    if isinstance(cfg, dict):
        cfg = dict(cfg)
        name = cfg.pop("config", "mnist1d_mlp")
        items = override_items(cfg) + items
        cfg = name
    if isinstance(cfg, ml_collections.ConfigDict):
        out = cfg.copy_and_resolve_references()
        apply_overrides(out, items)
        return out
    if not isinstance(cfg, (str, os.PathLike)):
        raise UserError(f"config {cfg!r}; allowed: a configs/*.py path, a config name, a ConfigDict or a dict")
    path = os.fspath(cfg)
    shipped = os.path.join(config_dir(), path + ".py")
    if not os.path.isfile(path) and os.path.isfile(shipped):
        path = shipped
    if not os.path.isfile(path):
        raise UserError(f"config {path!r} not found; allowed: a Python file defining get_config(), or one of "
                        f"{', '.join(config_names())}")
    spec = importlib.util.spec_from_file_location("lth_user_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        out = module.get_config()
    except AttributeError:
        raise UserError(f"config file {path!r} defines no get_config()") from None
    apply_overrides(out, items)
    return out
