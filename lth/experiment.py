"""Run directories: named from the config's identity hash, resumable, with summary.json at the root."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

from lth.config import identity
from lth.errors import UserError


def config_hash(cfg) -> str:
    return hashlib.sha256(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()[:10]


def run_dir_for(cfg, out: str | None = None) -> str:
    """<out>/<name>-<hash of the config's identity>."""
    return os.path.join(out or cfg.run.out, f"{cfg.name}-{config_hash(cfg)}")


def check_run_dir(path: str, cfg) -> None:
    """UserError if `path` holds a run of a different config (nothing is written)."""
    stored = os.path.join(path, "config.json")
    if os.path.exists(stored):
        try:
            with open(stored) as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise UserError(f"{stored} is unreadable ({e}); choose another run directory") from None
        if old.get("identity") != identity(cfg):
            raise UserError(f"run directory {path} holds a run of another config (hash {old.get('hash')}, "
                            f"this one {config_hash(cfg)}); choose another --run-dir or drop it to use the default")
    elif os.path.isdir(path) and os.listdir(path):
        raise UserError(f"run directory {path} is not empty and holds no lth config.json; choose another")


def open_run_dir(path: str, cfg) -> None:
    """Create `path` and record the config (after check_run_dir)."""
    os.makedirs(path, exist_ok=True)
    stored = os.path.join(path, "config.json")
    if not os.path.exists(stored):
        write_json(stored, {"hash": config_hash(cfg), "identity": identity(cfg), "config": json.loads(cfg.to_json())})


def write_json(path: str, obj) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise UserError(f"{path} is corrupt ({e}); move it away to recompute it") from None
