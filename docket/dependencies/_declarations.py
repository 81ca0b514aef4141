"""What a task function declares, read through uncalled-for's caches.

uncalled-for works out once per function which parameters a dependency supplies
(a ``Dependency`` default, or a ``Provider`` in ``Annotated`` metadata) and which
``Annotated`` metadata only wraps the call (an *argument guard* such as
``ConcurrencyLimit("customer_id")``, entered with the argument's value). Those caches
are the only ones: a library that rewrites a function's signature and clears them
(FastMCP does) is seen at once. Docket adds one declaration of its own, the
``@Perpetual(...)`` decorator, which leaves a ``Perpetual`` on the function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uncalled_for import get_annotation_dependencies, get_dependency_parameters

from ._base import CompletionHandler, Dependency, FailureHandler, Runtime

PERPETUAL_ATTRIBUTE = "__docket_perpetual__"
"""Where ``@Perpetual(...)`` leaves its declaration on the function it decorates."""

HANDLER_KINDS = (Runtime, FailureHandler, CompletionHandler)


@dataclass(frozen=True, slots=True)
class Declared:
    """One dependency a function declares, and where."""

    parameter: str | None
    """The parameter it belongs to; None for the ``@Perpetual`` decorator."""

    dependency: Dependency[Any]
    guard: bool
    """Whether it wraps the call (``Annotated`` metadata) rather than supplying a value."""

    @property
    def label(self) -> str:
        if self.parameter is None:
            return f"@{type(self.dependency).__name__} decorator"
        return f"parameter {self.parameter!r}"


def function_name(function: Callable[..., Any]) -> str:
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
    return name if isinstance(name, str) else repr(function)


def decorator_of(function: Callable[..., Any]) -> Dependency[Any] | None:
    """The ``@Perpetual`` declaration ``function`` carries, if any."""
    marked = getattr(function, PERPETUAL_ATTRIBUTE, None)
    return marked if isinstance(marked, Dependency) else None


def declarations(function: Callable[..., Any]) -> list[Declared]:
    """Every dependency ``function`` declares: suppliers, guards, then the decorator."""
    found = [
        Declared(name, dependency, guard=False)
        for name, dependency in get_dependency_parameters(function).items()
    ]
    found += [
        Declared(name, dependency, guard=True)
        for name, dependencies in get_annotation_dependencies(function).items()
        for dependency in dependencies
    ]
    decorator = decorator_of(function)
    if decorator is not None:
        found.append(Declared(None, decorator, guard=True))
    return found


def declared_dependencies(function: Callable[..., Any]) -> list[Dependency[Any]]:
    """Every dependency ``function`` declares, in any form."""
    return [declared.dependency for declared in declarations(function)]
