"""What ``Worker.run`` (the ``docket worker`` command) does: open the docket, register
the task collections, run one worker until it is told to stop, with the signal handling
and the side endpoints (health check, Prometheus metrics) a service needs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ._signals import shutdown_signals
from ._worker_options import WorkerOptions
from .docket import Docket

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger("docket.worker")


def _task_list(docket: Docket) -> list[str]:
    return [f"* {name}" for name in docket.tasks]


async def run_worker(
    worker_class: type[Worker],
    options: WorkerOptions,
    *,
    docket_name: str,
    url: str,
    until_finished: bool,
    healthcheck_port: int | None,
    metrics_port: int | None,
    tasks: Sequence[str],
    partitions: int | None = None,
    execution_ttl: timedelta | None = None,
) -> None:
    """Run one worker of ``docket_name`` at ``url`` until SIGTERM/SIGINT (or, with
    ``until_finished``, until nothing is left to do).

    The first signal stops claiming and lets in-flight tasks finish; a second one
    cancels them (they are redelivered after ``redelivery_timeout``) and exits at once.
    """
    # Passed only when given, so the Docket's own default (or a subclass's) applies.
    docket_options: dict[str, Any] = {}
    if execution_ttl is not None:
        docket_options["execution_ttl"] = execution_ttl
    metrics = None
    if metrics_port is not None:
        from .metrics_server import serve_metrics

        # Before connecting: a missing extra or a taken port fails at once.
        metrics = serve_metrics(metrics_port)
    try:
        async with Docket(
            name=docket_name,
            url=url,
            enable_internal_instrumentation=options.enable_internal_instrumentation,
            partitions=partitions,
            **docket_options,
        ) as docket:
            for collection in tasks:
                docket.register_collection(collection)
            worker = worker_class(docket, **options.as_kwargs())
            await _serve(worker, until_finished, healthcheck_port)
    finally:
        if metrics is not None:
            metrics.close()


async def _serve(worker: Worker, until_finished: bool, healthcheck_port: int | None) -> None:
    main = asyncio.current_task()

    def exit_now() -> None:
        if main is not None:
            main.cancel()

    with shutdown_signals(lambda: worker, asyncio.get_running_loop(), on_abort=exit_now):
        async with worker:
            logger.info(
                "Starting worker %r with the following tasks:\n%s",
                worker.name,
                "\n".join(_task_list(worker.docket)),
            )
            await run_with_healthcheck(worker, until_finished, healthcheck_port)


async def run_with_healthcheck(
    worker: Worker, until_finished: bool, healthcheck_port: int | None
) -> None:
    """Run the entered ``worker`` until it stops (or, with ``until_finished``, until
    nothing is left), answering probes on ``healthcheck_port`` meanwhile. Every entry
    point that has a ``--healthcheck-port`` runs its worker through this."""
    from ._healthcheck import serve_healthcheck

    health = None
    if healthcheck_port is not None:
        health = await serve_healthcheck(worker, healthcheck_port)
    try:
        if until_finished:
            await worker.run_until_finished()
        else:
            await worker.run_forever()
    finally:
        if health is not None:
            health.close()
