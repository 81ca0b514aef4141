"""The worker side of a run: restore the enqueuing request's context, build its request."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import Token
from types import TracebackType
from typing import Any

from opentelemetry import baggage, propagate
from starlette.requests import Request

from docket import Docket, Worker, WorkerOptions
from docket.dependencies import (
    Dependency,
    current_docket,
    current_execution,
    validate_worker_dependencies,
)

from ._context import (
    SNAPSHOT_KWARG,
    SNAPSHOT_METADATA,
    RequestSnapshot,
    binding_for,
    build_scope,
    current_request_id,
    current_snapshot,
    install_log_filter,
)

BAGGAGE_KEY = "docket.request_id"
"""The W3C baggage entry the middleware puts the request id in (for every task)."""


def run_snapshot() -> RequestSnapshot | None:
    """The snapshot of the request the running task was enqueued from, if any."""
    execution = current_execution.get(None)
    if execution is None:
        return None
    value = execution.metadata.get(SNAPSHOT_METADATA)
    if value is None:  # a run queued by an earlier release
        value = execution.kwargs.get(SNAPSHOT_KWARG)
    return value if isinstance(value, dict) else None


def _request_id_from(snapshot: RequestSnapshot | None, carrier: dict[str, str]) -> str | None:
    if snapshot is not None and snapshot.get("request_id"):
        return str(snapshot["request_id"])
    if "baggage" in carrier:
        value = baggage.get_baggage(BAGGAGE_KEY, propagate.extract(dict(carrier)))
        if value:
            return str(value)
    return None


class RequestContext(Dependency[None]):
    """A worker dependency: around every run, the request id (and snapshot) of the
    request the task was enqueued from are restored as context variables, bound as
    structlog context variables and added to docket's log records as ``request_id``.

    ``docket_lifespan``'s embedded worker, ``run_with_app`` and ``run_tasks`` add it;
    add it yourself with ``Worker(docket, dependencies=[RequestContext()])``.
    """

    def __init__(self) -> None:
        self._tokens: tuple[Token[str | None], Token[RequestSnapshot | None]] | None = None
        self._bound: Mapping[str, Any] = {}

    def for_parameter(self, name: str) -> RequestContext:
        # A fresh instance per run: the tokens below belong to one run.
        return RequestContext()

    async def __aenter__(self) -> None:
        execution = current_execution.get(None)
        snapshot = run_snapshot()
        carrier = execution.trace_context if execution is not None else {}
        request_id = _request_id_from(snapshot, carrier)
        self._tokens = (current_request_id.set(request_id), current_snapshot.set(snapshot))
        if execution is not None:
            install_log_filter(f"docket.task.{execution.function_name}")
        if request_id is not None:
            try:
                import structlog

                self._bound = structlog.contextvars.bind_contextvars(request_id=request_id)
            except Exception:  # pragma: no cover - structlog is a docket dependency
                self._bound = {}

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bound:
            import structlog

            structlog.contextvars.reset_contextvars(**self._bound)
        if self._tokens is not None:
            request_token, snapshot_token = self._tokens
            self._tokens = None
            current_snapshot.reset(snapshot_token)
            current_request_id.reset(request_token)


def request_worker(docket: Docket, options: WorkerOptions) -> Worker:
    """Every worker this package starts (embedded, ``run_with_app``, ``run_tasks``):
    ``RequestContext`` around the app's own worker dependencies."""
    dependencies = validate_worker_dependencies(
        {"docket_starlette_request_context": RequestContext()}, options.dependencies
    )
    return Worker(docket, **{**options.as_kwargs(), "dependencies": dependencies})


def synthetic_request(**extra_scope: Any) -> Request:
    """The request the running task sees: the app, a copy of its lifespan state and the
    captured parts of the enqueuing request (empty when it was not enqueued from one)."""
    docket = current_docket.get(None)
    binding = binding_for(docket)
    return Request(build_scope(binding, run_snapshot(), **extra_scope))


class TaskRequest(Dependency[Request]):
    """``request: Request = TaskRequest()``: the synthetic request, for plain Starlette
    tasks (FastAPI tasks decorated with ``@docket_starlette.task`` get it by
    annotating a parameter ``Request``)."""

    async def __aenter__(self) -> Request:
        return synthetic_request()
