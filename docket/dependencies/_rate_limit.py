"""``RateLimit``: at most ``limit`` runs in any sliding window of ``per``."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from .._redis import scripts
from ._base import AdmissionBlocked
from ._windows import WindowedDependency, admit

# How long the window's key outlives its newest entry. The entry itself is stale after
# one window; the margin only covers rounding.
EXPIRY_MARGIN_MS = 250


class RateLimit(WindowedDependency["RateLimit"]):
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

    _key_kind = "rate-limit"
    _label = "rate limit"

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
        super().__init__(per, "RateLimit's per", scope)

    def __repr__(self) -> str:
        drop = ", drop=True" if self.drop else ""
        return f"RateLimit({self.limit}, per={self.per!r}{drop}{self._scope_repr()})"

    async def __aenter__(self) -> RateLimit:
        docket, execution, key = self._this_run()
        call = scripts.RateLimit(
            window=key,
            op="take",
            # One member per scheduled run: a redelivered copy is not charged twice.
            member=f"{execution.generation}:{execution.key}",
            limit=self.limit,
            window_ms=self._window_ms,
            expiry_margin_ms=EXPIRY_MARGIN_MS,
        )
        wait_ms = await admit(docket, call, undo=replace(call, op="give_back"))
        if wait_ms is None:
            return self

        reason = f"{self._refusal(execution)} ({self.limit} per {self.per})"
        if self.drop:
            raise AdmissionBlocked(execution, reason, reschedule=False)
        raise AdmissionBlocked(execution, reason, retry_delay=timedelta(milliseconds=wait_ms))
