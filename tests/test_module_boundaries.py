"""Module boundaries, read from the source: no module imports an underscored name from
another, the adapters build on docket's public modules (``docket.integration`` is theirs),
and no module outside ``docket/`` reaches into a docket's machinery by a private name."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("docket", "docket_dashboard", "docket_django", "docket_starlette")
ADAPTERS = ("docket_dashboard", "docket_django", "docket_starlette")


def _modules(*packages: str) -> Iterator[tuple[str, ast.Module]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text(), str(path))


def _imports(tree: ast.Module) -> Iterator[tuple[str, str]]:
    """(module, name) of every ``from module import name``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            for alias in node.names:
                yield module, alias.name


# The released docket.dependencies exports these two underscored names; code written for
# it imports them from there, so the package re-exports them from where they live.
RELEASED_UNDERSCORED = {
    ("docket/dependencies/__init__.py", "_Depends"),
    ("docket/dependencies/__init__.py", "_parameter_cache"),
}


def _ours(module: str) -> bool:
    return module.startswith(".") or module.split(".")[0] in PACKAGES


def test_no_module_imports_an_underscored_name_from_another() -> None:
    found = [
        f"{path}: from {module} import {name}"
        for path, tree in _modules(*PACKAGES)
        for module, name in _imports(tree)
        if _ours(module)
        and name.startswith("_")
        and not name.startswith("__")
        # ``from . import _snapshot``: a package's own internal module, by its name.
        and module.strip(".") != ""
        and (path, name) not in RELEASED_UNDERSCORED
    ]
    assert found == []


def test_the_adapters_import_only_docket_public_modules() -> None:
    found = [
        f"{path}: from {module} import {name}"
        for path, tree in _modules(*ADAPTERS)
        for module, name in _imports(tree)
        if module.split(".")[0] == "docket" and any(p.startswith("_") for p in module.split("."))
    ]
    assert found == []


def test_the_adapters_use_no_private_member_of_a_docket_object() -> None:
    # Attribute reads like ``docket._connection``: the adapters get what they need from
    # docket.integration or the public API instead.
    found = [
        f"{path}:{node.lineno}: {ast.unparse(node)}"
        for path, tree in _modules(*ADAPTERS)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and isinstance(node.value, ast.Name)
        and node.value.id in {"docket", "worker", "execution"}
    ]
    assert found == []
