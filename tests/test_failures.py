"""``docket.failures``: the recent-failures stream, and the tracebacks kept in records.

Runs fail here the way they do in production: their task raises, and a worker settles
them. Both backends, and a partitioned docket.
"""

from __future__ import annotations

import inspect
import logging
from datetime import UTC, datetime, timedelta

import pytest

import docket.failures as failures_module
import docket.worker as worker_module
from docket import Docket, Execution, ExecutionState, Retry, Worker
from docket.dead_letters import is_entry_id
from docket.execution import TaskFunction
from docket.failures import (
    count_failures,
    get_failure,
    list_failures,
    purge_failures,
    retry,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.partitioned_too]

calls: list[tuple[str, int]] = []
broken = {"charge": True}


async def charge(customer: str, cents: int) -> None:
    calls.append((customer, cents))
    if broken["charge"]:
        raise ValueError(f"card of {customer} declined")


async def refund(customer: str, cents: int) -> None:
    calls.append((customer, cents))
    raise RuntimeError("refunds are off")


async def ship(customer: str, cents: int) -> None:
    calls.append((customer, cents))


flaky_failures_left = {"n": 0}


async def flaky(customer: str, cents: int, retry: Retry = Retry(attempts=3)) -> None:
    calls.append((customer, cents))
    if flaky_failures_left["n"] > 0:
        flaky_failures_left["n"] -= 1
        raise ValueError("not yet")


async def hopeless(customer: str, cents: int, retry: Retry = Retry(attempts=2)) -> None:
    calls.append((customer, cents))
    raise ValueError("never")


def _raise_line() -> int:
    lines, first = inspect.getsourcelines(charge)
    return first + next(i for i, line in enumerate(lines) if "raise ValueError" in line)


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "BLOCK_SECONDS", 0.05)
    calls.clear()
    broken["charge"] = True
    flaky_failures_left["n"] = 0


async def run(
    docket: Docket, worker: Worker, function: TaskFunction, key: str, *args: object
) -> Execution:
    """Add ``function(*args)`` under ``key``, and run the worker until nothing is left."""
    execution = await docket.add(function, key=key)(*args)
    await worker.run_until_finished()
    return execution


async def completed_without_failures(docket: Docket, key: str) -> None:
    assert await count_failures(docket) == 0
    assert await list_failures(docket) == []
    stored = await docket.get_execution(key)
    assert stored is not None and stored.state == ExecutionState.COMPLETED
    assert stored.traceback is None


async def test_a_failed_run_is_listed_with_its_error_and_traceback(
    url: str, docket: Docket, worker: Worker
) -> None:
    execution = await run(docket, worker, charge, "charge-ada", "ada", 500)

    assert await count_failures(docket) == 1
    [failure] = await list_failures(docket)
    assert is_entry_id(failure.id)
    assert (failure.key, failure.function) == ("charge-ada", "charge")
    assert failure.error == "ValueError: card of ada declined"
    assert failure.attempt == 1
    assert failure.worker == worker.name
    assert failure.failed_at is not None
    assert abs(failure.failed_at - datetime.now(UTC)) < timedelta(seconds=30)
    assert failure.traceback.startswith("Traceback (most recent call last):")
    assert f"line {_raise_line()}, in charge\n" in failure.traceback
    assert failure.traceback.endswith("ValueError: card of ada declined\n")
    # The message as it was on the stream, so that it can run again.
    assert set(failure.fields) >= {"key", "gen", "function", "when", "attempt", "payload"}
    assert failure.fields["gen"] == str(execution.generation).encode()
    assert await get_failure(docket, failure.id) == failure

    stored = await docket.get_execution("charge-ada")
    assert stored is not None and stored.state == ExecutionState.FAILED
    assert stored.error == failure.error
    assert stored.traceback == failure.traceback


async def test_a_completed_run_adds_nothing_and_has_no_traceback(
    url: str, docket: Docket, worker: Worker
) -> None:
    await run(docket, worker, ship, "ship-ada", "ada", 500)
    await completed_without_failures(docket, "ship-ada")


async def test_a_retried_run_that_then_succeeds_adds_nothing(
    url: str, docket: Docket, worker: Worker
) -> None:
    flaky_failures_left["n"] = 2
    await run(docket, worker, flaky, "flaky-ada", "ada", 500)
    assert len(calls) == 3
    await completed_without_failures(docket, "flaky-ada")


async def test_a_run_that_uses_up_its_retries_adds_one(
    url: str, docket: Docket, worker: Worker
) -> None:
    await run(docket, worker, hopeless, "hopeless-ada", "ada", 500)
    assert len(calls) == 2
    [failure] = await list_failures(docket)
    assert (failure.key, failure.attempt, failure.error) == ("hopeless-ada", 2, "ValueError: never")


