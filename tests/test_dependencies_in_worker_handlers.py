"""Retry, Timeout, Perpetual and Cron through the public API.

Every test runs on both backends: the module uses the ``url`` fixture, so conftest's
``docket`` is built on a private real redis-server and on ``memory://`` in turn.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine, Iterable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _helpers import fast_worker

from docket import (
    CurrentExecution,
    Docket,
    Execution,
    ExponentialRetry,
    Perpetual,
    Retry,
    Timeout,
    Worker,
)
from docket.dependencies import Cron, ForcedRetry

# Every test gets conftest's ``docket`` on each backend in turn.
pytestmark = pytest.mark.usefixtures("url")


# Every run here takes milliseconds; a worker still going after this is stuck.
DEADLINE = 15.0


async def finish_within(
    worker: Worker, run: Coroutine[Any, Any, None], keys: Iterable[str] = ()
) -> None:
    """Await one of the worker's run modes, failing the test (instead of hanging the
    suite) if it has not returned by the deadline, with what the worker and the docket
    still hold so the failure says why.

    A run cancelled right after its claim, before its task took a first step, is the
    known way to get here: its task's ``finally`` never runs, so the entry can stay in
    the worker's active set (and ``_drain`` then spins forever, which no timeout
    interrupts), and its stream entry is never acknowledged (so the worker never sees
    the docket empty). Only on this failure path, to let teardown end, are such dead
    entries dropped, after the diagnosis has been taken.
    """
    task = asyncio.create_task(run)
    done, _ = await asyncio.wait({task}, timeout=DEADLINE)
    if task in done:
        task.result()
        return
    docket = worker.docket
    active = worker._active
    in_worker = [
        (mid, execution.key, "ended" if t.done() else "running")
        for mid, (execution, t) in active.items()
    ]
    records: dict[str, str | None] = {}
    for key in keys:
        execution = await docket.get_execution(key)
        records[key] = None if execution is None else execution.state.value
    async with docket.redis() as redis:
        stream_entries = await redis.xlen(docket.keys.stream)
    for mid, _key, state in in_worker:
        if state == "ended":
            active.pop(mid, None)
    worker.abort()
    with suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(task, timeout=DEADLINE)
    pytest.fail(
        f"the worker did not finish within {DEADLINE:.0f}s. Still in the worker's active "
        f"set (message id, key, task): {in_worker}; entries left in the stream: "
        f"{stream_entries}; records: {records}"
    )


async def run_all(docket: Docket, **options: Any) -> None:
    async with fast_worker(docket, **options) as worker:
        await finish_within(worker, worker.run_until_finished())


async def run_bounded(docket: Docket, limits: dict[str, int], **options: Any) -> None:
    async with fast_worker(docket, **options) as worker:
        await finish_within(worker, worker.run_at_most(limits), limits)


# -- Retry -----------------------------------------------------------------------------


async def test_retry_runs_until_success_counting_attempts(docket: Docket) -> None:
    attempts: list[int] = []

    async def task(retry: Retry = Retry(attempts=3)) -> str:
        attempts.append(retry.attempt)
        if retry.attempt < 3:
            raise RuntimeError(f"attempt {retry.attempt}")
        return "finally"

    execution = await docket.add(task)()
    await run_all(docket)
    assert attempts == [1, 2, 3]
    assert await execution.get_result() == "finally"


async def test_retry_gives_up_after_its_attempts(docket: Docket) -> None:
    attempts: list[int] = []

    async def task(retry: Retry = Retry(attempts=2)) -> None:
        attempts.append(retry.attempt)
        raise RuntimeError(f"attempt {retry.attempt}")

    execution = await docket.add(task)()
    await run_all(docket)
    assert attempts == [1, 2]
    with pytest.raises(RuntimeError, match="attempt 2"):
        await execution.get_result()


async def test_no_retry_by_default(docket: Docket) -> None:
    attempts: list[int] = []

    async def task(execution: Execution = CurrentExecution()) -> None:
        attempts.append(execution.attempt)
        raise RuntimeError("once")

    await docket.add(task)()
    await run_all(docket)
    assert attempts == [1]


async def test_retry_waits_its_delay(docket: Docket) -> None:
    moments: list[datetime] = []

    async def task(retry: Retry = Retry(attempts=2, delay=timedelta(milliseconds=300))) -> None:
        moments.append(datetime.now(UTC))
        if retry.attempt == 1:
            raise RuntimeError("first")

    await docket.add(task)()
    await run_all(docket)
    assert len(moments) == 2
    assert moments[1] - moments[0] >= timedelta(milliseconds=300)


async def test_exponential_retry_doubles_its_delay(docket: Docket) -> None:
    delays: list[timedelta] = []

    async def task(
        retry: ExponentialRetry = ExponentialRetry(
            attempts=4,
            minimum_delay=timedelta(milliseconds=20),
            maximum_delay=timedelta(milliseconds=50),
        ),
    ) -> None:
        delays.append(retry.delay)
        if retry.attempt < 4:
            raise RuntimeError("again")

    await docket.add(task)()
    await run_all(docket)
    assert delays == [timedelta(milliseconds=ms) for ms in (20, 40, 50, 50)]


async def test_forcing_a_retry_without_an_error(docket: Docket) -> None:
    moments: list[tuple[int, datetime]] = []

    async def task(retry: Retry = Retry(attempts=3)) -> str:
        moments.append((retry.attempt, datetime.now(UTC)))
        if retry.attempt == 1:
            retry.after(timedelta(milliseconds=200))
        if retry.attempt == 2:
            retry.at(datetime.now(UTC) + timedelta(milliseconds=100))
        return "done"

    execution = await docket.add(task)()
    await run_all(docket)
    assert [attempt for attempt, _ in moments] == [1, 2, 3]
    assert moments[1][1] - moments[0][1] >= timedelta(milliseconds=200)
    assert moments[2][1] - moments[1][1] >= timedelta(milliseconds=100)
    assert await execution.get_result() == "done"


async def test_a_forced_retry_with_no_attempts_left_fails(docket: Docket) -> None:
    async def task(retry: Retry = Retry(attempts=1)) -> None:
        retry.after(timedelta(0))

    execution = await docket.add(task)()
    await run_all(docket)
    with pytest.raises(ForcedRetry):
        await execution.get_result()


# -- Timeout ---------------------------------------------------------------------------


async def test_timeout_fails_a_slow_run_with_timeout_error(docket: Docket) -> None:
    async def task(timeout: Timeout = Timeout(timedelta(milliseconds=100))) -> None:
        await asyncio.sleep(30)

    execution = await docket.add(task)()
    started = datetime.now(UTC)
    await run_all(docket)
    assert datetime.now(UTC) - started < timedelta(seconds=10)
    with pytest.raises(TimeoutError):
        await execution.get_result()


async def test_a_timed_out_run_is_retried(docket: Docket) -> None:
    attempts: list[int] = []

    async def task(
        retry: Retry = Retry(attempts=2),
        timeout: Timeout = Timeout(timedelta(milliseconds=100)),
    ) -> str:
        attempts.append(retry.attempt)
        if retry.attempt == 1:
            await asyncio.sleep(30)
        return "second time lucky"

    execution = await docket.add(task)()
    await run_all(docket)
    assert attempts == [1, 2]
    assert await execution.get_result() == "second time lucky"


async def test_a_run_can_extend_its_timeout(docket: Docket) -> None:
    async def task(timeout: Timeout = Timeout(timedelta(milliseconds=200))) -> str:
        await asyncio.sleep(0.1)
        timeout.extend(timedelta(milliseconds=400))
        await asyncio.sleep(0.3)
        return "made it"

    execution = await docket.add(task)()
    await run_all(docket)
    assert await execution.get_result() == "made it"


# -- Perpetual -------------------------------------------------------------------------


async def test_a_perpetual_task_runs_again_under_its_key(docket: Docket) -> None:
    runs: list[tuple[str, int]] = []

    async def tick(
        execution: Execution = CurrentExecution(),
        perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=10)),
    ) -> None:
        runs.append((execution.key, execution.attempt))

    await docket.add(tick, key="ticker")()
    await run_bounded(docket, {"ticker": 3})
    assert runs == [("ticker", 1)] * 3


async def test_a_perpetual_task_keeps_its_interval(docket: Docket) -> None:
    moments: list[datetime] = []

    async def tick(perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=300))) -> None:
        moments.append(datetime.now(UTC))

    await docket.add(tick, key="spaced")()
    await run_bounded(docket, {"spaced": 3})
    assert len(moments) == 3
    for earlier, later in itertools.pairwise(moments):
        assert later - earlier >= timedelta(milliseconds=290)


async def test_a_perpetual_task_continues_after_failing(docket: Docket) -> None:
    runs: list[int] = []

    async def tick(perpetual: Perpetual = Perpetual()) -> None:
        runs.append(len(runs))
        raise RuntimeError("still going")

    await docket.add(tick, key="failing")()
    await run_bounded(docket, {"failing": 3})
    assert runs == [0, 1, 2]


async def test_perpetuate_changes_the_next_runs_arguments(docket: Docket) -> None:
    seen: list[int] = []

    async def count(n: int, perpetual: Perpetual = Perpetual()) -> None:
        seen.append(n)
        perpetual.perpetuate(n + 1)

    await docket.add(count, key="counter")(1)
    await run_bounded(docket, {"counter": 4})
    assert seen == [1, 2, 3, 4]


async def test_cancel_ends_a_perpetual_chain(docket: Docket) -> None:
    runs: list[int] = []

    async def limited(perpetual: Perpetual = Perpetual()) -> None:
        runs.append(len(runs))
        if len(runs) == 3:
            perpetual.cancel()

    await docket.add(limited, key="limited")()
    await run_all(docket)
    assert runs == [0, 1, 2]


async def test_the_decorator_form_composes_with_docket_add(docket: Docket) -> None:
    runs: list[str] = []

    @docket.add
    @Perpetual(interval=timedelta(milliseconds=10))
    async def heartbeat(execution: Execution = CurrentExecution()) -> None:
        runs.append(execution.key)

    await heartbeat.schedule(key="beat")
    await run_bounded(docket, {"beat": 3})
    assert runs == ["beat"] * 3


async def test_automatic_perpetual_tasks_are_scheduled_by_the_worker(docket: Docket) -> None:
    runs: list[str] = []

    @Perpetual(interval=timedelta(milliseconds=10), automatic=True)
    async def housekeeping(execution: Execution = CurrentExecution()) -> None:
        runs.append(execution.key)

    docket.register(housekeeping)
    await run_bounded(docket, {"housekeeping": 2})
    assert runs == ["housekeeping"] * 2


# -- Cron ------------------------------------------------------------------------------


async def test_cron_runs_on_matching_times(docket: Docket) -> None:
    due: list[datetime] = []

    # cronsim also accepts a leading seconds field; every second keeps this test short.
    async def every_second(
        execution: Execution = CurrentExecution(),
        cron: Cron = Cron("* * * * * *", automatic=False),
    ) -> None:
        due.append(execution.when)

    await docket.add(every_second, key="cron")()
    await run_bounded(docket, {"cron": 3})
    assert len(due) == 3
    # The first run was added for now; the rest were due on whole seconds.
    for moment in due[1:]:
        assert moment.microsecond == 0
    assert due[2] - due[1] == timedelta(seconds=1)
