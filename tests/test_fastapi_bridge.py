"""FastAPI dependency bridging: tasks resolve the app's dependencies like a request."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import pytest
from fastapi import (
    BackgroundTasks,
    Body,
    Depends,
    FastAPI,
    File,
    Form,
    Header,
    Request,
    Response,
    UploadFile,
    WebSocket,
)
from fastapi.testclient import TestClient
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware

import docket_starlette as ds
from docket import Depends as DocketDepends
from docket import Retry, TaskKey
from docket_starlette.fastapi import DocketDep
from docket_starlette.testing import arun_tasks, run_tasks

events: list[Any] = []


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    events.clear()
    yield
    events.clear()


def get_settings(request: Request) -> dict[str, str]:
    settings: dict[str, str] = request.state.settings
    return settings


async def get_db(settings: Annotated[dict[str, str], Depends(get_settings)]) -> AsyncIterator[str]:
    events.append("db open")
    try:
        yield f"db:{settings['db']}"
    except ValueError as error:
        events.append(f"db saw {error}")
        raise
    finally:
        events.append("db close")


def get_sync_resource() -> Iterator[str]:
    events.append("sync open")
    yield "sync"
    events.append("sync close")


counter = {"n": 0}


def count() -> int:
    counter["n"] += 1
    return counter["n"]


async def async_value(n: Annotated[int, Depends(count)]) -> int:
    return n * 10


def docket_side() -> str:
    return "docket-dep"


@ds.task
async def record(
    value: int,
    db: Annotated[str, Depends(get_db)],
    request: Request,
    sync: str = Depends(get_sync_resource),
    first: int = Depends(count),
    again: int = Depends(count),
    fresh: Annotated[int, Depends(count, use_cache=False)] = 0,
    tenfold: int = Depends(async_value),
    key: str = TaskKey(),
    mine: str = DocketDepends(docket_side),
    retry: Retry = Retry(attempts=1),
    lang: str | None = Header(default=None, alias="accept-language"),
) -> None:
    events.append(
        {
            "value": value,
            "db": db,
            "sync": sync,
            "cached": first == again == tenfold // 10,
            "fresh_differs": fresh != first,
            "key": bool(key),
            "mine": mine,
            "retry": isinstance(retry, Retry),
            "lang": lang,
            "header": request.headers.get("accept-language"),
            "secret": request.headers.get("authorization"),
            "query": request.query_params.get("q"),
            "path": request.path_params,
            "client": request.client.host if request.client else None,
            "state": request.state.settings,
            "app": request.app is not None,
            "user": request.user.identity if "user" in request.scope else None,
            "request_id": ds.current_request_id.get(),
        }
    )


@ds.task
async def fails(db: Annotated[str, Depends(get_db)]) -> None:
    events.append("body ran")
    raise ValueError("boom")


@ds.task
def sync_task(n: int, request: Request) -> None:
    events.append(("sync task", n, request.state.settings["db"]))


class Backend(AuthenticationBackend):
    async def authenticate(self, conn: Any) -> tuple[AuthCredentials, SimpleUser] | None:
        if "x-user" in conn.headers:
            return AuthCredentials(["authenticated"]), SimpleUser(conn.headers["x-user"])
        return None


def make_app(**options: Any) -> FastAPI:
    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"settings": {"db": "real"}}

    app = FastAPI(
        lifespan=ds.docket_lifespan(
            url=f"memory://{uuid.uuid4()}",
            lifespan=own,
            tasks=[record, fails, sync_task],
            capture=ds.RequestCapture(headers=["accept-language"]),
            **options,
        )
    )

    @app.post("/items/{item}")
    async def enqueue(item: str, docket: DocketDep) -> dict[str, str]:
        execution = await docket.add(record)(7)
        return {"key": execution.key}

    app.add_middleware(AuthenticationMiddleware, backend=Backend())
    app.add_middleware(ds.RequestContextMiddleware)
    return app


def test_route_enqueue_runs_with_app_dependencies_and_captured_request() -> None:
    app = make_app()
    with TestClient(app) as client:
        response = client.post(
            "/items/book?q=search",
            headers={
                "accept-language": "fr",
                "authorization": "Bearer secret",
                "x-request-id": "req-123",
                "x-user": "ann",
            },
        )
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "req-123"
        assert events == []
        run_tasks(client)

    [run] = [e for e in events if isinstance(e, dict)]
    assert run == {
        "value": 7,
        "db": "db:real",
        "sync": "sync",
        "cached": True,
        "fresh_differs": True,
        "key": True,
        "mine": "docket-dep",
        "retry": True,
        "lang": "fr",
        "header": "fr",
        "secret": None,  # not in the allowlist
        "query": "search",
        "path": {"item": "book"},
        "client": "testclient",
        "state": {"db": "real"},
        "app": True,
        "user": "ann",
        "request_id": "req-123",
    }
    # Yield dependencies closed after the run, in reverse order.
    strings = [e for e in events if isinstance(e, str)]
    assert strings == ["db open", "sync open", "sync close", "db close"]


def test_overrides_apply_to_tasks() -> None:
    app = make_app()
    app.dependency_overrides[get_settings] = lambda: {"db": "fake"}
    with TestClient(app) as client:
        client.post("/items/x")
        run_tasks(client)
    [run] = [e for e in events if isinstance(e, dict)]
    assert run["db"] == "db:fake"
    # Not enqueued from a request through the middleware: no header, but a request id.
    assert run["header"] is None


async def test_enqueued_outside_a_request_with_httpx_style_lifespan() -> None:
    app = make_app()
    async with app.router.lifespan_context(app):
        docket = app.state.docket
        await docket.add(record)(1)
        await docket.add(sync_task)(2)
        await arun_tasks(app)
    [run] = [e for e in events if isinstance(e, dict)]
    assert run["header"] is None and run["path"] == {} and run["request_id"] is None
    assert run["state"] == {"db": "real"}
    assert ("sync task", 2, "real") in events


async def test_the_runs_exception_reaches_the_yield_dependency_and_it_closes() -> None:
    app = make_app()
    async with app.router.lifespan_context(app):
        await app.state.docket.add(fails)()
        await arun_tasks(app)
    assert events == ["db open", "body ran", "db saw boom", "db close"]


async def test_values_are_per_run() -> None:
    app = make_app()
    async with app.router.lifespan_context(app):
        await app.state.docket.add(record)(1)
        await app.state.docket.add(record)(2)
        await arun_tasks(app)
    runs = [e for e in events if isinstance(e, dict)]
    assert len(runs) == 2 and all(r["cached"] for r in runs)
    assert events.count("db open") == events.count("db close") == 2


def needs_body(payload: dict[str, Any] = Body()) -> dict[str, Any]:
    return payload


def needs_background(tasks: BackgroundTasks) -> None:
    return None


@pytest.mark.parametrize(
    ("parameter", "annotation", "default", "needle"),
    [
        ("payload", dict, Body(), "request body"),
        ("field", str, Form(), "request body"),
        ("upload", bytes, File(), "request body"),
        ("upload", UploadFile, None, "uploaded file"),
        ("socket", WebSocket, None, "WebSocket"),
        ("response", Response, None, "Response"),
        ("tasks", BackgroundTasks, None, "BackgroundTasks"),
        ("data", dict, Depends(needs_body), "needs the request body"),
        ("bg", None, Depends(needs_background), "needs BackgroundTasks"),
    ],
)
def test_parameters_that_need_a_live_request_are_rejected_at_registration(
    parameter: str, annotation: Any, default: Any, needle: str
) -> None:
    import inspect

    async def impossible(**kwargs: Any) -> None: ...

    kind = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(
            parameter,
            kind,
            annotation=annotation if annotation is not None else inspect.Parameter.empty,
            default=default if default is not None else inspect.Parameter.empty,
        )
    ]
    impossible.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    impossible.__annotations__ = {parameter: annotation} if annotation is not None else {}
    with pytest.raises(ds.TaskRegistrationError) as caught:
        ds.task(impossible)
    message = str(caught.value)
    assert "impossible" in message and repr(parameter) in message and needle in message
    assert caught.value.parameter == parameter


def test_rejection_in_annotated_form() -> None:
    with pytest.raises(ds.TaskRegistrationError, match=r"'upload_task'.*'payload'"):

        @ds.task
        async def upload_task(payload: Annotated[dict[str, Any], Body()]) -> None: ...


def test_positional_arguments_after_a_request_parameter() -> None:
    @ds.task
    async def positional(request: Request, n: int, db: str = Depends(get_db)) -> None:
        events.append((n, db))

    app = make_app()
    with TestClient(app) as client:
        client.portal.call(lambda: client.app.state.docket.add(positional)(3))
        client.portal.call(lambda: client.app.state.docket.add(positional)(n=4))
        run_tasks(client)
    assert (3, "db:real") in events and (4, "db:real") in events


@ds.task
async def note_request_id(request: Request) -> None:
    events.append((request.headers.get("x-request-id"), ds.current_request_id.get()))


def _app_without_middleware(capture: ds.RequestCapture) -> FastAPI:
    app = FastAPI(
        lifespan=ds.docket_lifespan(
            url=f"memory://{uuid.uuid4()}", tasks=[note_request_id], capture=capture
        )
    )

    @app.post("/note")
    async def enqueue(docket: DocketDep) -> None:
        await docket.add(note_request_id)()

    return app


def test_the_request_id_header_is_captured_without_the_middleware() -> None:
    with TestClient(_app_without_middleware(ds.RequestCapture())) as client:
        client.post("/note", headers={"x-request-id": "plain-7"})
        client.post("/note", headers={"x-request-id": "not an id!"})
        run_tasks(client)
    assert sorted(events, key=str) == sorted(
        [("plain-7", "plain-7"), ("not an id!", None)], key=str
    )


def test_the_request_id_header_is_configurable_and_can_be_left_out() -> None:
    capture = ds.RequestCapture(request_id_header="x-correlation-id")
    with TestClient(_app_without_middleware(capture)) as client:
        client.post("/note", headers={"x-correlation-id": "c-1", "x-request-id": "r-1"})
        run_tasks(client)
    assert events == [(None, "c-1")]
    events.clear()
    with TestClient(_app_without_middleware(ds.RequestCapture(request_id_header=None))) as client:
        client.post("/note", headers={"x-request-id": "r-2"})
        run_tasks(client)
    assert events == [(None, None)]


def test_the_snapshot_travels_as_metadata_never_among_the_arguments(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="docket")
    app = make_app()
    with TestClient(app) as client:
        client.post("/items/book", headers={"accept-language": "fr", "x-request-id": "m-1"})
        docket = app.state.docket
        [queued] = client.portal.call(docket.snapshot).future
        assert "_docket_request" not in queued.kwargs
        assert queued.metadata["docket_starlette.request"]["request_id"] == "m-1"
        run_tasks(client)
    [run] = [e for e in events if isinstance(e, dict)]
    assert (run["header"], run["request_id"]) == ("fr", "m-1")
    assert "_docket_request" not in caplog.text
    assert "docket_starlette.request" not in caplog.text


def test_a_run_queued_with_the_earlier_snapshot_keyword_still_sees_its_request() -> None:
    app = make_app()
    snapshot = {"v": 1, "headers": [["accept-language", "nl"]], "request_id": "old-1"}
    with TestClient(app) as client:
        docket = app.state.docket
        client.portal.call(lambda: docket.add(record)(9, _docket_request=snapshot))
        run_tasks(client)
    [run] = [e for e in events if isinstance(e, dict)]
    assert (run["value"], run["header"], run["request_id"]) == (9, "nl", "old-1")
