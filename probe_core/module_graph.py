"""Which of ``probe_core``'s own modules import which, read from their source (nothing runs).

Two users: the result cache fingerprints exactly the modules a probe result's code imports
(``dependencies``), so a module added to that code is covered without a list to keep up to
date; and the tests check that imports run one way (``cycles`` finds none).

Every ``import`` and ``from ... import`` counts, at module level or inside a function (a
deferred import is still a dependency), except under ``if TYPE_CHECKING:`` (never run); only
imports of ``probe_core`` itself are kept.
``from .evaluation import protocols`` names the module ``probe_core.evaluation.protocols``,
``from .probe import LinearProbe`` the module ``probe_core.probe``.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = "probe_core"
PACKAGE_DIR = Path(__file__).resolve().parent


@functools.cache
def module_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every module of the package by dotted name (packages by their ``__init__.py``)."""
    files = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if any(part.startswith(".") or part == "__pycache__" for part in parts):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join((PACKAGE, *parts))] = path
    return files


def _imported(module: str, path: Path, known: Mapping[str, Path]) -> set[str]:
    """The package modules ``module`` (source at ``path``) imports."""
    is_package = path.name == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            # ``from X import name``: the submodule X.name when there is one, else X itself
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                found.add(submodule if submodule in known else origin)
    return {name for name in found if name in known and name != module}


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (never run)."""
    waiting = [tree]
    while waiting:
        node = waiting.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            waiting.extend(node.orelse)
        else:
            waiting.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
    return name == "TYPE_CHECKING"


@functools.cache
def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, frozenset[str]]:
    """Every package module and the package modules it imports explicitly."""
    known = module_files(package_dir)
    return {module: frozenset(_imported(module, path, known)) for module, path in known.items()}


def dependencies(
    roots: Iterable[str], graph: Mapping[str, Iterable[str]] | None = None
) -> list[str]:
    """``roots`` and every package module they import, directly or not, with the packages
    whose ``__init__`` runs on the way (sorted)."""
    graph = import_graph() if graph is None else graph
    seen: set[str] = set()
    waiting = list(roots)
    while waiting:
        module = waiting.pop()
        if module in seen:
            continue
        if module not in graph:
            raise KeyError(f"{module} is not a module of {PACKAGE}")
        seen.add(module)
        parents = [".".join(module.split(".")[:end]) for end in range(1, module.count(".") + 1)]
        waiting.extend([*graph[module], *(parent for parent in parents if parent in graph)])
    return sorted(seen)


def cycles(graph: Mapping[str, Iterable[str]] | None = None) -> list[list[str]]:
    """Import circles: each as the modules along it, first repeated at the end (none: [])."""
    graph = import_graph() if graph is None else graph
    found, state, stack = [], {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                found.append([*stack[stack.index(imported) :], imported])
            elif imported not in state:
                visit(imported)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found
