"""Retrying failed runs: ``Retry`` (fixed delay) and ``ExponentialRetry`` (doubling)."""

from __future__ import annotations

import copy
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NoReturn, Self

from ._base import FailureHandler, TaskOutcome, current_execution, format_duration

if TYPE_CHECKING:
    from ..execution import Execution

logger = logging.getLogger("docket.dependencies")


class ForcedRetry(Exception):
    """Raised by ``Retry.after`` / ``Retry.at`` to ask for a retry from inside a task."""


class Retry(FailureHandler["Retry"]):
    """Run a failed task again, up to ``attempts`` runs in all, ``delay`` apart.

    ``attempts=None`` retries until it succeeds (``Retry.forever(delay)``). The value
    injected for a run knows its ``attempt`` (1 for the first run) and can force a
    retry with ``after(delay)`` or ``at(when)``::

        async def sync_account(retry: Retry = Retry(attempts=5, delay=timedelta(seconds=10))):
            if not ready():
                retry.after(timedelta(minutes=1))
    """

    attempts: int | None
    delay: timedelta
    attempt: int

    def __init__(self, attempts: int | None = 1, delay: timedelta = timedelta(0)) -> None:
        if attempts is not None and attempts < 1:
            raise ValueError(f"Retry attempts must be at least 1 (or None), got {attempts}")
        self.attempts = attempts
        self.delay = delay
        self.attempt = 1

    @classmethod
    def forever(cls, delay: timedelta = timedelta(0)) -> Retry:
        """Retry until the task succeeds, ``delay`` apart."""
        return cls(attempts=None, delay=delay)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(attempts={self.attempts!r}, delay={self.delay!r})"

    def _for_attempt(self, attempt: int) -> Self:
        run = copy.copy(self)
        run.attempt = attempt
        return run

    async def __aenter__(self) -> Self:
        return self._for_attempt(current_execution.get().attempt)

    def after(self, delay: timedelta) -> NoReturn:
        """End this run now and retry it after ``delay`` (if attempts remain)."""
        self.delay = delay
        raise ForcedRetry(f"retry requested in {delay}")

    def at(self, when: datetime) -> NoReturn:
        """End this run now and retry it at ``when`` (if attempts remain)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        self.after(max(when - datetime.now(UTC), timedelta(0)))

    def in_(self, delay: timedelta) -> NoReturn:
        """The released docket's older name for ``after``."""
        self.after(delay)

    async def handle_failure(self, execution: Execution, outcome: TaskOutcome) -> bool:
        if self.attempts is not None and execution.attempt >= self.attempts:
            return False

        from ..execution import Disposition

        when = datetime.now(UTC) + self.delay
        disposition = await execution.docket.engine.reschedule(
            execution, when, attempt=execution.attempt + 1
        )
        took = format_duration(outcome.duration.total_seconds())
        if disposition is Disposition.SCHEDULED:
            logger.info(
                "↫ [%s] %s failed (%s); retry %d%s in %s",
                took,
                execution.call_repr(),
                _describe(outcome.exception),
                execution.attempt + 1,
                f"/{self.attempts}" if self.attempts is not None else "",
                self.delay,
            )
        else:
            # Someone replaced (or struck) the key while this attempt ran; their
            # schedule stands and this run's failure is not retried.
            logger.info(
                "↬ [%s] %s failed; not retried (%s)",
                took,
                execution.call_repr(),
                disposition.value,
            )
        return True


class ExponentialRetry(Retry):
    """Like ``Retry``, but the delay doubles after each failed attempt.

    The first retry waits ``minimum_delay``, the next twice that, and so on, never
    longer than ``maximum_delay``.
    """

    def __init__(
        self,
        attempts: int | None = 1,
        minimum_delay: timedelta = timedelta(seconds=1),
        maximum_delay: timedelta = timedelta(seconds=64),
    ) -> None:
        super().__init__(attempts=attempts, delay=minimum_delay)
        self.minimum_delay = minimum_delay
        self.maximum_delay = maximum_delay

    @classmethod
    def forever(
        cls,
        delay: timedelta = timedelta(seconds=1),
        maximum_delay: timedelta = timedelta(seconds=64),
    ) -> ExponentialRetry:
        """Retry until the task succeeds, doubling from ``delay`` up to ``maximum_delay``."""
        return ExponentialRetry(attempts=None, minimum_delay=delay, maximum_delay=maximum_delay)

    def __repr__(self) -> str:
        return (
            f"ExponentialRetry(attempts={self.attempts!r}, minimum_delay={self.minimum_delay!r}, "
            f"maximum_delay={self.maximum_delay!r})"
        )

    def _for_attempt(self, attempt: int) -> Self:
        run = super()._for_attempt(attempt)
        run.delay = backoff_delay(self.minimum_delay, self.maximum_delay, attempt)
        return run


def backoff_delay(minimum: timedelta, maximum: timedelta, attempt: int) -> timedelta:
    """The wait after failed attempt number ``attempt``: ``minimum * 2**(attempt-1)``, capped."""
    if minimum <= timedelta(0):
        return timedelta(0)
    exponent = max(attempt - 1, 0)
    # Compare before multiplying: 2**exponent grows past what timedelta can hold.
    if exponent >= (maximum // minimum).bit_length():
        return maximum
    return min(minimum * (1 << exponent), maximum)


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no error"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
