"""One run of a task as the producer sees it: results, waiting, state, events, progress."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import pytest
from _helpers import in_background, run_all

from docket import (
    Disposition,
    Docket,
    ExecutionCancelled,
    ExecutionProgress,
    ExecutionState,
    Logged,
    Progress,
    Worker,
)

# A subset of the core tests that also runs on a Redis Cluster (see conftest's ``url``).
pytestmark = [pytest.mark.cluster_too, pytest.mark.partitioned_too]


if TYPE_CHECKING:
    # Only type checkers see this name, so annotations using it cannot be resolved at
    # run time (a common pattern; it must not hide the task's parameters).
    from decimal import Decimal as OnlyForTypeCheckers

TERMINAL = {ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.CANCELLED}
WAIT = timedelta(seconds=5)


class ReportedError(Exception):
    """Raised by a task so the caller can tell it from any error of the engine's."""


def later(hours: float = 1) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


async def double(x: int) -> int:
    return x * 2


async def explode(code: int) -> None:
    raise ReportedError(f"exploded with code {code}")


async def idle() -> None:
    pass


# --- get_result -----------------------------------------------------------------------


async def test_get_result_returns_the_value(url: str, docket: Docket, worker: Worker) -> None:
    execution = await docket.add(double)(21)
    await worker.run_until_finished()

    assert await execution.get_result(timeout=WAIT) == 42


