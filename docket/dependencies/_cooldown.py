"""``Cooldown``: the first run goes, later ones inside the window are dropped."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from .._redis import scripts
from ._base import AdmissionBlocked, Dependency, current_docket, current_execution
from ._windows import describe, milliseconds, undo_if_refused, validate_scope, window_key


class Cooldown(Dependency["Cooldown"]):
    """Leading edge: a run opens a ``window``; runs that arrive inside it are dropped
    (logged at INFO and recorded as cancelled), per task or per argument value.

    As a parameter default it covers the task; as ``Annotated`` metadata on a parameter
    each value of that argument has its own window::

        async def refresh_dashboard(
            cooldown: Cooldown = Cooldown(timedelta(seconds=30)),
        ) -> None: ...

        async def notify(customer_id: Annotated[int, Cooldown(timedelta(minutes=5))]) -> None: ...

    The window opens when a run is admitted, on the Redis server's clock. A run that
    opened it but was then refused by another dependency closes it again, and a
    redelivered copy of the run that opened it is not dropped. A retry is a new run,
    so it is dropped inside the window. ``scope`` names a separate set of windows
    inside the docket.
    """

    def __init__(self, window: timedelta, *, scope: str | None = None) -> None:
        self.window = window
        self.scope = validate_scope(scope)
        self._window_ms = milliseconds(window, "Cooldown's window")
        self._parameter: str | None = None
        self._value: Any = None

    def __repr__(self) -> str:
        extra = f", scope={self.scope!r}" if self.scope is not None else ""
        return f"Cooldown({self.window!r}{extra})"

    def bind_to_parameter(self, name: str, value: Any) -> Cooldown:
        bound = Cooldown(self.window, scope=self.scope)
        bound._parameter = name
        bound._value = value
        return bound

    async def __aenter__(self) -> Cooldown:
        execution = current_execution.get()
        docket = current_docket.get()
        key = window_key(docket, "cooldown", self.scope, execution, self._parameter, self._value)
        token = f"{execution.generation}:{execution.key}"
        call = scripts.Cooldown(cooldown=key, op="start", token=token, window_ms=self._window_ms)
        admitted, left_ms = await docket.engine.scripts.send(call)
        if int(admitted):

            async def undo() -> None:
                await docket.engine.scripts.send(replace(call, op="undo"))

            undo_if_refused(undo)
            return self

        what = describe("cooldown", self.scope, execution, self._parameter)
        reason = f"{what} ({self.window} window, {int(left_ms) / 1000:.3f}s left)"
        raise AdmissionBlocked(execution, reason, reschedule=False)
