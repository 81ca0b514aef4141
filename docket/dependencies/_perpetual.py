"""Tasks that schedule themselves again: ``Perpetual``.

Declared as a parameter (``perpetual: Perpetual = Perpetual(every=timedelta(minutes=5))``)
the task can steer its next run; as a decorator (``@Perpetual(interval=...)``) it just
keeps running. After each run that is over (it succeeded, or failed with no retry
left) the same key is scheduled again ``every`` after this run started, or right away
when that moment has passed.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Self

from ._base import CompletionHandler, TaskOutcome, current_execution, format_duration
from ._declarations import PERPETUAL_ATTRIBUTE, declarations, function_name

if TYPE_CHECKING:
    from ..execution import Execution

logger = logging.getLogger("docket.dependencies")


class Perpetual(CompletionHandler["Perpetual"]):
    """Run the task again and again under the same key.

    ``every`` (or its synonym ``interval``) is the target time from one run's start to
    the next. ``automatic=True`` makes every worker keep the task scheduled under the
    key of its function name, so it must need no arguments; a strike stops it.

    The value injected for a run can change what comes next: ``perpetuate(*a, **kw)``
    sets the next run's arguments, ``after(delay)`` / ``at(when)`` its time, ``every``
    the interval from now on, and ``cancel()`` ends the chain.
    """

    every: timedelta
    automatic: bool
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    cancelled: bool

    def __init__(
        self,
        every: timedelta = timedelta(0),
        automatic: bool = False,
        interval: timedelta | None = None,
    ) -> None:
        if interval is not None:
            if every and every != interval:
                raise ValueError("Perpetual takes every= or its synonym interval=, not both")
            every = interval
        if every < timedelta(0):
            raise ValueError(f"Perpetual interval must not be negative, got {every}")
        self.every = every
        self.automatic = automatic
        self.args = ()
        self.kwargs = {}
        self.cancelled = False
        self._next_when: datetime | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(every={self.every!r}, automatic={self.automatic!r})"

    @property
    def interval(self) -> timedelta:
        return self.every

    @interval.setter
    def interval(self, value: timedelta) -> None:
        self.every = value

    def __call__[F: Callable[..., Any]](self, function: F) -> F:
        """Mark ``function`` perpetual without giving it a parameter (decorator form)."""
        targets = [function]
        # Applied above ``@docket.add``, the decorator receives the task handle; the
        # declaration belongs on the function the handle wraps.
        inner = getattr(function, "fn", None)
        if callable(inner) and inner is not function:
            targets.append(inner)
        for target in targets:
            try:
                setattr(target, PERPETUAL_ATTRIBUTE, self)
            except (AttributeError, TypeError) as error:
                raise TypeError(
                    f"@{type(self).__name__} cannot mark {function_name(target)}: {error}"
                ) from error

        from ._resolution import validate_task

        validate_task(targets[-1])
        return function

    @property
    def initial_when(self) -> datetime | None:
        """When a worker first schedules an automatic task; None means now."""
        return None

    async def __aenter__(self) -> Self:
        execution = current_execution.get()
        run = copy.copy(self)
        run.args = execution.args
        run.kwargs = dict(execution.kwargs)
        run.cancelled = False
        run._next_when = None
        return run

    def cancel(self) -> None:
        """Do not schedule another run after this one."""
        self.cancelled = True

    def perpetuate(self, *args: Any, **kwargs: Any) -> None:
        """Call the next run with these arguments instead of this run's."""
        self.args = args
        self.kwargs = kwargs

    def after(self, delay: timedelta) -> None:
        """Schedule the next run ``delay`` from now instead of ``every`` after the start."""
        self._next_when = datetime.now(UTC) + delay

    def at(self, when: datetime) -> None:
        """Schedule the next run at ``when``."""
        self._next_when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)

    def next_when(self, execution: Execution, outcome: TaskOutcome) -> datetime:
        """When the run after ``execution`` is due."""
        if self._next_when is not None:
            return self._next_when
        now = datetime.now(UTC)
        # Measured on this process's clock from when the run itself began, not from the
        # claim's server timestamp: the gap between two runs' bodies is then `every`.
        started = now - outcome.duration
        return max(now, started + self.every)

    async def on_complete(self, execution: Execution, outcome: TaskOutcome) -> bool:
        if self.cancelled:
            return False

        when = self.next_when(execution, outcome)
        disposition = await execution.docket.engine.reschedule(
            execution, when, attempt=1, args=self.args, kwargs=self.kwargs
        )

        took = format_duration(outcome.duration.total_seconds())
        call = execution.call_repr()
        if outcome.exception is not None:
            logger.error("↩ [%s] %s", took, call, exc_info=outcome.exception)

        from ..execution import Disposition

        if disposition is Disposition.SCHEDULED:
            logger.info("↫ [%s] %s next run at %s", took, call, when.isoformat())
        else:
            # A replace made while this run went wins; a strike stops the chain.
            logger.info("↬ [%s] %s not perpetuated (%s)", took, call, disposition.value)
        return True


def get_perpetual(function: Callable[..., Any]) -> Perpetual | None:
    """The ``Perpetual`` (or ``Cron``) ``function`` declares in any form, if any.

    Looks at parameter defaults, ``Annotated`` metadata and the decorator, so the
    worker can keep ``automatic=True`` tasks scheduled.
    """
    for declared in declarations(function):
        if isinstance(declared.dependency, Perpetual):
            return declared.dependency
    return None
