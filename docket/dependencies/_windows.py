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

import copy
import logging
import re
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

from .._redis.keys import checked_name
from ._base import AdmissionBlocked, Dependency, current_docket, current_execution
from ._resolution import run_stack

if TYPE_CHECKING:
    from .._redis.scripts import Call
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
    return checked_name(
        _SCOPE,
        scope,
        "scope",
        "use letters, digits, '_', '-', '.' and ':' (it may start with the docket's own "
        "prefix, as in f'{docket.prefix}:billing'); braces, glob characters and spaces "
        "would reach other keys",
    )


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


class WindowedDependency[D](Dependency[D]):
    """A dependency that keeps one window in Redis per task or, bound to a parameter as
    ``Annotated`` metadata, per value of that argument, optionally inside a ``scope``.

    A subclass names its windows with ``_key_kind`` (the key's ``<kind>`` segment) and
    ``_label`` (what a refusal calls it), and hands ``__init__`` the length of its window
    (a rate limit's ``per``, a cooldown's ``window``, a debounce's ``settle``).
    """

    _key_kind: ClassVar[str]
    _label: ClassVar[str]

    def __init__(self, window: timedelta, what: str, scope: str | None) -> None:
        self.scope = validate_scope(scope)
        self._window_ms = milliseconds(window, what)
        self._parameter: str | None = None
        self._value: Any = None

    def _scope_repr(self) -> str:
        """The end of the repr that shows the scope (nothing when there is none)."""
        return f", scope={self.scope!r}" if self.scope is not None else ""

    def bind_to_parameter(self, name: str, value: Any) -> Self:
        # The declaration is shared by every run; the copy keeps this argument's window.
        bound = copy.copy(self)
        bound._parameter = name
        bound._value = value
        return bound

    def _this_run(self) -> tuple[Docket, Execution, str]:
        """The run being admitted: its docket, its execution and the Redis key of its
        window (the task's, or its argument value's)."""
        docket = current_docket.get()
        execution = current_execution.get()
        parts = [docket.keys.prefix, self._key_kind]
        if self.scope is not None:
            parts += ["scope", scope_within(docket, self.scope)]
        if self._parameter is None:
            parts += ["task", execution.function_name]
        else:
            parts += ["arg", self._parameter, str(self._value)]
        return docket, execution, ":".join(parts)

    def _refusal(self, execution: Execution) -> str:
        """What a refusal names: the task or the parameter, never the argument's value
        (which ``Logged`` may be keeping out of the logs)."""
        parameter = self._parameter
        target = (
            f"task {execution.function_name!r}" if parameter is None else f"argument {parameter!r}"
        )
        where = f" in scope {self.scope!r}" if self.scope is not None else ""
        return f"{self._label} on {target}{where}"


async def admit(docket: Docket, call: Call, undo: Call) -> int | None:
    """Send ``call``, a script answering ``(admitted, milliseconds to wait)``: None once
    the run is admitted (``undo`` then gives the admission back should a later
    dependency refuse the run), otherwise how long until it could be."""
    admitted, wait_ms = await docket.engine.scripts.send(call)
    if not int(admitted):
        return int(wait_ms)
    undo_if_refused(docket, undo)
    return None


def undo_if_refused(docket: Docket, undo: Call) -> None:
    """Send ``undo`` if this run is refused admission after this point.

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
                await docket.engine.scripts.send(undo)
            except Exception:
                # The refusal must still reach the worker; at worst the slot stays
                # taken until its window passes.
                logger.warning("Could not give back an admission", exc_info=True)
        return False

    run_stack().push_async_exit(on_exit)
