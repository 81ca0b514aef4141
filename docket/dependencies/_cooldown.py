"""``Cooldown``: the first run goes, later ones inside the window are dropped."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from .._redis import scripts
from ._base import AdmissionBlocked
from ._windows import WindowedDependency, admit


class Cooldown(WindowedDependency["Cooldown"]):
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

    _key_kind = "cooldown"
    _label = "cooldown"

    def __init__(self, window: timedelta, *, scope: str | None = None) -> None:
        self.window = window
        super().__init__(window, "Cooldown's window", scope)

    def __repr__(self) -> str:
        return f"Cooldown({self.window!r}{self._scope_repr()})"

    async def __aenter__(self) -> Cooldown:
        docket, execution, key = self._this_run()
        token = f"{execution.generation}:{execution.key}"
        call = scripts.Cooldown(cooldown=key, op="start", token=token, window_ms=self._window_ms)
        left_ms = await admit(docket, call, undo=replace(call, op="undo"))
        if left_ms is None:
            return self

        what = self._refusal(execution)
        reason = f"{what} ({self.window} window, {left_ms / 1000:.3f}s left)"
        raise AdmissionBlocked(execution, reason, reschedule=False)
