"""Dependencies that read the task's own arguments: ``TaskArgument`` and ``CallArgument``.

Both are meant for dependency functions, which use them to see what the task they
serve was called with::

    async def customer(customer_id: int = TaskArgument()) -> Customer: ...

    async def greet(customer_id: int, who: Customer = Depends(customer)) -> None: ...

Without a name they read the task parameter named like the parameter they are
declared on. ``TaskArgument`` sees only what the caller passed; ``CallArgument`` also
sees what the task's other dependencies produce and plain signature defaults.
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable
from typing import Any, Self, cast

from ._base import Dependency
from ._frames import current_frame


class _ArgumentReference(Dependency[Any]):
    """A reference to one parameter of the task being run."""

    def __init__(
        self,
        parameter: str | None = None,
        optional: bool = False,
        default: Any = inspect.Parameter.empty,
    ) -> None:
        if optional and default is not inspect.Parameter.empty:
            raise TypeError(f"{type(self).__name__} takes optional or default, not both")
        self.parameter = parameter
        self.optional = optional
        self.default = default

    def for_parameter(self, name: str) -> Self:
        if self.parameter is not None:
            return self
        return type(self)(name, self.optional, self.default)

    def reference_key(self, name: str) -> Hashable:
        """Equal for references that always read the same value (for caching)."""
        default = self.default
        try:
            hash(default)
        except TypeError:
            default = ("id", id(default))
        return (type(self), self.parameter or name, self.optional, default)

    def _name(self) -> str:
        if self.parameter is None:
            raise RuntimeError(
                f"A bare {type(self).__name__}() must be declared as a parameter default "
                "(or given the parameter's name) so it knows which argument to read"
            )
        return self.parameter

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.parameter!r})"


class _TaskArgument(_ArgumentReference):
    async def __aenter__(self) -> Any:
        name = self._name()
        frame = current_frame("TaskArgument")
        try:
            return await frame.resolve(name, supplied_only=True)
        except LookupError:
            if self.optional:
                return None
            raise KeyError(
                f"task {frame.plan.name!r} was not called with an argument {name!r}"
            ) from None


class _CallArgument(_ArgumentReference):
    async def __aenter__(self) -> Any:
        name = self._name()
        frame = current_frame("CallArgument")
        try:
            return await frame.resolve(name)
        except LookupError:
            if self.optional:
                return None
            if self.default is not inspect.Parameter.empty:
                return self.default
            raise


def TaskArgument(parameter: str | None = None, optional: bool = False) -> Any:
    """The value the task was called with for ``parameter``.

    ``parameter`` defaults to the name of the parameter this is declared on. Only the
    caller's arguments count (positional or keyword); with ``optional=True`` a missing
    one gives None instead of failing the run.
    """
    return cast(Any, _TaskArgument(parameter, optional))


def CallArgument(
    parameter: str | None = None,
    optional: bool = False,
    *,
    default: Any = inspect.Parameter.empty,
) -> Any:
    """The value the task receives for ``parameter`` on this run.

    Like ``TaskArgument``, but a parameter the caller did not pass is still found:
    resolved from its own dependency (once per run, shared with the task) or taken from
    its plain default. ``optional=True`` gives None when there is no value at all and
    ``default=`` gives that instead. A chain of references that loops back raises
    ``CycleError``, which ``optional`` does not hide.
    """
    return cast(Any, _CallArgument(parameter, optional, default))
