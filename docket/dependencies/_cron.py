"""``Cron``: a perpetual task on wall-clock times.

The times come from ``cronsim``, which walks a cron expression in a time zone with
Debian cron's daylight-saving rules: a time skipped by a spring-forward runs at the
first real minute after it, and a time repeated by a fall-back runs once, at its first
occurrence. ``cronsim`` does not know the ``@daily``-style nicknames, so they are
spelled out here.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING

from cronsim import CronSim, CronSimError

from ._perpetual import Perpetual

if TYPE_CHECKING:
    from ..execution import Execution
    from ._base import TaskOutcome

CRON_NICKNAMES: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def cron_expression(expression: str) -> str:
    """``expression`` with a nickname spelled out as five fields."""
    stripped = expression.strip()
    return CRON_NICKNAMES.get(stripped.lower(), stripped)


def next_cron_time(expression: str, after: datetime, tz: tzinfo = UTC) -> datetime:
    """The first time strictly after ``after`` that ``expression`` matches in ``tz``.

    ``after`` may be in any zone (naive means UTC); the result is in UTC.
    """
    if after.tzinfo is None:
        after = after.replace(tzinfo=UTC)
    try:
        times = CronSim(cron_expression(expression), after.astimezone(tz))
        upcoming = next(times)
    except (CronSimError, StopIteration) as error:
        raise ValueError(f"Invalid cron expression {expression!r}: {error}") from error
    return upcoming.astimezone(UTC)


class Cron(Perpetual):
    """Run the task at the times a cron expression names, in time zone ``tz``.

    Five fields (``minute hour day-of-month month day-of-week``) or a nickname:
    ``@yearly @annually @monthly @weekly @daily @midnight @hourly``. Unlike
    ``Perpetual``'s interval, the next run is the next matching time after the current
    run ends, however long it took. ``automatic`` defaults to True: workers keep cron
    tasks scheduled under their function's name.

        async def morning_report(cron: Cron = Cron("0 9 * * 1-5", tz=ZoneInfo("Europe/Paris"))):
            ...
    """

    expression: str
    tz: tzinfo

    def __init__(self, expression: str, automatic: bool = True, tz: tzinfo = UTC) -> None:
        super().__init__(automatic=automatic)
        self.expression = cron_expression(expression)
        self.tz = tz
        # Fail at declaration (import time), not at the first run.
        next_cron_time(self.expression, datetime.now(UTC), tz)

    def __repr__(self) -> str:
        return f"Cron({self.expression!r}, automatic={self.automatic!r}, tz={self.tz!r})"

    def next_time(self, after: datetime | None = None) -> datetime:
        """The next matching time strictly after ``after`` (default: now), in UTC."""
        return next_cron_time(self.expression, after or datetime.now(UTC), self.tz)

    @property
    def initial_when(self) -> datetime:
        return self.next_time()

    def next_when(self, execution: Execution, outcome: TaskOutcome) -> datetime:
        if self._next_when is not None:
            return self._next_when
        return self.next_time()
