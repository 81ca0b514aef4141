"""Running one task: from a claimed message to its settlement, with the metrics,
spans, log lines, dependencies and handlers of the run."""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import time
import traceback
from contextlib import nullcontext, suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode

from ._call_errors import explain
from ._worker_settling import Settlement
from .dependencies import AdmissionBlocked, TaskOutcome, resolved_dependencies
from .dependencies._base import format_duration
from .execution import Disposition, Execution
from .instrumentation import (
    TASK_DURATION,
    TASK_PUNCTUALITY,
    TASKS_COMPLETED,
    TASKS_FAILED,
    TASKS_PERPETUATED,
    TASKS_REDELIVERED,
    TASKS_RETRIED,
    TASKS_STARTED,
    TASKS_STRICKEN,
    TASKS_SUCCEEDED,
    TASKS_SUPERSEDED,
    links_for,
    tracer,
    tracing_active,
)
from .logging import DEFERRABLE

if TYPE_CHECKING:
    from ._worker_cancellation import Cancellation
    from ._worker_settling import Settler
    from ._worker_state import WorkerState
    from .worker import Worker

logger = logging.getLogger("docket.worker")

ADMISSION_RETRY_DELAY = timedelta(milliseconds=100)

TRACEBACK_KEPT = 16_000
"""How many characters of a failed run's traceback are kept: the last ones, where the
frame that raised and the exception are."""
_TRUNCATED = "…(truncated)\n"


def formatted_traceback(error: BaseException) -> str:
    """``error``'s traceback as text, its last ``TRACEBACK_KEPT`` characters when longer."""
    text = "".join(traceback.format_exception(error))
    # A path or source line read with surrogateescape (a non-UTF-8 file name) could not
    # be sent to Redis as UTF-8, and the settle call would fail.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > TRACEBACK_KEPT:
        return _TRUNCATED + text[-TRACEBACK_KEPT:]
    return text


def _log_info(message: str, args: tuple[Any, ...], extra: dict[str, Any]) -> None:
    """``logger.info`` for the two lines every run logs, minus the caller lookup (a stack
    walk that costs as much as the rest of the record): the caller is always
    ``Runner._run_started`` in this file, and one frame up gives its line."""
    line = sys._getframe(1).f_lineno
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, line, message, args, None, "_run_started", extra
    )
    # Strings and numbers only: a batching handler may format it at the end of the turn.
    setattr(record, DEFERRABLE, True)
    logger.handle(record)


