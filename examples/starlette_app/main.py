"""Run it from ``examples/``: ``uvicorn starlette_app.main:app``.

A plain Starlette app (no FastAPI): ``get_docket(request)`` in endpoints, a task that
sees the enqueuing request's language through ``Request``, and an embedded worker on
an in-memory docket (set ``DOCKET_URL``/``DOCKET_EMBEDDED=0`` for Redis and a separate
``docket worker --app starlette_app.main:app``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from docket_starlette import (
    RequestContextMiddleware,
    WorkerOptions,
    combine_lifespans,
    current_request_id,
    docket_lifespan,
    get_docket,
    task,
)

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
logger = logging.getLogger("starlette_app")

GREETINGS = {"fr": "Bonjour", "de": "Hallo", "en": "Hello"}


@task
async def greet(name: str, request: Request) -> None:
    language = (request.headers.get("accept-language") or "en")[:2]
    greeting = GREETINGS.get(language, "Hello")
    sent: list[str] = request.state.sent
    sent.append(f"{greeting}, {name}!")
    logger.info("greeted %s (request %s)", name, current_request_id.get())


@asynccontextmanager
async def own_lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"sent": []}


async def hello(request: Request) -> JSONResponse:
    docket = get_docket(request)
    execution = await docket.add(greet)(request.path_params["name"])
    return JSONResponse({"task": execution.key}, status_code=202)


async def sent(request: Request) -> JSONResponse:
    return JSONResponse(request.state.sent)


embedded = os.environ.get("DOCKET_EMBEDDED", "1") == "1"

app = Starlette(
    routes=[Route("/hello/{name}", hello, methods=["POST"]), Route("/sent", sent)],
    middleware=[Middleware(RequestContextMiddleware)],
    lifespan=combine_lifespans(
        own_lifespan,
        docket_lifespan(
            url=os.environ.get("DOCKET_URL", "memory://greetings"),
            name="greetings",
            tasks=[greet],
            worker=WorkerOptions(concurrency=4) if embedded else None,
        ),
    ),
)
