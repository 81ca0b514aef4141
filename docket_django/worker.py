"""Running a docket worker inside a Django process (what ``docket_worker`` does)."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import connections

from docket import Worker
from docket.integration import SignalsSeen, run_with_healthcheck, shutdown_signals
from docket.metrics_server import MetricsServer, MetricsUnavailable, serve_metrics

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
    healthcheck_port: int | None = None
    metrics_port: int | None = None
    extra_tasks: Sequence[str] = ()
    worker: Worker | None = None
    """The running worker, once it has started (what the shutdown signals reach)."""

    async def serve(self, signals: SignalsSeen | None = None) -> None:
        """Run the worker until it stops; ``signals`` are the shutdown signals seen so
        far, which cannot reach a worker that did not exist yet when they came."""
        options = self.options
        worker_options = options.worker_options()
        docket = build_docket(
            self.alias,
            enable_internal_instrumentation=worker_options.enable_internal_instrumentation,
        )
        for collection in (*options.tasks, *self.extra_tasks):
            docket.register_collection(collection)
        async with docket:
            configure_slots(options.sync_threads or options.concurrency)
            try:
                worker = Worker(docket, **worker_options.as_kwargs())
                async with worker:
                    self.worker = worker
                    if signals is not None and signals.count:
                        worker.stop()
                    await self._run(worker)
            finally:
                await close_slots()
        logger.info("Worker stopped")

    async def _run(self, worker: Worker) -> None:
        metrics = _serve_metrics(self.metrics_port) if self.metrics_port is not None else None
        logger.info(
            "Worker %s started on docket %r (%s), %d tasks registered",
            worker.name,
            worker.docket.name,
            self.alias,
            len(worker.docket.tasks),
        )
        try:
            await run_with_healthcheck(worker, self.until_finished, self.healthcheck_port)
        finally:
            if metrics is not None:
                metrics.close()


def _serve_metrics(port: int) -> MetricsServer | None:
    # docket's own endpoint: it renders docket's metrics, not just the process defaults.
    # Unlike ``docket worker``, a missing extra does not stop the worker: it is a warning.
    try:
        return serve_metrics(port)
    except MetricsUnavailable as error:
        logger.warning("%s", error)
        return None


def run_worker(run: WorkerRun) -> None:
    """Run ``run`` on the portal loop and block until it ends. In the main thread,
    the first SIGTERM/SIGINT drains in-flight tasks (exit 0), a second one aborts."""
    # Connections opened while starting up (checks, imports) are not the tasks'.
    connections.close_all()
    portal = get_portal()
    with shutdown_signals(lambda: run.worker, portal.loop) as signals:
        future = portal.submit(run.serve(signals))
        while True:
            # A timeout, so that this thread keeps taking the signals.
            try:
                future.result(timeout=0.2)
                break
            except TimeoutError:
                continue
            except concurrent.futures.CancelledError:
                # A cross-thread future's own CancelledError, not asyncio's.
                break


def worker_settings(alias: str, **overrides: Any) -> WorkerSettings:
    """``alias``'s worker settings with ``overrides`` (None: not given) on top."""
    base = docket_settings(alias).worker
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
