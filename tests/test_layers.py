"""The layering rule of docs/architecture.md, read from the code: every lth module's imports (ast)
point down or sideways within a layer, never up; no two modules import each other, directly or
through others; and lth imports sit at the top of a module, except the few listed in LAZY with
their reason. Fails on a planted upward import (docs/architecture.md shows how to check it)."""
from __future__ import annotations

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lth")

# Layer of each top-level piece of lth, from the bottom. A module may import its own layer and below.
LAYERS = {
    "lth.errors": 0, "lth.registry": 0, "lth.options": 0,                           # foundation
    "lth.pruning": 1, "lth.scores": 1, "lth.models": 1, "lth.data": 1, "lth.surgeons": 1,   # library
    "lth.training": 2,
    "lth.compression": 3,
    "lth.harness": 4,
    "lth.studies": 5,
    "lth.api": 6, "lth": 6,                                                          # lth/__init__ (lazy)
    "lth.cli": 7,
}
NAMES = {0: "foundation", 1: "library", 2: "training", 3: "compression", 4: "harness", 5: "studies", 6: "api",
         7: "cli"}
# (importing module, imported module) → why the import is inside a function.
LAZY: dict[tuple[str, str], str] = {}


def modules() -> dict[str, str]:
    out = {}
    for dp, _, fs in os.walk(ROOT):
        for f in fs:
            if f.endswith(".py"):
                path = os.path.join(dp, f)
                name = "lth." + os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__") if name != "lth.__init__" else "lth"] = path
    return out


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise AssertionError(f"{module} is in no layer; add its package to LAYERS (and docs/architecture.md)")


def imports(path: str, mods: dict) -> list[tuple[str, bool, int]]:
    """(imported lth module, inside a function?, line) for every lth import of the file."""
    tree = ast.parse(open(path).read())
    out = []

    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node, inside):
        for ch in ast.iter_child_nodes(node):
            names = []
            if isinstance(ch, ast.Import):
                names = [a.name for a in ch.names]
            elif isinstance(ch, ast.ImportFrom) and ch.level == 0 and ch.module:
                names = [f"{ch.module}.{a.name}" for a in ch.names]
            for n in names:
                if n == "lth" or n.startswith("lth."):
                    target = resolve(n)
                    if target:
                        out.append((target, inside, ch.lineno))
            visit(ch, inside or isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
    visit(tree, False)
    return out


def graph():
    mods = modules()
    return mods, {m: imports(p, mods) for m, p in mods.items()}


def test_no_import_points_up():
    mods, g = graph()
    up = [f"{m} ({NAMES[layer(m)]}) imports {t} ({NAMES[layer(t)]}), line {line}"
          for m, edges in g.items() for t, _, line in edges if t != m and layer(t) > layer(m)]
    assert not up, "imports that point up a layer:\n" + "\n".join(up)


def test_no_cycles():
    mods, g = graph()
    edges = {m: {t for t, _, _ in es if t != m and not m.startswith(t + ".")} for m, es in g.items()}

    def reaches(a, b):
        todo, seen = [a], {a}
        while todo:
            for y in edges[todo.pop()]:
                if y == b:
                    return True
                if y not in seen:
                    seen.add(y)
                    todo.append(y)
        return False
    cycles = sorted({" ↔ ".join(sorted((a, b))) for a in edges for b in edges[a] if reaches(b, a)})
    assert not cycles, "modules that import each other (directly or through others):\n" + "\n".join(cycles)


def test_lth_imports_sit_at_the_top():
    mods, g = graph()
    inner = [f"{m} imports {t} inside a function, line {line}" for m, es in g.items() for t, inside, line in es
             if inside and (m, t) not in LAZY]
    assert not inner, "lth imports inside functions (move them up, or list them in LAZY with why):\n" + "\n".join(inner)


def test_every_lazy_entry_is_still_needed():
    mods, g = graph()
    used = {(m, t) for m, es in g.items() for t, inside, _ in es if inside}
    assert set(LAZY) <= used, f"LAZY entries no longer used: {sorted(set(LAZY) - used)}"