async def test_newest_first_in_pages(url: str, docket: Docket, worker: Worker) -> None:
    names = ["a", "b", "c", "d", "e"]
    for name in names:
        await run(docket, worker, charge, f"charge-{name}", name, 1)

    everything = await list_failures(docket)
    assert [failure.key for failure in everything] == [f"charge-{n}" for n in reversed(names)]

    pages: list[list[str]] = []
    before: str | None = None
    while page := await list_failures(docket, count=2, before=before):
        pages.append([failure.key for failure in page])
        before = page[-1].id
    assert pages == [["charge-e", "charge-d"], ["charge-c", "charge-b"], ["charge-a"]]

    with pytest.raises(ValueError, match="count"):
        await list_failures(docket, count=0)
    with pytest.raises(ValueError, match="'latest' is not a failure id"):
        await list_failures(docket, before="latest")


async def test_listing_one_task_reads_on_past_the_others(
    url: str, docket: Docket, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small reads, so that finding the oldest refund takes several.
    monkeypatch.setattr(failures_module, "BATCH", 2)
    await run(docket, worker, refund, "refund-a", "a", 1)
    for name in ["b", "c", "d", "e"]:
        await docket.add(charge, key=f"charge-{name}")(name, 1)
    await run(docket, worker, refund, "refund-f", "f", 1)

    refunds = await list_failures(docket, task="refund")
    assert [failure.key for failure in refunds] == ["refund-f", "refund-a"]
    assert {failure.error for failure in refunds} == {"RuntimeError: refunds are off"}
    [newest] = await list_failures(docket, task="refund", count=1)
    [oldest] = await list_failures(docket, task="refund", count=1, before=newest.id)
    assert (newest.key, oldest.key) == ("refund-f", "refund-a")
    assert await list_failures(docket, task="refund", before=oldest.id) == []
    assert len(await list_failures(docket, task="charge")) == 4
    assert await list_failures(docket, task="ship") == []


async def test_retry_runs_the_task_again_with_its_arguments(
    url: str, docket: Docket, worker: Worker
) -> None:
    execution = await run(docket, worker, charge, "charge-ada", "ada", 500)
    [failure] = await list_failures(docket)
    assert calls == [("ada", 500)]

    broken["charge"] = False
    [result] = await retry(docket, [failure.id])
    assert result.status == "requeued"
    assert is_entry_id(result.detail)
    assert (result.id, result.function, result.key) == (failure.id, "charge", "charge-ada")
    assert await count_failures(docket) == 0
    assert await get_failure(docket, failure.id) is None

    await worker.run_until_finished()
    assert calls == [("ada", 500), ("ada", 500)]
    stored = await docket.get_execution("charge-ada")
    assert stored is not None and stored.state == ExecutionState.COMPLETED
    assert stored.generation > execution.generation
    assert stored.traceback is None
    assert await count_failures(docket) == 0


async def test_a_retried_run_starts_again_at_attempt_one(
    url: str, docket: Docket, worker: Worker
) -> None:
    await run(docket, worker, hopeless, "hopeless-ada", "ada", 500)
    [first] = await list_failures(docket)
    assert first.attempt == 2

    [result] = await retry(docket, [first.id])
    assert result.status == "requeued"
    queued = await docket.get_execution("hopeless-ada")
    assert queued is not None and queued.attempt == 1
    await worker.run_until_finished()

    # Its Retry had both attempts again; the second failure replaced the first.
    assert len(calls) == 4
    [second] = await list_failures(docket)
    assert second.id != first.id and second.attempt == 2


async def test_retry_leaves_a_failure_whose_key_is_busy(
    url: str, docket: Docket, worker: Worker
) -> None:
    await run(docket, worker, charge, "charge-ada", "ada", 500)
    [failure] = await list_failures(docket)
    newer = await docket.add(ship, key="charge-ada")("ada", 1)

    [result] = await retry(docket, [failure.id])
    assert result.status == "active"
    assert result.detail == "task key 'charge-ada' has a queued task now"
    assert await list_failures(docket) == [failure]
    await newer.sync()
    assert newer.state == ExecutionState.QUEUED

    [missing] = await retry(docket, ["1-1"])
    assert (missing.id, missing.status, missing.detail) == ("1-1", "missing", "no such failure")
    with pytest.raises(ValueError, match="'latest' is not a failure id"):
        await retry(docket, ["latest"])
    assert await retry(docket, []) == []


async def test_purge(url: str, docket: Docket, worker: Worker) -> None:
    for name in ["a", "b", "c"]:
        await run(docket, worker, charge, f"charge-{name}", name, 1)
    failures = await list_failures(docket)

    assert await purge_failures(docket, [failures[0].id, "1-1"]) == 1
    assert await list_failures(docket) == failures[1:]
    assert await purge_failures(docket, all_entries=True) == 2
    assert await count_failures(docket) == 0
    assert await purge_failures(docket, all_entries=True) == 0
    # The records keep what happened.
    stored = await docket.get_execution("charge-a")
    assert stored is not None and stored.traceback is not None

    with pytest.raises(ValueError, match="not a failure id"):
        await purge_failures(docket, ["0"])
    with pytest.raises(ValueError, match="all_entries"):
        await purge_failures(docket)
    with pytest.raises(ValueError, match="all_entries"):
        await purge_failures(docket, ["1-1"], all_entries=True)
    with pytest.raises(ValueError, match="not a failure id"):
        await get_failure(docket, "x")


async def test_a_later_successful_run_of_the_key_drops_the_traceback(
    url: str, docket: Docket, worker: Worker
) -> None:
    await run(docket, worker, charge, "charge-ada", "ada", 500)
    failed = await docket.get_execution("charge-ada")
    assert failed is not None and failed.traceback is not None
    assert "ValueError: card of ada declined" in failed.traceback

    await run(docket, worker, ship, "charge-ada", "ada", 500)
    stored = await docket.get_execution("charge-ada")
    assert stored is not None and stored.state == ExecutionState.COMPLETED
    assert (stored.error, stored.traceback) == (None, None)
    # The failure stays in the log.
    assert await count_failures(docket) == 1


async def test_a_long_traceback_keeps_its_end(url: str, docket: Docket, worker: Worker) -> None:
    async def verbose() -> None:
        raise ValueError("x" * 20_000 + "END")

    await run(docket, worker, verbose, "verbose")
    [failure] = await list_failures(docket)
    assert failure.traceback.startswith("…(truncated)\n")
    assert len(failure.traceback) == len("…(truncated)\n") + 16_000
    assert failure.traceback.endswith("xxxEND\n")
    stored = await docket.get_execution("verbose")
    assert stored is not None and stored.traceback == failure.traceback


async def test_a_traceback_that_is_not_utf8_still_settles(
    url: str, docket: Docket, worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    # The worker's log line of this failure holds the surrogate too; captured, it would
    # break pytest-xdist's report of the test (execnet sends reports as UTF-8).
    caplog.set_level(logging.CRITICAL, logger="docket")

    async def undecodable() -> None:
        error = ValueError("plain message")
        # What a file name read with surrogateescape looks like in a traceback.
        error.add_note("reading /srv/caf\udce9.csv")
        raise error

    await run(docket, worker, undecodable, "undecodable")
    [failure] = await list_failures(docket)
    assert failure.error == "ValueError: plain message"
    assert failure.traceback.endswith("reading /srv/caf\\udce9.csv\n")


async def test_a_docket_without_records_keeps_no_failures(url: str, docket_name: str) -> None:
    async with Docket(name=docket_name, url=url, execution_ttl=timedelta(0)) as docket:
        async with Worker(docket, minimum_check_interval=timedelta(milliseconds=5)) as worker:
            await run(docket, worker, charge, "charge-ada", "ada", 500)
        assert calls == [("ada", 500)]
        assert await count_failures(docket) == 0
        assert await docket.get_execution("charge-ada") is None


async def test_failures_older_than_the_records_are_trimmed(url: str, docket_name: str) -> None:
    ttl = timedelta(milliseconds=500)
    async with Docket(name=docket_name, url=url, execution_ttl=ttl) as docket:
        async with Worker(docket, minimum_check_interval=timedelta(milliseconds=5)) as worker:
            # One key, so one partition's stream: the next failure there trims it.
            await run(docket, worker, charge, "charge-ada", "ada", 1)
            [first] = await list_failures(docket)
            await _sleep_past(first.failed_at, ttl)
            await run(docket, worker, charge, "charge-ada", "ada", 2)
        [second] = await list_failures(docket)
        assert second.id != first.id
        assert second.fields["gen"] != first.fields["gen"]


async def _sleep_past(moment: datetime | None, ttl: timedelta) -> None:
    import asyncio

    assert moment is not None
    left = (moment + ttl - datetime.now(UTC)).total_seconds()
    await asyncio.sleep(max(0.0, left) + 0.1)


async def test_the_stream_keeps_about_failures_kept(
    url: str, docket: Docket, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(failures_module, "FAILURES_KEPT", 10)
    total = 150
    await docket.add_many(docket.call(refund)(f"c{n}", n) for n in range(total))
    await worker.run_until_finished()
    assert len(calls) == total
    kept = await count_failures(docket)
    # Redis trims in whole stream nodes (at most 100 entries each), never below the bound.
    assert 10 * docket.partitions <= kept < total
    async with docket.redis() as redis:
        for keys in docket.partition_keys:
            assert await redis.xlen(keys.failures) <= 10 + 100
