"""The dependency base classes and the context variables a run is resolved in.

A dependency is declared as a parameter default (``retry: Retry = Retry(3)``) or as
``Annotated[T, dep]`` metadata. The declared object is shared by every run of the task,
so per-run state never lives on it: ``__aenter__`` returns the value injected for one run
(often a fresh copy of the declaration) and ``__aexit__`` cleans that run up.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from uncalled_for import Dependency as Dependency
from uncalled_for import Provider as Provider

if TYPE_CHECKING:
    from ..docket import Docket
    from ..execution import Execution
    from ..worker import Worker

T = TypeVar("T", covariant=True)

current_docket: ContextVar[Docket] = ContextVar("current_docket")
current_worker: ContextVar[Worker] = ContextVar("current_worker")
current_execution: ContextVar[Execution] = ContextVar("current_execution")


# The engine is uncalled-for's, shared with the released docket and its ecosystem: a
# FastMCP injectable (a subclass of ``uncalled_for.Dependency``) resolves in our tasks
# exactly as ours do. ``single``, ``for_parameter`` and ``bind_to_parameter`` are its
# extension points; a ``Provider`` also supplies a value from ``Annotated`` metadata.
#
# Code written against the released docket reads ``Dependency.execution.get()`` and
# friends, so the context variables are kept on the class too.
Dependency.execution = current_execution  # type: ignore[attr-defined]
Dependency.docket = current_docket  # type: ignore[attr-defined]
Dependency.worker = current_worker  # type: ignore[attr-defined]


@dataclass
class TaskOutcome:
    """How one run ended, handed to failure and completion handlers."""

    duration: timedelta
    result: Any = field(default=None)
    exception: BaseException | None = field(default=None)


class AdmissionBlocked(Exception):
    """Raised by a dependency that will not let a run start now.

    ``handled=True``: the dependency already dealt with the message (parked it, say) and
    the worker just moves on. Otherwise ``reschedule=True`` puts the run back on the
    schedule after ``retry_delay`` (a short default when None), and ``reschedule=False``
    drops it with an INFO log line.
    """

    def __init__(
        self,
        execution: Execution,
        reason: str = "admission control",
        *,
        handled: bool = False,
        reschedule: bool = True,
        retry_delay: timedelta | None = None,
    ) -> None:
        self.execution = execution
        self.reason = reason
        self.handled = handled
        self.reschedule = reschedule
        self.retry_delay = retry_delay
        super().__init__(f"Task {execution.key} blocked by {reason}")


class Runtime(Provider[T]):
    """Controls how the task function is called (one per task); ``Timeout`` is one."""

    single = True

    @abc.abstractmethod
    async def run(
        self,
        execution: Execution,
        function: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any: ...


class FailureHandler(Provider[T]):
    """Decides what happens when a run raises (one per task); ``Retry`` is one.

    ``handle_failure`` returns True when it took responsibility (scheduled a retry), so
    the worker does not record the run as failed.
    """

    single = True

    @abc.abstractmethod
    async def handle_failure(self, execution: Execution, outcome: TaskOutcome) -> bool: ...


class CompletionHandler(Provider[T]):
    """Decides what happens once a run is truly over (one per task); ``Perpetual`` is one.

    ``on_complete`` returns True when it took responsibility (scheduled the next run).
    """

    single = True

    @abc.abstractmethod
    async def on_complete(self, execution: Execution, outcome: TaskOutcome) -> bool: ...


def format_duration(seconds: float) -> str:
    """A fixed-width duration for log lines."""
    if seconds < 100:
        return f"{seconds * 1000:6.0f}ms"
    return f"{seconds:6.0f}s "
