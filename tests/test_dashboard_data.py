"""``docket_dashboard``'s data layer against real Redis (and the memory engine): the
overview, the queue-depth samples, task pages, and how the pages write times."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated

import pytest

from docket import Docket, Logged, Progress, Worker
from docket_dashboard import data
from docket_dashboard.chart import chart
from docket_dashboard.formatting import relative, span

pytestmark = pytest.mark.timeout(60)


async def add(a: Annotated[int, Logged], b: int) -> int:
    return a + b


async def fail(reason: Annotated[str, Logged]) -> None:
    raise ValueError(reason)


async def test_depth_samples_are_throttled_and_shared(url: str, docket: Docket) -> None:
    counts = await data.inspection.count_states(docket)
    first = await data.depth_samples(docket, counts)
    assert len(first) == 1
    # Another dashboard (or a refresh) within SAMPLE_EVERY adds nothing.
    assert len(await data.depth_samples(docket, counts)) == 1
    async with docket.redis() as redis:
        await redis.delete(docket.keys.external("dashboard:depth:lock"))
        # A member that is not a sample is skipped, not an error.
        await redis.zadd(docket.keys.external("dashboard:depth"), {"garbage": 1e12})
    await docket.add(add, key="one")(1, 2)
    samples = await data.depth_samples(docket, await data.inspection.count_states(docket))
    assert [sample.queued for sample in samples] == [0, 1]


def test_the_chart_covers_the_samples_time() -> None:
    now = datetime.now(UTC)
    samples = [
        data.DepthSample(now - timedelta(minutes=10), 0, 4, 0),
        data.DepthSample(now, 0, 2, 1),
    ]
    drawn = chart(samples, now)
    assert drawn.window == timedelta(minutes=10)
    assert drawn.peak == 4
    # The oldest at the left edge, the newest at the right; y grows downwards.
    assert drawn.lines["queued"] == "0.0,2.0 600.0,70.0"
    assert chart([], now).window == timedelta(minutes=1)


async def test_overview_lists_workers_with_what_they_run(url: str, docket: Docket) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def hold(progress: Progress = Progress()) -> None:
        await progress.set_total(2)
        started.set()
        await release.wait()

    docket.register(hold)
    await docket.add(hold, key="holding")()
    async with Worker(docket, minimum_check_interval=timedelta(milliseconds=5)) as worker:
        run = asyncio.create_task(worker.run_until_finished())
        try:
            await asyncio.wait_for(started.wait(), 10)
            overview = await data.overview(docket)
            assert overview.counts.running == 1
            [row] = overview.workers
            assert row.name == worker.name
            assert [e.key for e in row.running] == ["holding"]
            assert "hold" in row.tasks
        finally:
            release.set()
            await asyncio.wait_for(run, 10)


async def test_task_pages(url: str, docket: Docket, worker: Worker) -> None:
    await docket.add(add, key="sum")(2, 3)
    await docket.add(fail, key="broken")("no disk")
    await worker.run_until_finished()

    done = await data.task_page(docket, "sum")
    assert done is not None
    assert done.result == "5"
    assert [step for step, _, _ in done.timeline] == ["due", "started", "completed"]

    failed = await data.task_page(docket, "broken")
    assert failed is not None
    assert failed.failure is not None and failed.failure.key == "broken"
    # The message is gone, the failures list kept its arguments: Logged ones shown.
    assert failed.arguments == [("reason", "'no disk'")]
    assert failed.execution.traceback is not None
    assert "ValueError: no disk" in failed.execution.traceback

    assert await data.task_page(docket, "never-added") is None


async def test_a_queued_tasks_page_shows_only_logged_arguments(url: str, docket: Docket) -> None:
    await docket.add(add, key="later", when=datetime.now(UTC) + timedelta(hours=1))(7, 8)
    page = await data.task_page(docket, "later")
    assert page is not None
    assert page.arguments == [("a", "7"), ("b", None)]


def test_relative_times() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert relative(now + timedelta(seconds=53), now) == "in 53 s"
    assert relative(now - timedelta(minutes=2, seconds=5), now) == "2 min 5 s ago"
    assert relative(now - timedelta(hours=3), now) == "3 h ago"
    assert relative(now + timedelta(milliseconds=200), now) == "just now"
    assert relative(None, now) == "—"
    assert span(0.25) == "250 ms"
    assert span(timedelta(days=2, hours=1)) == "2 d 1 h"
