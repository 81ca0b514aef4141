"""A worker on the portal's default docket, running until the queue is empty, for the
admin tests that need tasks to run while pages are read."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from docket import Worker
from docket_django.portal import get_portal


@contextmanager
def portal_worker() -> Iterator[Worker]:
    """Start it, yield it while it works, and wait for it to run out of work."""

    async def start() -> tuple[Worker, asyncio.Task[Any]]:
        docket = await get_portal().docket("default")
        worker = Worker(
            docket,
            schedule_automatic_tasks=False,
            minimum_check_interval=timedelta(milliseconds=10),
        )
        await worker.__aenter__()
        return worker, asyncio.create_task(worker.run_until_finished())

    worker, running = get_portal().run(start())
    try:
        yield worker
    finally:

        async def finish() -> None:
            await running
            await worker.__aexit__(None, None, None)

        get_portal().run(finish(), timeout=30)
