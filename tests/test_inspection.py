"""``docket.inspection``: the paged readers a dashboard builds on, against real Redis
(and the memory engine, and 3 partitions): counts by state, and the queued, scheduled
and running lists page by page, filtered by task, in the order workers take them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from docket import Docket, ExecutionState, Priority, Worker
from docket.dependencies import Progress
from docket.inspection import (
    count_states,
    list_queued,
    list_running,
    list_scheduled,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.partitioned_too]


async def send(number: int) -> None: ...


async def bill(number: int) -> None: ...


async def test_counts_by_state(url: str, docket: Docket) -> None:
    for number in range(7):
        await docket.add(send, key=f"now-{number}")(number)
    later = datetime.now(UTC) + timedelta(hours=1)
    for number in range(3):
        await docket.add(send, when=later, key=f"later-{number}")(number)
    counts = await count_states(docket)
    assert (counts.queued, counts.scheduled, counts.running, counts.dead_letters) == (7, 3, 0, 0)
    assert counts.total == 10


async def test_queued_pages_cover_every_task_once_in_order(url: str, docket: Docket) -> None:
    keys = [f"task-{number:03}" for number in range(23)]
    for number, key in enumerate(keys):
        await docket.add(send, key=key)(number)
    seen: list[str] = []
    page = await list_queued(docket, count=10)
    pages = 1
    while True:
        assert all(e.state == ExecutionState.QUEUED for e in page.executions)
        seen += [e.key for e in page.executions]
        if page.next is None:
            break
        page = await list_queued(docket, count=10, after=page.next)
        pages += 1
    assert sorted(seen) == keys and len(set(seen)) == len(keys)  # each once
    if docket.partitions == 1:
        # Oldest first. Partitions' streams number their entries each on their own, so
        # across them, order within one millisecond is not known.
        assert seen == keys
    assert pages == 3


async def test_queued_lists_higher_priority_first(url: str, docket: Docket) -> None:
    await docket.add(send, key="normal")(1)
    await docket.add(send, key="low", priority=Priority.LOW)(2)
    await docket.add(send, key="high", priority=Priority.HIGH)(3)
    page = await list_queued(docket)
    assert [e.key for e in page.executions] == ["high", "normal", "low"]
    assert page.next is None


async def test_filtering_by_task_and_the_scan_budget(url: str, docket: Docket) -> None:
    for number in range(30):
        await docket.add(bill if number % 10 == 0 else send, key=f"t-{number:02}")(number)
    page = await list_queued(docket, task="bill")
    assert sorted(e.key for e in page.executions) == ["t-00", "t-10", "t-20"]
    assert page.tasks == {"bill", "send"}
    assert page.next is None

    # A budget smaller than the list: the page says it stopped, and goes on from there.
    first = await list_queued(docket, task="bill", count=5, budget=12)
    assert first.budget_spent and first.scanned == 12
    assert first.next is not None
    rest = await list_queued(docket, task="bill", count=5, after=first.next)
    assert not rest.budget_spent
    found = [e.key for e in first.executions + rest.executions]
    assert sorted(found) == ["t-00", "t-10", "t-20"]
    if docket.partitions == 1:
        assert [e.key for e in first.executions] == ["t-00", "t-10"]


async def test_scheduled_soonest_first_with_pages(url: str, docket: Docket) -> None:
    start = datetime.now(UTC) + timedelta(hours=1)
    for number in reversed(range(12)):
        await docket.add(send, when=start + timedelta(minutes=number), key=f"s-{number:02}")(number)
    first = await list_scheduled(docket, count=5)
    assert [e.key for e in first.executions] == [f"s-{n:02}" for n in range(5)]
    assert all(e.state == ExecutionState.SCHEDULED for e in first.executions)
    second = await list_scheduled(docket, count=5, after=first.next)
    third = await list_scheduled(docket, count=5, after=second.next)
    assert [e.key for e in second.executions + third.executions] == [
        f"s-{n:02}" for n in range(5, 12)
    ]
    assert third.next is None


async def test_a_page_token_of_another_list_is_refused(url: str, docket: Docket) -> None:
    for number in range(3):
        await docket.add(send, key=f"q-{number}")(number)
    page = await list_queued(docket, count=1)
    assert page.next is not None
    with pytest.raises(ValueError, match="not a page token of this list"):
        await list_scheduled(docket, after=page.next)
    with pytest.raises(ValueError, match="not a page token"):
        await list_queued(docket, after="garbage!")
    with pytest.raises(ValueError, match="count must be from 1 to 500"):
        await list_queued(docket, count=0)


async def test_running_lists_what_workers_hold_with_progress(
    url: str, docket: Docket, worker: Worker
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def crunch(items: int, progress: Progress = Progress()) -> None:
        await progress.set_total(items)
        await progress.increment(3)
        started.set()
        await release.wait()

    docket.register(crunch)
    await docket.add(crunch, key="crunching")(10)
    await docket.add(send, key="waiting", when=datetime.now(UTC) + timedelta(hours=1))(1)
    run = asyncio.create_task(worker.run_until_finished())
    try:
        await asyncio.wait_for(started.wait(), 10)
        page = await list_running(docket)
        [running] = page.executions
        assert running.key == "crunching"
        assert running.state == ExecutionState.RUNNING
        assert running.worker == worker.name
        assert (running.progress.current, running.progress.total) == (3, 10)
        counts = await count_states(docket)
        assert (counts.running, counts.queued, counts.scheduled) == (1, 0, 1)
        # A running task's message is still on its stream: it is not listed as queued.
        assert (await list_queued(docket)).executions == []
    finally:
        release.set()
        await docket.cancel("waiting")
        await asyncio.wait_for(run, 10)
    assert (await list_running(docket)).executions == []