class Runner:
    """Sees each run through, from its first step to its settlement."""

    def __init__(
        self, worker: Worker, state: WorkerState, settler: Settler, cancellation: Cancellation
    ) -> None:
        # What every run reads, held here rather than looked up on the worker each time.
        self._worker = worker
        self.docket = worker.docket
        self.name = worker.name
        self.dependencies = worker.dependencies
        self._metrics = state.metrics
        self._active = state.active
        self._slot_freed = state.slot_freed
        self._settle = settler.settle
        self._cancellation = cancellation
        self._user_cancelled = cancellation.requested
        self._begun = cancellation.begun
        self._run_limits: dict[str, int] = {}
        self._run_counts: dict[str, int] = {}
        # Message ids of the runs that used up their key's run_at_most budget.
        self._last_runs: set[str] = set()
        # Of those, the ones whose body is over, for execute to clean up after.
        self._spent_keys: set[str] = set()

    def limit_runs(self, iterations_by_key: dict[str, int]) -> None:
        """Let each listed key run at most n times (``Worker.run_at_most``)."""
        self._run_limits = iterations_by_key
        self._run_counts = {}

    def unlimit_runs(self) -> None:
        self._run_limits = {}
        self._last_runs.clear()
        self._spent_keys.clear()

    def _blocked_reason(self, execution: Execution) -> str | None:
        if execution.key in self._user_cancelled:
            self._user_cancelled.discard(execution.key)
            return "cancelled"
        strikes = self.docket.strike_list
        if strikes and strikes.is_stricken(execution.function_name, execution.arguments_by_name()):
            return "struck"
        limit = self._run_limits.get(execution.key)
        if limit is not None and self._run_counts.get(execution.key, 0) >= limit:
            return "run limit reached"
        return None

    async def execute(self, execution: Execution) -> None:
        assert execution.message_id is not None
        self._begun.add(execution.run_id)
        try:
            settlement = await self._run_task(execution)
            if settlement is None:
                return
            self._settle(settlement)
            if self._spent_keys and execution.run_id in self._spent_keys:
                self._spent_keys.discard(execution.run_id)
                # The last run of its key that run_at_most allows scheduled no successor
                # (its completion handler was skipped), but a retry or its body may have
                # added or replaced one: withdraw that, so run_at_most ends instead of
                # waiting for it.
                # Never this run itself: its own settlement may not have landed yet.
                await self.docket.engine.cancel(execution.key, other_than=execution.generation)
        except asyncio.CancelledError:
            # Cancelled by a hard shutdown: leave the message pending so another worker
            # picks it up after the redelivery timeout.
            raise
        except Exception:
            logger.exception("Worker %s failed to finish %s", self.name, execution.call_repr())
        finally:
            assert execution.message_id is not None
            self._active.pop(execution.run_id, None)
            self._slot_freed.set()
            if self._user_cancelled and execution.key in self._user_cancelled:
                self._cancellation.drop_mark(execution.key)

    async def _run_task(self, execution: Execution) -> Settlement | None:
        metric_labels = self._metrics.task_labels(execution.function_name)
        blocked = self._blocked_reason(execution)
        if blocked is not None:
            logger.info("Skipping %s: %s", execution.call_repr(), blocked)
            if blocked == "struck":
                TASKS_STRICKEN.add(1, metric_labels)
            return Settlement(execution, "cancelled", blocked)

        running = self._metrics.running
        task_name = execution.function_name
        running[task_name] = running.get(task_name, 0) + 1
        try:
            return await self._run_started(execution, metric_labels)
        finally:
            running[task_name] -= 1

    def _count_run(self, execution: Execution) -> None:
        """Count a run against its key's run_at_most budget as it starts, not as it
        ends: the key's next run (a Perpetual's successor) may be claimed before this one
        has finished, and must already see the budget used up."""
        limit = self._run_limits.get(execution.key)
        if limit is None:
            return
        count = self._run_counts.get(execution.key, 0) + 1
        self._run_counts[execution.key] = count
        if count == limit:
            assert execution.message_id is not None
            self._last_runs.add(execution.run_id)

    @staticmethod
    def _count_start(execution: Execution, labels: dict[str, str], punctuality: float) -> None:
        TASKS_STARTED.add(1, labels)
        if execution.redelivered:
            TASKS_REDELIVERED.add(1, labels)
        TASK_PUNCTUALITY.record(punctuality, labels)

    async def _run_started(
        self, execution: Execution, metric_labels: dict[str, str]
    ) -> Settlement | None:
        function = execution.function
        assert function is not None
        # Per-task logging is the costliest thing a no-op run does: build the lines' parts
        # only when INFO is on.
        logged = logger.isEnabledFor(logging.INFO)
        call_repr = execution.call_repr() if logged else ""
        started = time.perf_counter()
        punctuality = (execution.started_at or datetime.now(UTC)) - execution.when
        # Metrics count a run as started once admitted (or once it failed on the way
        # there), and then as completed however it ends; a run an admission gate turns
        # away (parked, rescheduled or dropped) is neither, like the start log line.
        admitted = False
        log_context = {
            "docket": self.docket.name,
            "worker": self.name,
            "task": execution.function_name,
            "key": execution.key,
            "attempt": execution.attempt,
        }
        try:
            with (
                tracer.start_as_current_span(
                    execution.function_name,
                    kind=SpanKind.CONSUMER,
                    links=links_for(execution.trace_context),
                    attributes={
                        "docket.name": self.docket.name,
                        "docket.task": execution.function_name,
                        "docket.key": execution.key,
                        "docket.attempt": execution.attempt,
                        "docket.when": execution.when.isoformat(),
                        "code.function.name": execution.function_name,
                        "docket.worker": self.name,
                    },
                )
                if tracing_active()
                else nullcontext(INVALID_SPAN)
            ) as span:
                resolution = resolved_dependencies(self._worker, execution, self.dependencies)
                result: Any = None
                error: BaseException | None = None
                try:
                    # The run's exception leaves the ``async with`` so generator dependencies
                    # see it; a DependencyExceptionGroup from entering lands here too, and the
                    # resolution still holds its handlers (a Retry retries broken deps).
                    async with resolution:
                        # Logged once admitted, inside the run's context: a run an admission
                        # gate turns away has not started, and worker dependencies (a
                        # restored request id, say) already apply to this line.
                        admitted = True
                        if self._run_limits:
                            self._count_run(execution)
                        self._count_start(execution, metric_labels, punctuality.total_seconds())
                        if logged:
                            _log_info(
                                "↪ [%s] %s",
                                (format_duration(punctuality.total_seconds()), call_repr),
                                log_context,
                            )
                        kwargs = {**execution.kwargs, **resolution.arguments}
                        try:
                            if resolution.runtime is not None:
                                result = await resolution.runtime.run(
                                    execution, function, execution.args, kwargs
                                )
                            else:
                                result = function(*execution.args, **kwargs)
                                if inspect.isawaitable(result):
                                    result = await result
                        except TypeError as wrong:
                            name = execution.function_name
                            explained = explain(name, function, execution.args, kwargs, wrong)
                            if explained is wrong:
                                raise
                            raise explained from wrong
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    by_body = current is not None and current.cancelling() == 0
                    # Not a cancel of this run (docket.cancel) nor one the body raised
                    # itself: the worker is shutting down hard; leave the message
                    # pending for another worker.
                    if execution.key not in self._user_cancelled and not by_body:
                        raise
                    self._user_cancelled.discard(execution.key)
                    duration = time.perf_counter() - started
                    logger.info(
                        "✗ [%s] %s cancelled",
                        format_duration(duration),
                        execution.call_repr(),
                        extra=log_context,
                    )
                    return Settlement(execution, "cancelled", "cancelled")
                except AdmissionBlocked as refusal:
                    return await self._admission_blocked(execution, refusal, log_context)
                except Exception as exc:
                    error = exc
                    if not admitted:
                        admitted = True
                        if self._run_limits:
                            self._count_run(execution)
                        self._count_start(execution, metric_labels, punctuality.total_seconds())

                # The body is over: a cancel arriving from here on only marks the run, as
                # cancelling it now would leave its message unsettled until redelivery.
                self._begun.discard(execution.run_id)
                # The last run run_at_most allows for its key ends with its own outcome:
                # no successor (a Perpetual's next run) is scheduled for a run that may
                # not happen. A retry is this run going on, so it is scheduled, then
                # withdrawn by execute, and the key ends cancelled, as released.
                last_run = bool(self._last_runs) and execution.run_id in self._last_runs
                if last_run:
                    self._last_runs.discard(execution.run_id)
                    self._spent_keys.add(execution.run_id)
                outcome = TaskOutcome(
                    duration=timedelta(seconds=time.perf_counter() - started),
                    result=result,
                    exception=error,
                )
                duration_text = format_duration(outcome.duration.total_seconds()) if logged else ""
                if error is not None:
                    TASKS_FAILED.add(1, metric_labels)
                    span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, str(error)))
                    handler = resolution.failure_handler
                    if handler is not None and await handler.handle_failure(execution, outcome):
                        self._count_successor(execution, TASKS_RETRIED, metric_labels)
                        return Settlement(execution, "ack")
                else:
                    TASKS_SUCCEEDED.add(1, metric_labels)
                    if span.is_recording():
                        span.set_status(Status(StatusCode.OK))
                completion = resolution.completion_handler if not last_run else None
                if completion is not None and await completion.on_complete(execution, outcome):
                    self._count_successor(execution, TASKS_PERPETUATED, metric_labels)
                    return Settlement(execution, "ack")
                if error is not None:
                    logger.error(
                        "✗ [%s] %s",
                        format_duration(outcome.duration.total_seconds()),
                        execution.call_repr(),
                        exc_info=error,
                        extra=log_context,
                    )
                    return self._failed(execution, error)
                if logged:
                    _log_info("↩ [%s] %s", (duration_text, call_repr), log_context)
                return self._completed(execution, result)
        finally:
            if admitted:
                TASKS_COMPLETED.add(1, metric_labels)
                TASK_DURATION.record(time.perf_counter() - started, metric_labels)

    @staticmethod
    def _count_successor(execution: Execution, counter: Any, labels: dict[str, str]) -> None:
        """Count what a Retry or Perpetual did when it took a run's outcome over."""
        rescheduled = execution.rescheduled
        if rescheduled is Disposition.SCHEDULED:
            counter.add(1, labels)
        elif rescheduled is Disposition.SUPERSEDED:
            TASKS_SUPERSEDED.add(1, labels)
        elif rescheduled is Disposition.STRUCK:
            TASKS_STRICKEN.add(1, labels)

    async def _admission_blocked(
        self, execution: Execution, blocked: AdmissionBlocked, log_context: dict[str, Any]
    ) -> Settlement | None:
        if blocked.handled:
            # The dependency already dealt with the message (parked it, say).
            return None
        if blocked.reschedule:
            delay = blocked.retry_delay or ADMISSION_RETRY_DELAY
            logger.debug(
                "⏳ %s blocked by %s; trying again in %s",
                execution.call_repr(),
                blocked.reason,
                delay,
                extra=log_context,
            )
            await self.docket.engine.reschedule(execution, datetime.now(UTC) + delay)
            return Settlement(execution, "ack")
        logger.info("⏭ %s dropped: %s", execution.call_repr(), blocked.reason, extra=log_context)
        return Settlement(execution, "cancelled", f"dropped: {blocked.reason}")

    def _completed(self, execution: Execution, result: Any) -> Settlement:
        data = b""
        if result is not None and self.docket.execution_ttl > timedelta(0):
            try:
                data = self.docket.engine.dump_result(execution.key, result)
            except TypeError as error:
                return Settlement(execution, "failed", str(error), b"", formatted_traceback(error))
        return Settlement(execution, "completed", "", data)

    def _failed(self, execution: Execution, error: BaseException) -> Settlement:
        data = b""
        # Without records (execution_ttl 0) nothing would keep the traceback.
        text = ""
        if self.docket.execution_ttl > timedelta(0):
            with suppress(Exception):
                data = self.docket.engine.dump_result(execution.key, error)
            text = formatted_traceback(error)
        return Settlement(execution, "failed", f"{type(error).__name__}: {error}", data, text)