async def test_get_result_waits_for_a_task_that_is_still_running(
    docket: Docket, worker: Worker
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_double(x: int) -> int:
        started.set()
        await release.wait()
        return x * 2

    execution = await docket.add(slow_double)(8)
    async with in_background(worker, release):
        await asyncio.wait_for(started.wait(), 5)
        waiting = asyncio.create_task(execution.get_result(timeout=WAIT))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        release.set()
        assert await waiting == 16


async def test_get_result_reraises_the_tasks_exception(
    url: str, docket: Docket, worker: Worker
) -> None:
    execution = await docket.add(explode)(7)
    await worker.run_until_finished()

    with pytest.raises(ReportedError, match="exploded with code 7"):
        await execution.get_result(timeout=WAIT)


async def test_get_result_of_a_cancelled_task_raises_execution_cancelled(
    url: str, docket: Docket
) -> None:
    execution = await docket.add(idle, when=later())()
    await docket.cancel(execution.key)

    with pytest.raises(ExecutionCancelled):
        await execution.get_result(timeout=WAIT)


async def test_get_result_with_a_timeout_raises_while_pending(url: str, docket: Docket) -> None:
    execution = await docket.add(idle, when=later())()

    began = time.monotonic()
    with pytest.raises(TimeoutError):
        await execution.get_result(timeout=timedelta(milliseconds=200))
    waited = time.monotonic() - began

    assert 0.15 <= waited < 3
    stored = await docket.get_execution(execution.key)
    assert stored is not None
    assert stored.state == ExecutionState.SCHEDULED


async def test_get_result_with_a_deadline_raises_while_pending(url: str, docket: Docket) -> None:
    execution = await docket.add(idle, when=later())()

    began = time.monotonic()
    with pytest.raises(TimeoutError):
        await execution.get_result(deadline=datetime.now(UTC) + timedelta(milliseconds=200))
    waited = time.monotonic() - began

    assert 0.15 <= waited < 3
    stored = await docket.get_execution(execution.key)
    assert stored is not None
    assert stored.state == ExecutionState.SCHEDULED


async def test_get_result_with_both_timeout_and_deadline_raises_value_error(
    docket: Docket,
) -> None:
    execution = await docket.add(idle, when=later())()

    with pytest.raises(ValueError):
        await execution.get_result(
            timeout=timedelta(seconds=1), deadline=datetime.now(UTC) + timedelta(seconds=1)
        )


# --- sync -----------------------------------------------------------------------------


async def test_sync_refreshes_state_worker_and_times(docket: Docket, worker: Worker) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        started.set()
        await release.wait()

    execution = await docket.add(hold)()
    assert execution.state == ExecutionState.QUEUED
    assert execution.worker is None
    assert execution.started_at is None

    async with in_background(worker, release) as run:
        await asyncio.wait_for(started.wait(), 5)
        await execution.sync()

        assert execution.state == ExecutionState.RUNNING
        assert execution.worker == worker.name
        assert execution.started_at is not None
        assert execution.completed_at is None

        release.set()
        await asyncio.wait_for(run, 5)

    await execution.sync()
    assert execution.state == ExecutionState.COMPLETED
    assert execution.completed_at is not None
    assert execution.completed_at >= execution.started_at


# --- subscribe ------------------------------------------------------------------------


async def test_subscribe_yields_the_current_state_then_live_state_changes(
    url: str, docket: Docket, worker: Worker
) -> None:
    # Due far enough ahead that a loaded machine still reads it before it moves.
    execution = await docket.add(double, when=datetime.now(UTC) + timedelta(seconds=1))(1)
    events = execution.subscribe()
    try:
        first = await asyncio.wait_for(anext(events), 5)
        assert first["type"] == "state"
        assert first["key"] == execution.key
        assert first["state"] == ExecutionState.SCHEDULED

        states: list[Any] = []
        running_worker: Any = None
        async with in_background(worker):

            async def collect() -> None:
                nonlocal running_worker
                async for event in events:
                    if event["type"] != "state":
                        continue
                    states.append(event["state"])
                    if event["state"] == ExecutionState.RUNNING:
                        running_worker = event.get("worker")
                    if event["state"] in TERMINAL:
                        return

            await asyncio.wait_for(collect(), 5)
    finally:
        await events.aclose()

    assert states == [ExecutionState.QUEUED, ExecutionState.RUNNING, ExecutionState.COMPLETED]
    assert running_worker == worker.name


async def steps(count: int, progress: ExecutionProgress = Progress()) -> None:
    await progress.set_total(count)
    for _ in range(count):
        await progress.increment()


async def test_subscribe_yields_progress_events(url: str, docket: Docket, worker: Worker) -> None:
    execution = await docket.add(steps)(3)
    events = execution.subscribe()
    progress: list[Any] = []
    try:
        first = await asyncio.wait_for(anext(events), 5)
        assert first["type"] == "state"
        assert first["state"] == ExecutionState.QUEUED
        # Then where its progress stands: nothing reported before it runs.
        second = await asyncio.wait_for(anext(events), 5)
        assert second["type"] == "progress"
        assert second["current"] is None

        async with in_background(worker):

            async def collect() -> None:
                async for event in events:
                    if event["type"] == "progress":
                        progress.append(event)
                    elif event["state"] in TERMINAL:
                        return

            await asyncio.wait_for(collect(), 5)
    finally:
        await events.aclose()

    assert len(progress) >= 2
    assert all(event["key"] == execution.key for event in progress)
    currents = [event["current"] for event in progress]
    assert currents == sorted(currents)
    assert progress[-1]["current"] == 3
    assert progress[-1]["total"] == 3


# --- Progress -------------------------------------------------------------------------


async def test_progress_reported_by_a_task_is_visible_after_sync(
    docket: Docket, worker: Worker
) -> None:
    reported, release = asyncio.Event(), asyncio.Event()

    async def importer(rows: int, progress: ExecutionProgress = Progress()) -> None:
        await progress.set_total(rows)
        await progress.increment(3)
        await progress.set_message("three rows in")
        reported.set()
        await release.wait()

    execution = await docket.add(importer)(10)
    assert execution.progress.current is None

    async with in_background(worker, release) as run:
        await asyncio.wait_for(reported.wait(), 5)
        await execution.sync()

        assert execution.progress.current == 3
        assert execution.progress.total == 10
        assert execution.progress.message == "three rows in"
        assert execution.progress.updated_at is not None

        release.set()
        await asyncio.wait_for(run, 5)


async def bad_total(progress: ExecutionProgress = Progress()) -> None:
    await progress.set_total(0)


async def bad_increment(progress: ExecutionProgress = Progress()) -> None:
    await progress.increment(0)


@pytest.mark.parametrize("task", [bad_total, bad_increment])
async def test_progress_refuses_counts_below_one(docket: Docket, worker: Worker, task: Any) -> None:
    execution = await docket.add(task)()
    await worker.run_until_finished()

    with pytest.raises(ValueError):
        await execution.get_result(timeout=WAIT)


# --- is_superseded --------------------------------------------------------------------


async def test_is_superseded_after_a_replace(url: str, docket: Docket) -> None:
    first = await docket.add(double, when=later(), key="superseded")(1)
    assert not await first.is_superseded()

    second = await docket.replace(double, later(2), "superseded")(2)

    assert second.disposition == Disposition.SCHEDULED
    assert await first.is_superseded()
    assert not await second.is_superseded()


# --- call_repr and get_argument -------------------------------------------------------


async def greet(
    name: Annotated[str, Logged],
    secret: str,
    *,
    token: str,
    shown: Annotated[int, Logged] = 0,
) -> None:
    pass


async def count_items(items: Annotated[list[str], Logged(length_only=True)]) -> None:
    pass


async def test_call_repr_shows_only_logged_arguments(docket: Docket) -> None:
    execution = await docket.add(greet, key="greeting")(
        "ada", "hunter2-secret", token="tok-123", shown=7
    )

    text = execution.call_repr()

    assert "hunter2-secret" not in text
    assert "tok-123" not in text
    assert text == "greet('ada', ..., token=..., shown=7){greeting}"


async def test_call_repr_with_logged_length_only_shows_the_length(docket: Docket) -> None:
    execution = await docket.add(count_items, key="items")(items=["alpha", "beta", "gamma"])

    text = execution.call_repr()

    assert "alpha" not in text
    assert "gamma" not in text
    assert "3" in text
    assert text.startswith("count_items(items=")
    assert text.endswith("){items}")


async def test_get_argument_by_parameter_name(docket: Docket) -> None:
    execution = await docket.add(greet)("ada", "hunter2", token="tok", shown=9)

    assert execution.get_argument("name") == "ada"
    assert execution.get_argument("secret") == "hunter2"
    assert execution.get_argument("token") == "tok"
    assert execution.get_argument("shown") == 9


async def transfer(source: str, target: OnlyForTypeCheckers, *, note: str = "") -> None:
    pass


async def test_get_argument_when_annotations_cannot_be_resolved(docket: Docket) -> None:
    execution = await docket.add(transfer)("from-account", "to-account", note="rent")

    assert execution.get_argument("source") == "from-account"
    assert execution.get_argument("target") == "to-account"
    assert execution.get_argument("note") == "rent"


async def test_following_goes_through_the_released_pubsub_seam_and_a_finished_task_skips_it(
    docket: Docket,
) -> None:
    # Code written for the released docket replaces ``Docket._pubsub`` on a docket to see
    # when a pub/sub connection (one more pooled Redis connection) is opened.
    opened: list[object] = []
    original = docket._pubsub

    def counting() -> Any:
        connection = original()
        opened.append(connection)
        return connection

    docket._pubsub = counting  # type: ignore[method-assign]

    async def answer() -> int:
        return 42

    finished = await docket.add(answer)()
    await run_all(docket)
    assert await finished.get_result() == 42
    assert [event async for event in finished.subscribe()] != []
    assert opened == []

    later = await docket.add(answer, when=datetime.now(UTC) + timedelta(hours=1))()
    subscribed = asyncio.Event()

    async def follow() -> None:
        async for _ in later.subscribe(ready=subscribed):
            pass

    following = asyncio.create_task(follow())
    await asyncio.wait_for(subscribed.wait(), 5)
    following.cancel()
    with pytest.raises(asyncio.CancelledError):
        await following
    assert len(opened) == 1


async def test_get_result_after_the_callers_own_subscribe_saw_the_end(
    url: str, docket: Docket, worker: Worker
) -> None:
    # The events told this object the run completed; where its result is, they do not.
    async def counted(count: int, progress: ExecutionProgress = Progress()) -> int:
        await steps(count, progress)
        return count

    execution = await docket.add(counted)(2)
    events = execution.subscribe()
    try:
        async with in_background(worker):
            async for event in events:
                if event["type"] == "state" and event["state"] in TERMINAL:
                    break
    finally:
        await events.aclose()
    assert execution.state is ExecutionState.COMPLETED
    assert await execution.get_result() == 2
