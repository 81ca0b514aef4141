"""Running a docket worker inside a Django process (what ``docket_worker`` does)."""

from __future__ import annotations

import concurrent.futures
import logging
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from django.db import connections

from docket import Worker

from .conf import DEFAULT_ALIAS, WorkerSettings, docket_settings
from .dockets import build_docket
from .portal import get_portal
from .runtime import close_slots, configure_slots

logger = logging.getLogger("docket_django.worker")


@dataclass
class WorkerRun:
    alias: str = DEFAULT_ALIAS
    options: WorkerSettings = field(default_factory=WorkerSettings)
    until_finished: bool = False
    max_tasks: int | None = None
    healthcheck_port: int | None = None
    metrics_port: int | None = None
    extra_tasks: Sequence[str] = ()
    worker: Worker | None = None
    stop_requested: int = 0

    async def serve(self) -> None:
        from django.utils.module_loading import import_string

        options = self.options
        docket = build_docket(self.alias)
        for collection in (*options.tasks, *self.extra_tasks):
            docket.register_collection(collection)
        async with docket:
            configure_slots(options.sync_threads or options.concurrency)
            try:
                worker = Worker(
                    docket,
                    name=options.name,
                    concurrency=options.concurrency,
                    redelivery_timeout=options.redelivery_timeout,
                    reconnection_delay=options.reconnection_delay,
                    minimum_check_interval=options.minimum_check_interval,
                    scheduling_resolution=options.scheduling_resolution,
                    schedule_automatic_tasks=options.schedule_automatic_tasks,
                    fallback_task=(
                        import_string(options.fallback_task.replace(":", "."))
                        if options.fallback_task
                        else None
                    ),
                    dependencies=(
                        import_string(options.dependencies.replace(":", "."))
                        if options.dependencies
                        else None
                    ),
                    message_batch=options.message_batch,
                    max_deliveries=options.max_deliveries,
                    max_tasks=self.max_tasks,
                )
                self.worker = worker
                health = None
                async with worker:
                    if self.stop_requested:
                        worker.stop()
                    if self.healthcheck_port is not None:
                        from docket.healthcheck import serve_healthcheck

                        health = await serve_healthcheck(worker, self.healthcheck_port)
                    if self.metrics_port is not None:
                        _serve_metrics(self.metrics_port)
                    logger.info(
                        "Worker %s started on docket %r (%s), %d tasks registered",
                        worker.name,
                        docket.name,
                        self.alias,
                        len(docket.tasks),
                    )
                    try:
                        if self.until_finished:
                            await worker.run_until_finished()
                        else:
                            await worker.run_forever()
                    finally:
                        if health is not None:
                            health.close()
            finally:
                await close_slots()
        logger.info("Worker stopped")

    def request_stop(self) -> None:
        """Called from the main thread's signal handler."""
        self.stop_requested += 1
        worker = self.worker
        if worker is None:
            return
        loop = get_portal().loop
        if self.stop_requested == 1:
            loop.call_soon_threadsafe(worker.stop)
        else:
            loop.call_soon_threadsafe(worker.abort)


def _serve_metrics(port: int) -> None:
    # docket's own endpoint: it renders docket's metrics, not just the process defaults.
    from docket.metrics_server import MetricsUnavailable, serve_metrics

    try:
        serve_metrics(port)
    except MetricsUnavailable as error:
        logger.warning("%s", error)
        return
    logger.info("Serving Prometheus metrics on port %d", port)


def run_worker(run: WorkerRun) -> None:
    """Run ``run`` on the portal loop and block until it ends. In the main thread,
    the first SIGTERM/SIGINT drains in-flight tasks (exit 0), a second one aborts."""
    # Connections opened while starting up (checks, imports) are not the tasks'.
    connections.close_all()
    portal = get_portal()
    future = portal.submit(run.serve())
    installed: list[tuple[int, Any]] = []
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if run.stop_requested == 0:
                logger.warning("Received %s: finishing in-flight tasks (again to abort)", name)
            else:
                logger.warning("Received %s again: aborting", name)
            run.request_stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            installed.append((signum, signal.signal(signum, on_signal)))
    try:
        while True:
            try:
                future.result(timeout=0.2)
                break
            except TimeoutError:
                continue
            except concurrent.futures.CancelledError:
                # A cross-thread future's own CancelledError, not asyncio's.
                break
    finally:
        for number, previous in installed:
            signal.signal(number, previous)


def worker_settings(alias: str, **overrides: Any) -> WorkerSettings:
    base = docket_settings(alias).worker
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def seconds(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)
