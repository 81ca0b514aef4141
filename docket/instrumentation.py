"""OpenTelemetry: spans that follow a task from its producer to its run, and docket's metrics.

Every instrument is created once, here, from the global providers. Until an SDK is
configured these are OpenTelemetry's proxy objects, whose calls do nothing, so the
instrumentation costs little when nobody collects it. See docs/observability.md.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Self, overload

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

tracer = trace.get_tracer("docket")
meter = metrics.get_meter("docket")

# -- counters ----------------------------------------------------------------------------


def _counter(name: str, description: str) -> metrics.Counter:
    return meter.create_counter(name, unit="1", description=description)


TASKS_ADDED = _counter("docket_tasks_added", "Tasks added (add/add_many) and accepted")
TASKS_REPLACED = _counter("docket_tasks_replaced", "Tasks replaced (replace/replace_many)")
TASKS_SCHEDULED = _counter(
    "docket_tasks_scheduled", "Tasks an add or replace actually put on the schedule"
)
TASKS_CANCELLED = _counter(
    "docket_tasks_cancelled", "Tasks withdrawn by cancel() or clear() before they finished"
)
TASKS_STARTED = _counter("docket_tasks_started", "Runs a worker started")
TASKS_REDELIVERED = _counter(
    "docket_tasks_redelivered", "Runs started from a message taken over from another worker"
)
TASKS_STRICKEN = _counter(
    "docket_tasks_stricken", "Tasks a strike kept from being scheduled or from running"
)
TASKS_SUPERSEDED = _counter(
    "docket_tasks_superseded",
    "Stale copies a worker dropped, and retries or perpetuations a newer schedule overrode",
)
STALE_DROPPED = _counter(
    "docket_stale_messages_dropped",
    "Stream entries a worker acked away without running them, by docket.reason: no task "
    "record, superseded by a newer schedule, or a run no longer waiting to start",
)
TASKS_COMPLETED = _counter("docket_tasks_completed", "Runs that ended, whatever the outcome")
TASKS_FAILED = _counter("docket_tasks_failed", "Runs that raised (retried or not)")
TASKS_SUCCEEDED = _counter("docket_tasks_succeeded", "Runs that returned")
TASKS_RETRIED = _counter("docket_tasks_retried", "Failed runs a Retry scheduled again")
TASKS_PERPETUATED = _counter(
    "docket_tasks_perpetuated", "Runs a Perpetual (or Cron) scheduled again"
)
DEAD_LETTERED = _counter(
    "docket_dead_lettered", "Messages moved to the dead-letter stream instead of run"
)

# -- histograms --------------------------------------------------------------------------

# Seconds, from a millisecond to an hour (OpenTelemetry's default buckets are for ms).
SECONDS_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)

TASK_DURATION = meter.create_histogram(
    "docket_task_duration",
    unit="s",
    description="How long runs took, from start to outcome",
    explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
)
TASK_PUNCTUALITY = meter.create_histogram(
    "docket_task_punctuality",
    unit="s",
    description="How late runs started compared to the time they were scheduled for",
    explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
)

# -- gauges ------------------------------------------------------------------------------


class _RunningCounts(dict[str, int]):
    """Runs in progress per task name, as the worker counts them: every change is also
    added to the ``TASKS_RUNNING`` up-down counter (looked up when it happens, so a
    caller who patches ``TASKS_RUNNING.add`` sees each +1 and -1)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def __setitem__(self, task: str, count: int) -> None:
        delta = count - self.get(task, 0)
        super().__setitem__(task, count)
        if delta:
            TASKS_RUNNING.add(delta, self._metrics.task_labels(task))


QUEUE_DEPTH = meter.create_gauge(
    "docket_queue_depth",
    unit="1",
    description="Tasks due now and waiting for a worker (stream entries not yet "
    "claimed, plus scheduled ones already due), as of the last heartbeat",
)
SCHEDULE_DEPTH = meter.create_gauge(
    "docket_schedule_depth",
    unit="1",
    description="Tasks scheduled for the future, as of the last heartbeat",
)


class _Sampled:
    """A depth sample of ``WorkerMetrics``: setting it records it on its gauge too."""

    def __init__(self, slot: str, gauge: Any) -> None:
        self.slot = slot
        self.gauge = gauge

    @overload
    def __get__(self, metrics: None, owner: type) -> Self: ...
    @overload
    def __get__(self, metrics: WorkerMetrics, owner: type) -> int | None: ...
    def __get__(self, metrics: WorkerMetrics | None, owner: type) -> int | Self | None:
        if metrics is None:
            return self
        value: int | None = getattr(metrics, self.slot)
        return value

    def __set__(self, metrics: WorkerMetrics, value: int | None) -> None:
        setattr(metrics, self.slot, value)
        if value is not None:
            self.gauge.set(value, {"docket.name": metrics.docket_name})


class WorkerMetrics:
    """One worker's label sets, its running counts and its depth samples.

    Label dicts are built once per task name and shared by every measurement. Setting
    ``queue_depth`` or ``schedule_depth`` (the heartbeat loop's samples) records them on
    the gauges of the same names.
    """

    __slots__ = ("_by_task", "_queue_depth", "_schedule_depth", "base", "docket_name", "running")

    def __init__(self, docket_name: str, worker_name: str) -> None:
        self.docket_name = docket_name
        self.base: dict[str, str] = {"docket.name": docket_name, "docket.worker": worker_name}
        self._by_task: dict[str, dict[str, str]] = {}
        self.running: dict[str, int] = _RunningCounts(self)
        self._queue_depth: int | None = None
        self._schedule_depth: int | None = None

    def task_labels(self, task: str) -> dict[str, str]:
        labels = self._by_task.get(task)
        if labels is None:
            labels = self._by_task[task] = {**self.base, "docket.task": task}
        return labels

    queue_depth = _Sampled("_queue_depth", QUEUE_DEPTH)
    schedule_depth = _Sampled("_schedule_depth", SCHEDULE_DEPTH)


