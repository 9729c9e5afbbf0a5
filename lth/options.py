"""Options declared beside the code that reads them.

A declaration is a dict {field: Option(default, help)} for one config section ('pai', 'train.distill',
'' for the top level). Scores, models, datasets, prune rules, training, studies and the harness each
declare theirs; lth.harness.config.base() assembles the schema from them, so `--set` validation,
identity hashing (only fields that differ from these defaults are hashed) and the docs' table of
config keys all come from the one declaration.
"""
from __future__ import annotations

import dataclasses

import ml_collections

from lth.errors import UserError


@dataclasses.dataclass(frozen=True)
class Option:
    default: object
    help: str = ""


def options(**fields) -> dict[str, Option]:
    """{field: Option} from keywords field=(default, help) or field=default."""
    return {k: v if isinstance(v, Option) else Option(*v) if isinstance(v, tuple) else Option(v)
            for k, v in fields.items()}


def add(cfg: ml_collections.ConfigDict, section: str, declared: dict, owner: str = "") -> None:
    """Add `declared` fields to `cfg` under the dotted `section` (created as needed). A field
    declared twice must have the same default (several scores may share one option)."""
    node = cfg
    for part in [p for p in section.split(".") if p]:
        if part not in node:
            node[part] = ml_collections.ConfigDict()
        node = node[part]
    for key, opt in declared.items():
        if key in node and not isinstance(node[key], ml_collections.ConfigDict):
            if node[key] != opt.default:
                where = f"{section}.{key}" if section else key
                raise UserError(f"config field {where} declared twice with different defaults "
                                f"({node[key]!r}, {opt.default!r}{' by ' + owner if owner else ''})")
            continue
        node[key] = opt.default


def table(declarations) -> list[tuple[str, object, str]]:
    """(dotted key, default, help) of every declared field, in declaration order (for the docs)."""
    out, seen = [], set()
    for section, declared in declarations:
        for key, opt in declared.items():
            full = f"{section}.{key}" if section else key
            if full not in seen:
                seen.add(full)
                out.append((full, opt.default, opt.help))
    return out


def split_list(text) -> list[str]:
    """'a, b,,c' → ['a', 'b', 'c']: the comma lists of option values ('' = none)."""
    return [part.strip() for part in str(text).split(",") if part.strip()]
