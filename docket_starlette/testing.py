"""Running an app's enqueued tasks to completion inside a test.

With ``TestClient`` (the lifespan runs on the client's event loop, so tasks must too)::

    with TestClient(app) as client:
        client.post("/signup", json={...})
        run_tasks(client)            # runs what the request enqueued, overrides applied

With ``httpx.AsyncClient(transport=ASGITransport(app))`` inside the app's lifespan::

    await arun_tasks(app)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from docket import Docket, WorkerOptions

from ._run import request_worker
from .lifespan import STATE_KEY


def _docket_of(app: Any) -> Docket:
    docket = getattr(getattr(app, "state", None), STATE_KEY, None)
    if docket is None:
        raise RuntimeError(
            "The app has no docket: is its lifespan (docket_lifespan) running? With "
            "TestClient, use `with TestClient(app) as client:`"
        )
    assert isinstance(docket, Docket)
    return docket


async def arun_tasks(
    app_or_docket: Any, *, iterations: Mapping[str, int] | None = None, **worker_options: Any
) -> None:
    """Run every task queued or due on the app's docket until none is left.

    The worker carries ``RequestContext``, and bridged tasks resolve the app's
    dependencies with ``app.dependency_overrides`` applied, exactly as in production.
    ``iterations`` limits keys (``Perpetual`` tasks) like ``Worker.run_at_most``.
    """
    docket = app_or_docket if isinstance(app_or_docket, Docket) else _docket_of(app_or_docket)
    worker_options.setdefault("minimum_check_interval", timedelta(0))
    worker_options.setdefault("scheduling_resolution", timedelta(0))
    async with request_worker(docket, WorkerOptions(**worker_options)) as worker:
        if iterations:
            await worker.run_at_most(dict(iterations))
        else:
            await worker.run_until_finished()


def run_tasks(client: Any, **options: Any) -> None:
    """``arun_tasks`` for a ``starlette.testclient.TestClient`` (entered with ``with``)."""
    portal = getattr(client, "portal", None)
    if portal is None:
        raise RuntimeError("run_tasks needs an entered TestClient: `with TestClient(app) as c:`")
    portal.call(lambda: arun_tasks(client.app, **options))