_live_lock = threading.Lock()
_live: dict[int, WorkerMetrics] = {}


def register_worker(sample: WorkerMetrics) -> None:
    with _live_lock:
        _live[id(sample)] = sample


def unregister_worker(sample: WorkerMetrics) -> None:
    with _live_lock:
        _live.pop(id(sample), None)


# Instruments callers can patch (``mocker.patch("docket.instrumentation.TASKS_RUNNING.add")``),
# as the released docket's were.
TASKS_RUNNING = meter.create_up_down_counter(
    "docket_tasks_running", unit="1", description="Runs in progress on this worker"
)


def metrics_collected() -> bool:
    """Whether a real MeterProvider is set, so gauge samples are worth a Redis call."""
    return type(metrics.get_meter_provider()).__name__ not in (
        "_ProxyMeterProvider",
        "NoOpMeterProvider",
    )


def tracing_active() -> bool:
    """Whether a real TracerProvider is set; without one every span is a no-op, and
    skipping them saves a run a good part of its overhead."""
    # Asked once per run: read the global the API keeps before taking its slower path
    # (None means no provider was ever set, and then spans are no-ops).
    if getattr(trace, "_TRACER_PROVIDER", ...) is None and not _OTEL_PROVIDER_FROM_ENV:
        return False
    return type(trace.get_tracer_provider()).__name__ not in (
        "ProxyTracerProvider",
        "NoOpTracerProvider",
    )


# A provider named in the environment is loaded on first use, not set up front.
_OTEL_PROVIDER_FROM_ENV = bool(os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"))


# -- trace context -----------------------------------------------------------------------


def capture_trace_context() -> str:
    """The caller's trace context, serialized to travel with the task."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier, separators=(",", ":")) if carrier else ""


def parse_trace_context(raw: str | bytes | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def links_for(carrier: Mapping[str, str]) -> list[trace.Link]:
    if not carrier:
        return []
    context: Context = propagate.extract(dict(carrier))
    span_context = trace.get_current_span(context).get_span_context()
    if not span_context.is_valid:
        return []
    return [trace.Link(span_context)]


# -- internal operations -----------------------------------------------------------------

# The key OpenTelemetry's instrumentations (redis among them) check before tracing a
# call; the plain string is what older instrumentation versions look for.
_SUPPRESS_KEY: str = getattr(otel_context, "_SUPPRESS_INSTRUMENTATION_KEY", "")
_SUPPRESS_KEY_PLAIN = "suppress_instrumentation"


def suppressed() -> bool:
    """Whether the current context asks instrumentation to stay quiet."""
    return bool(
        (_SUPPRESS_KEY and otel_context.get_value(_SUPPRESS_KEY))
        or otel_context.get_value(_SUPPRESS_KEY_PLAIN)
    )


@contextmanager
def internal(enabled: bool, name: str, attributes: Mapping[str, str]) -> Iterator[None]:
    """Wrap one internal Redis operation (polling, heartbeats, leases, settling).

    With internal instrumentation enabled it gets an INTERNAL span named ``name``;
    otherwise instrumentation is suppressed for it, so an instrumented Redis client
    does not trace every poll. Keep the block to the Redis call itself: an asyncio
    task created inside would inherit the suppression.
    """
    if enabled:
        with tracer.start_as_current_span(name, kind=SpanKind.INTERNAL, attributes=attributes):
            yield
        return
    quiet = otel_context.set_value(_SUPPRESS_KEY_PLAIN, True)
    if _SUPPRESS_KEY:
        quiet = otel_context.set_value(_SUPPRESS_KEY, True, quiet)
    token = otel_context.attach(quiet)
    try:
        yield
    finally:
        otel_context.detach(token)


# -- the released docket's helpers --------------------------------------------------------


class _MessageGetter:
    """OpenTelemetry ``Getter`` for a stream message (``dict[bytes, bytes]``)."""

    def get(self, carrier: Mapping[bytes, bytes], key: str) -> list[str] | None:
        value = carrier.get(key.encode())
        return None if value is None else [value.decode()]

    def keys(self, carrier: Mapping[bytes, bytes]) -> list[str]:
        return [key.decode() for key in carrier]


class _MessageSetter:
    """OpenTelemetry ``Setter`` for a stream message (``dict[bytes, bytes]``)."""

    def set(self, carrier: dict[bytes, bytes], key: str, value: str) -> None:
        carrier[key.encode()] = value.encode()


message_getter = _MessageGetter()
message_setter = _MessageSetter()


@contextmanager
def healthcheck_server(host: str = "0.0.0.0", port: int | None = None) -> Iterator[None]:
    """While the block runs, answer any GET on ``port`` with 200 ``OK`` (liveness only:
    the process is up). Nothing is served when ``port`` is None. ``docket worker
    --healthcheck-port`` serves the richer ``Worker.is_healthy()`` check instead."""
    if port is None:
        yield
        return
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="healthcheck")
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def metrics_server(host: str = "0.0.0.0", port: int | None = None) -> Iterator[None]:
    """While the block runs, serve docket's metrics as Prometheus text on ``port``
    (nothing when ``port`` is None). Needs ``pip install pydocket[metrics]``; without
    it, raises ``MetricsUnavailable``, an ImportError that says so."""
    if port is None:
        yield
        return
    from .metrics_server import serve_metrics

    server = serve_metrics(port, host)
    try:
        yield
    finally:
        server.close()
