"""``RateLimit``: at most ``limit`` runs in any sliding window of ``per``."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from .._redis import scripts
from ._base import AdmissionBlocked, Dependency, current_docket, current_execution
from ._windows import describe, milliseconds, undo_if_refused, validate_scope, window_key

# How long the window's key outlives its newest entry. The entry itself is stale after
# one window; the margin only covers rounding.
EXPIRY_MARGIN_MS = 250


class RateLimit(Dependency["RateLimit"]):
    """At most ``limit`` runs start in any window of ``per``, per task or per argument.

    A run over the limit is moved to when the oldest run in the window leaves it (and
    checked again then), or, with ``drop=True``, dropped: logged at INFO and recorded
    as cancelled. A run counts once it is admitted, whether it then succeeds or fails.

    As a parameter default it limits the task; as ``Annotated`` metadata on a parameter
    it limits each value of that argument separately::

        async def sync_data(
            rate: RateLimit = RateLimit(10, per=timedelta(minutes=1)),
        ) -> None: ...

        async def notify(
            customer_id: Annotated[int, RateLimit(5, per=timedelta(minutes=1), drop=True)],
        ) -> None: ...

    The window is checked atomically on the Redis server's clock, so any number of
    workers share it. ``scope`` names a separate set of windows inside the docket.
    """

    def __init__(
        self,
        limit: int,
        *,
        per: timedelta,
        drop: bool = False,
        scope: str | None = None,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"RateLimit's limit must be a positive integer, got {limit!r}")
        self.limit = limit
        self.per = per
        self.drop = drop
        self.scope = validate_scope(scope)
        self._window_ms = milliseconds(per, "RateLimit's per")
        self._parameter: str | None = None
        self._value: Any = None

    def __repr__(self) -> str:
        extra = ", drop=True" if self.drop else ""
        extra += f", scope={self.scope!r}" if self.scope is not None else ""
        return f"RateLimit({self.limit}, per={self.per!r}{extra})"

    def bind_to_parameter(self, name: str, value: Any) -> RateLimit:
        bound = RateLimit(self.limit, per=self.per, drop=self.drop, scope=self.scope)
        bound._parameter = name
        bound._value = value
        return bound

    async def __aenter__(self) -> RateLimit:
        execution = current_execution.get()
        docket = current_docket.get()
        call = scripts.RateLimit(
            window=window_key(
                docket, "rate-limit", self.scope, execution, self._parameter, self._value
            ),
            op="take",
            # One member per scheduled run: a redelivered copy is not charged twice.
            member=f"{execution.generation}:{execution.key}",
            limit=self.limit,
            window_ms=self._window_ms,
            expiry_margin_ms=EXPIRY_MARGIN_MS,
        )
        admitted, wait_ms = await docket.engine.scripts.send(call)
        if int(admitted):

            async def give_back() -> None:
                await docket.engine.scripts.send(replace(call, op="give_back"))

            undo_if_refused(give_back)
            return self

        what = describe("rate limit", self.scope, execution, self._parameter)
        reason = f"{what} ({self.limit} per {self.per})"
        if self.drop:
            raise AdmissionBlocked(execution, reason, reschedule=False)
        raise AdmissionBlocked(execution, reason, retry_delay=timedelta(milliseconds=int(wait_ms)))
