"""The floors of docs/architecture.md, read from the code: every import of a module of
src/rnnlab goes to its own floor or one below, none takes another module's private name, and
no import circle exists."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rnnlab"

# what each floor may import (besides itself and rnnlab.version, which every floor may read)
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "data": set(),
    "learning": {"core"},
    "fast": {"core"},
    "interop": {"core"},
    "train": {"core", "learning", "fast", "data"},
    "lab": {"core", "learning", "fast", "data", "train", "interop"},
    "faces": {"core", "learning", "fast", "data", "train", "interop", "lab", "faces"},
}


def _module(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _floor(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in MAY_IMPORT else "faces"


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` for each import of rnnlab's own modules in ``path``."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "rnnlab":
                out.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names
                    if a.name.split(".")[0] == "rnnlab"]
    return out


FILES = sorted(SRC.rglob("*.py"))


def _resolve(target: str, names: list[str]) -> list[str]:
    """The modules an import reaches: ``from pkg import mod`` reaches ``pkg.mod``."""
    found = []
    for n in names or [""]:
        sub = f"{target}.{n}" if n else target
        if (SRC.parent / (sub.replace(".", "/") + ".py")).exists() or \
                (SRC.parent / sub.replace(".", "/") / "__init__.py").exists():
            found.append(sub)
        else:
            found.append(target)
    return found


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_down_and_take_no_private_name(path: Path) -> None:
    mod = _module(path)
    floor = _floor(mod)
    for target, names, line in _imports(path):
        for reached in _resolve(target, names):
            other = _floor(reached)
            if reached == "rnnlab.version":
                continue
            assert other == floor or other in MAY_IMPORT[floor], \
                f"{mod}:{line} ({floor}) imports {reached} ({other})"
        if target != mod:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{mod}:{line} takes private {private} from {target}"


def test_no_import_circle() -> None:
    graph: dict[str, set[str]] = {}
    for path in FILES:
        mod = _module(path)
        graph[mod] = set()
        for target, names, _ in _imports(path):
            graph[mod].update(r for r in _resolve(target, names) if r != mod)
    # rnnlab/__init__ re-exports the faces, which import it back for the version: not a circle
    # of the floors, so it is left out of the search
    graph.pop("rnnlab", None)
    for deps in graph.values():
        deps.discard("rnnlab")
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
