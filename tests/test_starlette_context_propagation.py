"""Request context reaching task runs: log fields, structlog context and span links."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from _helpers import span_exporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import docket_starlette as ds
from docket import TaskLogger
from docket.dependencies import TaskLoggerAdapter
from docket_starlette.testing import run_tasks

seen: list[dict[str, Any]] = []


async def logs_it(label: str, logger: TaskLoggerAdapter = TaskLogger()) -> None:
    logging.getLogger("docket.task.logs_it").info("stdlib line %s", label)
    logger.info("task logger line %s", label)
    seen.append(
        {
            "label": label,
            "request_id": ds.current_request_id.get(),
            "structlog": dict(structlog.contextvars.get_contextvars()),
        }
    )


async def traced_task() -> None:
    seen.append({"label": "traced"})


async def enqueue(request: Request) -> JSONResponse:
    docket = ds.get_docket(request)
    await docket.add(logs_it)("from-request")
    return JSONResponse({"ok": True})


async def enqueue_traced(request: Request) -> JSONResponse:
    await ds.get_docket(request).add(traced_task)()
    return JSONResponse({"ok": True})


def make_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/enqueue", enqueue, methods=["POST"]),
            Route("/traced", enqueue_traced, methods=["POST"]),
        ],
        middleware=[Middleware(ds.RequestContextMiddleware)],
        lifespan=ds.docket_lifespan(url=f"memory://{uuid.uuid4()}", tasks=[logs_it, traced_task]),
    )


@pytest.fixture(autouse=True)
def _clear() -> None:
    seen.clear()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = span_exporter()
    exporter.clear()
    yield exporter
    exporter.clear()


def test_request_id_reaches_log_records_and_structlog(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="docket.task.logs_it")
    with TestClient(make_app()) as client:
        response = client.post("/enqueue", headers={"x-request-id": "log-1"})
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "log-1"
        run_tasks(client)

        lines = [r for r in caplog.records if r.name == "docket.task.logs_it"]
        stdlib = [r for r in lines if r.getMessage() == "stdlib line from-request"]
        task_logger = [r for r in lines if r.getMessage() == "task logger line from-request"]
        assert len(stdlib) == 1 and len(task_logger) == 1
        assert getattr(stdlib[0], "request_id", None) == "log-1"
        assert getattr(task_logger[0], "request_id", None) == "log-1"

        [first] = seen
        assert first["request_id"] == "log-1"
        assert first["structlog"].get("request_id") == "log-1"

        # Outside the run nothing is left behind ...
        assert ds.current_request_id.get() is None
        assert "request_id" not in structlog.contextvars.get_contextvars()

        # ... and a later run with no request id does not inherit it.
        caplog.clear()
        docket = client.app.state.docket  # type: ignore[attr-defined]
        client.portal.call(lambda: docket.add(logs_it)("no-request"))
        run_tasks(client)

    second = seen[1]
    assert second["label"] == "no-request"
    assert second["request_id"] is None
    assert "request_id" not in second["structlog"]
    later = [r for r in caplog.records if r.name == "docket.task.logs_it"]
    assert later and all(not hasattr(r, "request_id") for r in later)


def test_consumer_span_links_to_request_trace(spans: InMemorySpanExporter) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    traceparent = f"00-{trace_id}-b7ad6b7169203331-01"
    with TestClient(make_app()) as client:
        response = client.post("/traced", headers={"traceparent": traceparent})
        assert response.status_code == 200
        run_tasks(client)
    assert seen == [{"label": "traced"}]

    finished = spans.get_finished_spans()
    server = [s for s in finished if s.name == "POST /traced" and s.kind is SpanKind.SERVER]
    assert len(server) == 1
    assert server[0].context is not None
    assert server[0].context.trace_id == int(trace_id, 16)

    consumers = [s for s in finished if s.name == "traced_task" and s.kind is SpanKind.CONSUMER]
    assert len(consumers) == 1
    assert any(link.context.trace_id == int(trace_id, 16) for link in consumers[0].links)
