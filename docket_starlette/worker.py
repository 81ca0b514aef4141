"""A separate worker process for an app: ``docket worker --app pkg.main:app``.

The worker imports the app, enters its lifespan once (so dependencies that read the
lifespan state work), takes the docket that lifespan opened (``docket_lifespan``) and
runs a worker on it. The CLI calls ``run_with_app(app_path, **worker_options)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from docket import Docket, Worker

from ._context import (
    AppBinding,
    bind,
    binding_for,
    embedded_worker_disabled,
    install_log_filter,
    unbind,
)
from ._run import RequestContext
from .lifespan import STATE_KEY, register_tasks

logger = logging.getLogger("docket_starlette.worker")


def import_app(app_path: str) -> Any:
    """``"pkg.module:app"`` (or ``"pkg.module:factory()"``, called with no arguments)."""
    module_name, _, attribute = app_path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--app {app_path!r} must look like 'package.module:app'")
    call = attribute.endswith("()")
    attribute = attribute.removesuffix("()")
    module = importlib.import_module(module_name)
    app: Any = module
    try:
        for part in attribute.split("."):
            app = getattr(app, part)
    except AttributeError:
        raise ValueError(f"Module {module_name!r} has no attribute {attribute!r}") from None
    return app() if call else app


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
    ``worker_options`` are ``Worker``'s keyword arguments.
    """
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
        dependencies = worker_options.pop("dependencies", None)
        merged: dict[str, Any] = {"docket_starlette_request_context": RequestContext()}
        if isinstance(dependencies, Mapping):
            merged.update(dependencies)
        elif dependencies:
            merged.update(
                {f"docket_starlette_dependency_{i}": d for i, d in enumerate(dependencies)}
            )
        install_log_filter("docket.worker")
        worker = await stack.enter_async_context(
            Worker(docket, dependencies=merged, **worker_options)
        )
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
    the lifespan opened no docket (or to insist on another one). ``worker_options`` go
    to ``Worker`` (``concurrency``, ``name``, ``redelivery_timeout``...). With
    ``handle_signals`` the first SIGTERM/SIGINT drains, a second one exits at once.
    """
    app = import_app(app_path) if isinstance(app_path, str) else app_path
    async with app_worker(
        app, tasks=tasks, url=url, docket_name=docket_name, **worker_options
    ) as worker:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        seen = 0

        def on_signal(signum: int) -> None:
            nonlocal seen
            seen += 1
            if seen == 1:
                logger.warning("Received %s: draining", signal.Signals(signum).name)
                worker.stop()
            else:
                worker.abort()
                if main is not None:
                    main.cancel()

        installed: list[int] = []
        if handle_signals:
            for signum in (int(signal.SIGTERM), int(signal.SIGINT)):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signum, on_signal, signum)
                    installed.append(signum)
        try:
            if until_finished:
                await worker.run_until_finished()
            else:
                await worker.run_forever()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m docket_starlette.worker --app pkg.main:app [--tasks ...]``: a stand-in
    for ``docket worker --app`` while the CLI does not have it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m docket_starlette.worker")
    parser.add_argument("--app", required=True)
    parser.add_argument("--tasks", action="append", default=[])
    parser.add_argument("--url", default=None)
    parser.add_argument("--docket", dest="docket_name", default=None)
    parser.add_argument("--name", default=None)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--until-finished", action="store_true")
    parser.add_argument("--redelivery-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(
        run_with_app(
            args.app,
            tasks=args.tasks,
            url=args.url,
            docket_name=args.docket_name,
            until_finished=args.until_finished,
            name=args.name,
            concurrency=args.concurrency,
            redelivery_timeout=timedelta(seconds=args.redelivery_timeout),
        )
    )


if __name__ == "__main__":
    main()
