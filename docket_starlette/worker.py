"""A separate worker process for an app: ``docket worker --app pkg.main:app``.

The worker imports the app, enters its lifespan once (so dependencies that read the
lifespan state work), takes the docket that lifespan opened (``docket_lifespan``) and
runs a worker on it. The CLI calls ``run_with_app(app_path, **worker_options)``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from docket import Docket, Worker, WorkerOptions
from docket.integration import import_object, shutdown_signals

from ._context import (
    AppBinding,
    bind,
    binding_for,
    embedded_worker_disabled,
    install_log_filter,
    unbind,
)
from ._run import request_worker
from .lifespan import STATE_KEY, register_tasks


def import_app(app_path: str) -> Any:
    """``"pkg.module:app"`` (or ``"pkg.module:factory()"``, called with no arguments)."""
    return import_object(app_path, "--app")


@contextlib.asynccontextmanager
async def app_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    """Enter ``app``'s lifespan the way a server does (startup, then shutdown)."""
    router = getattr(app, "router", None)
    context = getattr(router, "lifespan_context", None)
    if context is None:
        yield {}
        return
    async with context(app) as state:
        yield dict(state or {})


@contextlib.asynccontextmanager
async def app_worker(
    app: Any,
    *,
    tasks: Sequence[str] = (),
    url: str | None = None,
    docket_name: str | None = None,
    **worker_options: Any,
) -> AsyncIterator[Worker]:
    """An entered ``Worker`` on the docket of ``app`` (inside the app's lifespan).

    When the lifespan opened no docket, one is opened from ``url``/``docket_name``.
    ``worker_options`` are ``docket.WorkerOptions`` fields (``fallback_task`` and
    ``dependencies`` may be ``module:name`` paths), checked before the app starts.
    """
    options = WorkerOptions.imported(**worker_options)
    async with contextlib.AsyncExitStack() as stack:
        token = embedded_worker_disabled.set(True)
        try:
            state = await stack.enter_async_context(app_lifespan(app))
        finally:
            embedded_worker_disabled.reset(token)
        docket: Docket | None = state.get(STATE_KEY) or getattr(
            getattr(app, "state", None), STATE_KEY, None
        )
        if docket is None or (
            (url is not None and url != docket.url)
            or (docket_name is not None and docket_name != docket.name)
        ):
            docket = await stack.enter_async_context(Docket(name=docket_name or "docket", url=url))
        binding = binding_for(docket)
        if binding is None:
            bind(docket, AppBinding(app, state))
            stack.callback(unbind, docket)
        register_tasks(docket, tasks)
        install_log_filter("docket.worker")
        worker = await stack.enter_async_context(request_worker(docket, options))
        yield worker


async def run_with_app(
    app_path: str | Any,
    *,
    tasks: Sequence[str] = (),
    url: str | None = None,
    docket_name: str | None = None,
    until_finished: bool = False,
    handle_signals: bool = True,
    **worker_options: Any,
) -> None:
    """Run a worker for an app until stopped: what ``docket worker --app`` calls.

    ``app_path`` is ``"pkg.main:app"`` (or the app itself). The app's lifespan is entered
    once; ``tasks`` are extra ``"pkg.mod:collection"`` paths to register (tasks the
    lifespan registered are known already). ``url``/``docket_name`` are only used when
    the lifespan opened no docket (or to insist on another one). ``worker_options`` are
    ``docket.WorkerOptions`` fields (``concurrency``, ``max_tasks``...). With
    ``handle_signals`` the first SIGTERM/SIGINT drains, a second one exits at once (the
    policy of every docket worker); without it no handler is installed.
    """
    app = import_app(app_path) if isinstance(app_path, str) else app_path
    async with app_worker(
        app, tasks=tasks, url=url, docket_name=docket_name, **worker_options
    ) as worker:
        main = asyncio.current_task()

        def exit_now() -> None:
            if main is not None:
                main.cancel()

        with contextlib.ExitStack() as signals:
            if handle_signals:
                signals.enter_context(
                    shutdown_signals(lambda: worker, asyncio.get_running_loop(), on_abort=exit_now)
                )
            if until_finished:
                await worker.run_until_finished()
            else:
                await worker.run_forever()
