"""docket_django's modules form layers: each imports the ones below it at its top, and
no import chain comes back to where it started (read from the source, nothing run)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).parent.parent.parent / "docket_django"

# The imports that may wait for a call, and why: the package's own names are loaded on
# first use (Django imports the package before settings exist), and the app's ready()
# is where Django lets an app import code that needs the loaded app registry.
DEFERRED = {
    ("docket_django", "docket_django.decorator"),
    ("docket_django", "docket_django.dockets"),
    ("docket_django", "docket_django.producer"),
    ("docket_django", "docket_django.transactions"),
    ("docket_django.apps", "docket_django.checks"),
    ("docket_django.apps", "docket_django.discovery"),
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _targets(
    module: str, path: Path, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]
) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        yield submodule if submodule in modules else base


def _edges() -> dict[tuple[str, str], bool]:
    """(importer, imported) -> whether every such import is at the module's top."""
    modules = _modules()
    edges: dict[tuple[str, str], bool] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _targets(module, path, node, modules):
                if target in modules and target != module:
                    key = (module, target)
                    edges[key] = edges.get(key, True) and id(node) in top
    return edges


def test_imports_are_at_the_top() -> None:
    deferred = {edge for edge, at_top in _edges().items() if not at_top}
    assert deferred <= DEFERRED, sorted(deferred - DEFERRED)


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for importer, imported in _edges():
        graph.setdefault(importer, set()).add(imported)

    def chain_back(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            module, path = stack.pop()
            for imported in graph.get(module, ()):
                if imported == start:
                    return [*path, start]
                if imported not in seen:
                    seen.add(imported)
                    stack.append((imported, [*path, imported]))
        return None

    cycles = [cycle for module in graph if (cycle := chain_back(module))]
    assert not cycles, cycles[0]
