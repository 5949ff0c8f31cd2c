"""The package's import structure is a plain layering: no import cycle among ``ae_lightning``'s modules.

Every ``import`` counts, at module level and inside functions alike (a function-level import only delays a
cycle), and importing ``a.b.c`` also imports the packages ``a.b`` and ``a`` (their ``__init__``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ae_lightning"


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """The dotted names a module's ``import`` statements name (relative ones resolved)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            out |= {prefix} | {f"{prefix}.{a.name}" for a in node.names}
    return out


def import_graph() -> dict[str, set[str]]:
    names = module_names()

    def with_packages(name: str) -> set[str]:  # a module and every package above it that exists
        parts = name.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & names.keys()

    graph = {}
    for name, path in names.items():
        targets = imported(ast.parse(path.read_text()), name, path.name == "__init__.py")
        graph[name] = set().union(*(with_packages(t) for t in targets)) - with_packages(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_ae_lightning_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and graph["ae_lightning.config"] >= {"ae_lightning.hparams"}
    assert cycles(graph) == []
