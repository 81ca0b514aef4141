"""The Starlette side: lifespan, get_docket, embedded worker, middleware, context."""

from __future__ import annotations

import asyncio
import json
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import docket_starlette as ds
from docket import CurrentExecution, Execution, Worker
from docket_starlette.lifespan import multiprocess_server
from docket_starlette.testing import run_tasks

seen: list[Any] = []


@ds.task
async def greet(name: str, request: Request) -> None:
    seen.append((name, request.headers.get("accept-language"), request.state.greeting))


async def plain(name: str, execution: Execution = CurrentExecution()) -> None:
    """Not bridged: still gets the request id through the trace carrier's baggage."""
    seen.append((name, ds.current_request_id.get(), execution.trace_context))


async def slow(seconds: float) -> None:
    seen.append("slow started")
    try:
        await asyncio.sleep(seconds)
        seen.append("slow finished")
    except asyncio.CancelledError:
        seen.append("slow cancelled")
        raise


@asynccontextmanager
async def own(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "hi"}


async def hello(request: Request) -> JSONResponse:
    docket = ds.get_docket(request)
    assert docket is request.app.state.docket is request.state.docket
    await docket.add(greet)(request.path_params["name"])
    await docket.add(plain)(request.path_params["name"])
    return JSONResponse({"ok": True})


def make_app(lifespan: Any) -> Starlette:
    return Starlette(
        routes=[Route("/hello/{name}", hello, methods=["POST"])],
        middleware=[Middleware(ds.RequestContextMiddleware)],
        lifespan=lifespan,
    )


@pytest.fixture(autouse=True)
def _clear() -> None:
    seen.clear()


def url() -> str:
    return f"memory://{uuid.uuid4()}"


@pytest.mark.parametrize("composition", ["argument", "combine", "inside"])
def test_lifespan_alone_and_composed(composition: str) -> None:
    docket_lifespan = ds.docket_lifespan(
        url=url(),
        name="greetings",
        tasks=[greet, plain],
        capture=ds.RequestCapture(headers=["accept-language"]),
        lifespan=own if composition == "argument" else None,
    )
    lifespan: Any
    if composition == "argument":
        lifespan = docket_lifespan
    elif composition == "combine":
        lifespan = ds.combine_lifespans(own, docket_lifespan)
    else:

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
            async with own(app) as mine, docket_lifespan(app) as state:
                state.update(mine)  # what task runs see in request.state
                yield state

    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with TestClient(make_app(lifespan)) as client:
        assert client.app.state.docket.name == "greetings"
        response = client.post(
            "/hello/ann",
            headers={"accept-language": "fr", "x-request-id": "r-1", "traceparent": traceparent},
        )
        assert response.status_code == 200
        run_tasks(client)
    assert ("ann", "fr", "hi") in seen
    [(_, request_id, carrier)] = [s for s in seen if len(s) == 3 and s[0] == "ann" and s[1] != "fr"]
    assert request_id == "r-1"
    # The worker's span is linked to the request's trace through this carrier.
    assert carrier["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"


def test_generated_request_id_is_echoed() -> None:
    with TestClient(make_app(ds.docket_lifespan(url=url(), lifespan=own))) as client:
        response = client.post("/hello/bob")
        generated = response.headers["x-request-id"]
        assert len(generated) == 32
        run_tasks(client)
    assert any(s[0] == "bob" and s[1] == generated for s in seen)


def test_embedded_worker_runs_tasks_without_help() -> None:
    lifespan = ds.docket_lifespan(
        url=url(),
        lifespan=own,
        worker=ds.WorkerOptions(concurrency=2, minimum_check_interval=timedelta(milliseconds=10)),
    )
    with TestClient(make_app(lifespan)) as client:
        assert isinstance(client.app.state.docket_worker, Worker)
        client.post("/hello/cy", headers={"accept-language": "de"})
        for _ in range(200):
            if len(seen) >= 2:
                break
            client.portal.call(asyncio.sleep, 0.01)
    assert ("cy", "de", "hi") in seen


def test_embedded_worker_is_drained_with_a_grace_period() -> None:
    lifespan = ds.docket_lifespan(
        url=url(),
        tasks=[slow],
        worker=ds.WorkerOptions(
            grace_period=timedelta(milliseconds=200),
            minimum_check_interval=timedelta(milliseconds=10),
        ),
    )
    app = Starlette(lifespan=lifespan)
    with TestClient(app) as client:
        client.portal.call(lambda: app.state.docket.add(slow)(0.05))
        client.portal.call(lambda: app.state.docket.add(slow)(30))
        for _ in range(300):
            if seen.count("slow started") == 2:
                break
            client.portal.call(asyncio.sleep, 0.01)
    # The short one finished, the long one was cancelled once the grace period ran out.
    assert "slow finished" in seen and "slow cancelled" in seen


def test_multiprocess_servers_are_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    assert multiprocess_server() == "WEB_CONCURRENCY=4"
    monkeypatch.delenv("WEB_CONCURRENCY")
    monkeypatch.setattr("sys.argv", ["uvicorn", "app:app", "--workers", "3"])
    assert multiprocess_server() == "--workers 3"
    monkeypatch.setattr("sys.argv", ["uvicorn", "app:app"])
    assert multiprocess_server() is None

    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    app = Starlette(lifespan=ds.docket_lifespan(url=url(), worker=ds.WorkerOptions()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with TestClient(app):
            pass
    assert any("embedded worker in every server process" in str(w.message) for w in caught)


def test_get_docket_without_lifespan_explains() -> None:
    async def endpoint(request: Request) -> JSONResponse:
        try:
            ds.get_docket(request)
        except RuntimeError as error:
            return JSONResponse({"error": str(error)})
        return JSONResponse({})

    app = Starlette(routes=[Route("/", endpoint)])
    with TestClient(app) as client:
        assert "docket_lifespan" in client.get("/").json()["error"]


def test_snapshot_is_json_compatible() -> None:
    captured: list[Any] = []

    async def endpoint(request: Request) -> JSONResponse:
        captured.append(ds.RequestCapture(headers=["x-a"]).snapshot(request))
        return JSONResponse({})

    app = Starlette(routes=[Route("/{p}", endpoint)])
    with TestClient(app) as client:
        client.get("/v?a=1&a=2", headers={"x-a": "1", "cookie": "s=1"})
    snapshot = json.loads(json.dumps(captured[0]))
    assert snapshot["headers"] == [["x-a", "1"]]
    assert snapshot["query_params"] == [["a", "1"], ["a", "2"]]
    assert snapshot["path_params"] == {"p": "v"}
