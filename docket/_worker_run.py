"""What ``Worker.run`` (the ``docket worker`` command) does: open the docket, register
the task collections, run one worker until it is told to stop, with the signal handling
and the side endpoints (health check, Prometheus metrics) a service needs."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .docket import Docket

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger("docket.worker")


def import_path(path: str, what: str) -> Any:
    """The object at ``package.module:name``."""
    module_name, colon, member = path.partition(":")
    if not colon or not module_name or not member:
        raise ValueError(f"{what} {path!r} must look like 'package.module:name'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, member)
    except AttributeError:
        raise ValueError(
            f"{what} {path!r}: module {module_name!r} has no member {member!r}"
        ) from None


def _task_list(docket: Docket) -> list[str]:
    return [f"* {name}" for name in docket.tasks]


async def run_worker(
    worker_class: type[Worker],
    *,
    docket_name: str,
    url: str,
    name: str | None,
    concurrency: int,
    redelivery_timeout: timedelta,
    reconnection_delay: timedelta,
    minimum_check_interval: timedelta,
    scheduling_resolution: timedelta,
    schedule_automatic_tasks: bool,
    enable_internal_instrumentation: bool,
    until_finished: bool,
    healthcheck_port: int | None,
    metrics_port: int | None,
    tasks: Sequence[str],
    fallback_task: str | Callable[..., Any] | None,
    message_batch: int,
    dependencies: Mapping[str, Any] | Sequence[Any] | str | None,
    max_deliveries: int,
) -> None:
    """Run one worker of ``docket_name`` at ``url`` until SIGTERM/SIGINT (or, with
    ``until_finished``, until nothing is left to do).

    The first signal stops claiming and lets in-flight tasks finish; a second one
    cancels them (they are redelivered after ``redelivery_timeout``) and exits at once.
    """
    fallback = fallback_task
    if isinstance(fallback, str):
        fallback = import_path(fallback, "fallback task")
    if dependencies == "":
        dependencies = None
    elif isinstance(dependencies, str):
        dependencies = import_path(dependencies, "worker dependencies")

    metrics = None
    if metrics_port is not None:
        from .metrics_server import serve_metrics

        # Before connecting: a missing extra or a taken port fails at once.
        metrics = serve_metrics(metrics_port)
    try:
        async with Docket(
            name=docket_name,
            url=url,
            enable_internal_instrumentation=enable_internal_instrumentation,
        ) as docket:
            for collection in tasks:
                docket.register_collection(collection)
            worker = worker_class(
                docket,
                name=name,
                concurrency=concurrency,
                redelivery_timeout=redelivery_timeout,
                reconnection_delay=reconnection_delay,
                minimum_check_interval=minimum_check_interval,
                scheduling_resolution=scheduling_resolution,
                schedule_automatic_tasks=schedule_automatic_tasks,
                enable_internal_instrumentation=enable_internal_instrumentation,
                fallback_task=fallback,
                dependencies=dependencies,
                message_batch=message_batch,
                max_deliveries=max_deliveries,
            )
            await _serve(worker, until_finished, healthcheck_port)
    finally:
        if metrics is not None:
            metrics.close()


async def _serve(worker: Worker, until_finished: bool, healthcheck_port: int | None) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        signame = signal.Signals(signum).name
        if signals_seen == 1:
            logger.info(
                "Received %s, initiating graceful shutdown (send it again to exit now)",
                signame,
            )
            # The worker's own bookkeeping of its runs; reading it here only counts them.
            active = len(worker._active)
            if active:
                logger.info("Shutdown requested, finishing %d active tasks...", active)
            worker.stop()
        else:
            logger.warning("Received %s again: exiting now", signame)
            worker.abort()
            if main is not None:
                main.cancel()

    handled: list[signal.Signals] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows, threads
            continue
        handled.append(signum)
    health = None
    try:
        async with worker:
            logger.info(
                "Starting worker %r with the following tasks:\n%s",
                worker.name,
                "\n".join(_task_list(worker.docket)),
            )
            if healthcheck_port is not None:
                from ._healthcheck import serve_healthcheck

                health = await serve_healthcheck(worker, healthcheck_port)
            if until_finished:
                await worker.run_until_finished()
            else:
                await worker.run_forever()
    finally:
        if health is not None:
            health.close()
        for signum in handled:
            loop.remove_signal_handler(signum)
