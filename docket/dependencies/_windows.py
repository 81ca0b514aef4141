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
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._base import AdmissionBlocked
from ._resolution import run_stack

if TYPE_CHECKING:
    from ..docket import Docket
    from ..execution import Execution

logger = logging.getLogger("docket.dependencies")


# A scope names a corner of its own docket: letters, digits and ``_.-:``, optionally
# written under the docket's own prefix (``f"{docket.prefix}:billing"``), as code written
# for the released docket does. Braces, globs and spaces would reach other keys.
_SCOPE = re.compile(r"(?:\{[A-Za-z0-9_.\-]{1,128}\}:)?[A-Za-z0-9_.:\-]{1,256}")


def validate_scope(scope: str | None) -> str | None:
    """``scope`` if it is a legal scope (see ``_SCOPE``); None stays None."""
    if scope is None:
        return None
    if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
        raise ValueError(
            f"Invalid scope {scope!r}: use letters, digits, '_', '-', '.' and ':' (it may "
            "start with the docket's own prefix, as in f'{docket.prefix}:billing'); "
            "braces, glob characters and spaces would reach other keys"
        )
    return scope


def scope_within(docket: Docket, scope: str) -> str:
    """``scope`` relative to ``docket``'s prefix, which it may start with."""
    if not scope.startswith("{"):
        return scope
    own = f"{docket.keys.prefix}:"
    if not scope.startswith(own):
        raise ValueError(
            f"Scope {scope!r} starts with another docket's prefix; a scope stays inside "
            f"its own docket (start it with {own!r} or leave the prefix out)"
        )
    return scope[len(own) :]


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
        parts += ["scope", scope_within(docket, scope)]
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

    run_stack().push_async_exit(on_exit)
