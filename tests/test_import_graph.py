"""The subpackages of pneumonia_monai import each other without cycles (function-level imports count too).

An import inside a function that only dodges a cycle is still a cycle: every ``import`` statement is an
edge here, wherever it stands, except those under ``if TYPE_CHECKING:`` (annotations only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pneumonia_monai

PACKAGE = Path(pneumonia_monai.__file__).resolve().parent

#: Cycles left, each with why; a new cycle, or one of these gone, fails the test (update the list then).
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imported_modules(tree: ast.AST) -> list[str]:
    found: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]  # from pkg import module
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        stack.extend(ast.iter_child_nodes(node))
    return found


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "pneumonia_monai" or len(parts) < 2:
        return None
    return parts[1] if (PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file() else None


def import_graph() -> dict[str, set[str]]:
    """Subpackage (or top-level module) -> the others it imports."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).parts
        source = rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")
        edges = graph.setdefault(source, set())
        for module in _imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            target = _subpackage(module)
            if target is not None and target != source:
                edges.add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle_and_only_it() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == {frozenset({"a", "b", "c"})}


def test_data_and_dicom_are_layered() -> None:
    graph = import_graph()
    assert "dicom" in graph.get("data", set())  # datalists are built from DICOM selections
    assert "data" not in graph["dicom"], "dicom must not import data (data is built on dicom)"


def test_no_import_cycle_between_subpackages() -> None:
    assert cycles(import_graph()) == set(KNOWN_CYCLES)
