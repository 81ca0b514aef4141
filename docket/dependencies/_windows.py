"""What ``RateLimit``, ``Cooldown`` and ``Debounce`` share.

Each keeps its state in one Redis key under the docket's ``{name}`` prefix::

    {name}:<kind>:task:<function name>                per task
    {name}:<kind>:arg:<parameter>:<value>             per argument value (Annotated)
    {name}:<kind>:scope:<scope>:task:...              with scope="..."
    {name}:<kind>:scope:<scope>:arg:...

so a scope only ever names a corner of its own docket. A per-argument key names the
parameter, not the task, so tasks that guard a parameter of the same name share it (as
in the released docket); a scope keeps them apart.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._redis.keys import validate_name
from ._base import AdmissionBlocked
from ._frames import current_scope

if TYPE_CHECKING:
    from ..docket import Docket
    from ..execution import Execution

logger = logging.getLogger("docket.dependencies")


def validate_scope(scope: str | None) -> str | None:
    """``scope`` if it is a legal key segment (1-128 of ``A-Za-z0-9_.-``)."""
    if scope is None:
        return None
    return validate_name(scope, "scope")


def milliseconds(span: timedelta, what: str) -> int:
    """``span`` in whole milliseconds, refusing anything shorter than one."""
    if not isinstance(span, timedelta):
        raise TypeError(f"{what} must be a timedelta, got {type(span).__name__}")
    value = span // timedelta(milliseconds=1)
    if value < 1:
        raise ValueError(f"{what} must be at least 1 millisecond, got {span}")
    return value


def window_key(
    docket: Docket,
    kind: str,
    scope: str | None,
    execution: Execution,
    parameter: str | None,
    value: Any,
) -> str:
    """The Redis key of one task's (or one argument value's) window."""
    parts = [docket.keys.prefix, kind]
    if scope is not None:
        parts += ["scope", scope]
    if parameter is None:
        parts += ["task", execution.function_name]
    else:
        parts += ["arg", parameter, str(value)]
    return ":".join(parts)


def describe(kind: str, scope: str | None, execution: Execution, parameter: str | None) -> str:
    """What a refusal names: the task or the parameter, never the argument's value
    (which ``Logged`` may be keeping out of the logs)."""
    target = f"task {execution.function_name!r}" if parameter is None else f"argument {parameter!r}"
    where = f" in scope {scope!r}" if scope is not None else ""
    return f"{kind} on {target}{where}"


def undo_if_refused(undo: Callable[[], Awaitable[Any]]) -> None:
    """Run ``undo`` if this run is refused admission after this point.

    A dependency that let the run in (took a rate-limit slot, opened a cooldown) gives
    it back when one entered after it raises ``AdmissionBlocked``: the run did not
    happen, so it must not count. Registered on the run's exit stack, so this works the
    same for a declaration shared by every run (a parameter default) as for a copy
    bound to one argument.
    """

    async def on_exit(
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if exc_type is not None and issubclass(exc_type, AdmissionBlocked):
            try:
                await undo()
            except Exception:
                # The refusal must still reach the worker; at worst the slot stays
                # taken until its window passes.
                logger.warning("Could not give back an admission", exc_info=True)
        return False

    current_scope().stack.push_async_exit(on_exit)
