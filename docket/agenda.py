"""Agenda: collect task calls, then spread them evenly over a window of time.

Adding a thousand tasks "now" makes a thousand tasks due at once. An agenda gathers the
calls first and ``scatter`` gives each its own moment in a window, so the work arrives
at a steady pace::

    agenda = Agenda()
    for customer in customers:
        agenda.add(send_newsletter, key=f"newsletter-{customer.id}")(customer.id)
    await agenda.scatter(docket, over=timedelta(hours=1))
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, ParamSpec, overload

from .docket import Docket, TaskHandle
from .execution import Disposition, Execution, TaskFunction

P = ParamSpec("P")

__all__ = ["Agenda", "AgendaItem"]


class AgendaItem(NamedTuple):
    """One call on an agenda; unpacks as ``(function, args, kwargs, key)``."""

    function: TaskFunction | str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    key: str | None


class Agenda:
    """Task calls to be scheduled together on a docket.

    ``add(fn, key=None)(*args, **kwargs)`` records a call (nothing touches Redis);
    ``scatter(docket, over=...)`` schedules them all, evenly spaced over ``over``.

    An entry without a key gets a fresh one at each scatter, so scattering twice
    schedules it twice. Give entries stable keys to make a repeated scatter
    idempotent: a key that is still scheduled, queued or running keeps its first
    schedule and the new execution comes back ``ALREADY_SCHEDULED``.
    """

    def __init__(self) -> None:
        self._items: list[AgendaItem] = []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[AgendaItem]:
        return iter(list(self._items))

    def __repr__(self) -> str:
        return f"<Agenda of {len(self._items)} task call(s)>"

    @overload
    def add(self, function: Callable[P, Any], key: str | None = None) -> Callable[P, None]: ...

    @overload
    def add(self, function: str, key: str | None = None) -> Callable[..., None]: ...

    def add(self, function: Any, key: str | None = None) -> Callable[..., None]:
        """Record a call of ``function`` (a task function, task handle or registered
        name); call the result with the task's arguments."""

        def record(*args: Any, **kwargs: Any) -> None:
            self._items.append(AgendaItem(function, args, dict(kwargs), key))

        return record

    def clear(self) -> None:
        """Forget every recorded call."""
        self._items.clear()

    async def scatter(
        self,
        docket: Docket,
        over: timedelta,
        start: datetime | None = None,
        jitter: timedelta | None = None,
    ) -> list[Execution]:
        """Schedule every recorded call on ``docket``, spread evenly over ``over``.

        With n > 1 calls the first is due at ``start`` (default: now), the last at
        ``start + over`` and the rest at equal intervals between; a single call is due in
        the middle of the window. ``jitter`` moves each time by a random offset in
        ``[-jitter, +jitter]``, but never before ``start``.

        Every task is checked first (names must be registered on the docket, functions
        must have valid dependency declarations); if any fails, nothing is scheduled and
        ``KeyError`` or ``ValueError`` is raised. The calls are then written in pipelined
        batches (as ``add_many``), each one atomic with its own disposition; if Redis
        refuses one, its error is raised after every call has been sent.

        Returns one ``Execution`` per call, in the agenda's order.
        """
        if over <= timedelta(0):
            raise ValueError(f"'over' parameter must be a positive duration, got {over}")
        if jitter is not None and jitter < timedelta(0):
            raise ValueError(f"'jitter' must not be negative, got {jitter}")
        items = list(self._items)
        if not items:
            return []

        self._check(docket, items)

        if start is None:
            start = datetime.now(UTC)
        elif start.tzinfo is None:
            start = start.replace(tzinfo=UTC)

        calls = [
            docket.call(item.function, when=when, key=item.key)(*item.args, **item.kwargs)
            for item, when in zip(items, self._times(len(items), start, over, jitter), strict=True)
        ]
        executions = await docket.add_many(calls)
        for execution in executions:
            if execution.disposition == Disposition.FAILED and execution.schedule_exception:
                raise execution.schedule_exception
        return executions

    @staticmethod
    def _times(
        count: int, start: datetime, over: timedelta, jitter: timedelta | None
    ) -> list[datetime]:
        if count == 1:
            times = [start + over / 2]
        else:
            step = over / (count - 1)
            times = [start + step * index for index in range(count)]
        if jitter:
            spread = jitter.total_seconds()
            times = [
                max(when + timedelta(seconds=random.uniform(-spread, spread)), start)
                for when in times
            ]
        return times

    @staticmethod
    def _check(docket: Docket, items: list[AgendaItem]) -> None:
        """Refuse the whole agenda if any entry could not be scheduled on ``docket``."""
        from .dependencies import validate_task

        for item in items:
            function = item.function
            if isinstance(function, str):
                if function not in docket.tasks:
                    raise KeyError(
                        f"Task {function!r} is not registered on docket {docket.name!r}; "
                        "nothing from this agenda was scheduled"
                    )
                continue
            if isinstance(function, TaskHandle):
                function = function.fn
            if not callable(function):
                raise TypeError(f"Agenda entries must be task functions or names, not {function!r}")
            validate_task(function)
