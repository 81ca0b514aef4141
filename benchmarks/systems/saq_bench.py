"""saq: one ``saq saq_bench.settings`` worker (saq's default ``--workers 1``), ``concurrency``
= the concurrency, every other setting at saq's default. Scheduled tasks use the job's
``scheduled`` epoch seconds (passed unrounded; the Redis queue stores it as a sorted-set
score, so fractions work). saq has no bulk enqueue (``Queue.map`` enqueues one by one and
waits for results), so ``send_many`` is None."""

from __future__ import annotations

import os
from typing import Any

from bench_common import Adapter, async_sleep_body, main, noop_body, venv_command
from saq import Queue

QUEUE_NAME = "bench"


async def noop(ctx: dict[str, Any], *, i: int, t: float = 0.0) -> None:
    noop_body(i, t)


async def sleeper(ctx: dict[str, Any], *, i: int, t: float = 0.0) -> None:
    await async_sleep_body(i, t)


def settings() -> dict[str, Any]:
    """The worker's settings; saq calls this (in the worker, where BENCH_URL is set)."""
    return {
        "queue": Queue.from_url(os.environ["BENCH_URL"], name=QUEUE_NAME),
        "functions": [noop, sleeper],
        "concurrency": int(os.environ["BENCH_CONCURRENCY"]),
    }


_queue: Queue | None = None


async def setup() -> None:
    global _queue
    _queue = Queue.from_url(os.environ["BENCH_URL"], name=QUEUE_NAME)
    await _queue.connect()


async def teardown() -> None:
    if _queue is not None:
        await _queue.disconnect()


async def send(kind: str, i: int, t: float, when: float | None) -> None:
    assert _queue is not None
    function = "noop" if kind == "noop" else "sleeper"
    if when is None:
        await _queue.enqueue(function, i=i, t=t)
    else:
        await _queue.enqueue(function, i=i, t=t, scheduled=when)


def worker_command(concurrency: int) -> list[str]:
    saq_cli = venv_command("saq")
    return [saq_cli, "saq_bench.settings"]


ADAPTER = Adapter(
    name="saq",
    send=send,
    setup=setup,
    teardown=teardown,
    worker_command=worker_command,
)

if __name__ == "__main__":
    main(ADAPTER)
