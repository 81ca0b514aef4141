"""The state one resolution works in: its exit stack, its cache and the task's frame.

A ``ResolutionScope`` is current (in a context variable) while dependencies are being
entered, so a nested ``Depends`` or a ``TaskArgument`` deep inside a dependency
function finds the run it belongs to without anything being threaded through.
"""

from __future__ import annotations

from collections.abc import Hashable
from contextlib import AsyncExitStack
from contextvars import ContextVar, Token
from typing import Any

from ._base import Dependency
from ._plans import Plan

_MISSING: Any = object()


class CycleError(ValueError):
    """Dependencies (or argument references) that lead back to themselves."""


class Frame:
    """The task's parameters for one run: what the caller passed and what resolved.

    Each parameter resolves at most once per run, so two references to the same
    parameter (``CallArgument("x")`` in two dependency functions) see one value.
    """

    __slots__ = ("args", "failures", "kwargs", "plan", "resolved", "resolving")

    def __init__(self, plan: Plan, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.plan = plan
        self.args = args
        self.kwargs = kwargs
        self.resolved: dict[str, Any] = {}
        self.failures: dict[str, Exception] = {}
        self.resolving: list[str] = []

    def supplied(self, name: str) -> Any:
        """The caller's argument for ``name``, or ``_MISSING``."""
        if name in self.kwargs:
            return self.kwargs[name]
        position = self.plan.positions.get(name)
        if position is not None and position < len(self.args):
            return self.args[position]
        return _MISSING

    def is_supplied(self, name: str) -> bool:
        if name in self.kwargs:
            return True
        position = self.plan.positions.get(name)
        return position is not None and position < len(self.args)

    def current_value(self, name: str) -> Any:
        """What the task will receive for ``name`` as far as is known now (or None)."""
        value = self.supplied(name)
        if value is not _MISSING:
            return value
        if name in self.resolved:
            return self.resolved[name]
        return self.plan.defaults.get(name)

    async def resolve(self, name: str, *, supplied_only: bool = False) -> Any:
        """The value the task receives for ``name``, resolving its dependency if needed.

        Raises ``LookupError`` when there is no such value (``supplied_only`` limits the
        search to the caller's arguments) and ``CycleError`` on a circular reference.
        """
        if name in self.resolving:
            chain = " -> ".join([*self.resolving, name])
            raise CycleError(f"Circular argument reference in task {self.plan.name!r}: {chain}")

        value = self.supplied(name)
        if value is not _MISSING:
            return value
        if supplied_only:
            raise LookupError(f"Task {self.plan.name!r} was not called with an argument {name!r}")

        if name in self.failures:
            raise self.failures[name]
        if name in self.resolved:
            return self.resolved[name]

        dependency = self.plan.by_name.get(name)
        if dependency is None:
            if name in self.plan.defaults:
                return self.plan.defaults[name]
            if name in self.plan.parameters:
                raise LookupError(f"Task {self.plan.name!r} received no value for {name!r}")
            raise LookupError(f"Task {self.plan.name!r} has no parameter named {name!r}")

        self.resolving.append(name)
        try:
            value = await current_scope().enter(dependency)
        except Exception as error:
            self.failures[name] = error
            raise
        finally:
            self.resolving.pop()
        self.resolved[name] = value
        return value


class ResolutionScope:
    """Where dependencies entered now are cleaned up and cached.

    One per run (closed after the task); one per ``Shared`` value being built (kept
    until the worker exits), which has no frame because it belongs to no single run.
    """

    __slots__ = ("building", "cache", "frame", "stack")

    def __init__(self, stack: AsyncExitStack, frame: Frame | None) -> None:
        self.stack = stack
        self.frame = frame
        self.cache: dict[Hashable, Any] = {}
        self.building: list[tuple[Hashable, str]] = []
        """(cache key, label) of each ``Depends`` being built, innermost last."""

    async def enter[V](self, dependency: Dependency[V]) -> V:
        return await self.stack.enter_async_context(dependency)


_current_scope: ContextVar[ResolutionScope] = ContextVar("docket_resolution_scope")


def current_scope() -> ResolutionScope:
    try:
        return _current_scope.get()
    except LookupError:
        raise RuntimeError(
            "Dependencies resolve only while a worker runs a task; this one was entered "
            "outside of a run"
        ) from None


def current_frame(what: str) -> Frame:
    frame = current_scope().frame
    if frame is None:
        raise RuntimeError(
            f"{what} reads the arguments of the task being run, and there is none here: "
            "a Shared dependency's value outlives the run that built it, so it cannot "
            "depend on one run's arguments"
        )
    return frame


def set_scope(scope: ResolutionScope) -> Token[ResolutionScope]:
    return _current_scope.set(scope)


def reset_scope(token: Token[ResolutionScope]) -> None:
    _current_scope.reset(token)
