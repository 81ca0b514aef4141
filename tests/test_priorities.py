"""Task priorities: three levels, one stream each per partition; a worker takes the
higher levels first, the lower ones keep a share (no starvation), and every path a
task travels (the schedule, retries, Perpetual, replace, cancel, dead letters,
concurrency limits) keeps its level."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _helpers import fast_worker, run_all, wait_for
from _redis_topologies import RedisClusterSet

from docket import (
    ConcurrencyLimit,
    CurrentExecution,
    Docket,
    Execution,
    ExecutionState,
    Perpetual,
    Priority,
    Retry,
)
from docket._redis.keys import partition_of
from docket.dead_letters import list_dead_letters, requeue
from docket.execution import priority_field

pytestmark = [pytest.mark.timeout(60), pytest.mark.partitioned_too]

H, N, L = Priority.HIGH, Priority.NORMAL, Priority.LOW


def level_of(execution: Execution = CurrentExecution()) -> Priority:
    return execution.priority


def sorted_within_partitions(docket: Docket, ran: list[tuple[str, Priority]]) -> bool:
    """Whether, in each partition, no run of a lower level came before a higher one
    (priorities order a partition's streams; partitions have no order between them)."""
    for partition in range(docket.partitions):
        levels = [level for key, level in ran if partition_of(key, docket.partitions) == partition]
        if levels != sorted(levels, reverse=True):
            return False
    return True


# -- the levels and the API ---------------------------------------------------------------


def test_three_levels_normal_in_the_middle() -> None:
    assert [level.name for level in Priority] == ["HIGH", "NORMAL", "LOW"]
    assert Priority.HIGH > Priority.NORMAL > Priority.LOW
    assert int(Priority.NORMAL) == 0


@pytest.mark.parametrize("bad", [7, -2, "urgent", "HIGH", True, 1.0, None])
async def test_a_level_that_is_not_one_of_the_three_is_refused_naming_the_parameter(
    docket: Docket, bad: Any
) -> None:
    async def job() -> None: ...

    for make in (
        lambda: docket.add(job, priority=bad),
        lambda: docket.replace(job, None, "k", priority=bad),
        lambda: docket.call(job, priority=bad),
    ):
        with pytest.raises(ValueError, match=r"priority must be Priority\.HIGH, Priority\.NORMAL"):
            make()


async def test_plain_ints_of_the_levels_are_taken(docket: Docket, url: str) -> None:
    async def job() -> None: ...

    execution = await docket.add(job, priority=1)()  # type: ignore[arg-type]
    assert execution.priority is Priority.HIGH


def test_a_message_or_record_without_a_level_is_normal() -> None:
    assert priority_field({}) is Priority.NORMAL
    assert priority_field({b"prio": b"1"}) is Priority.HIGH
    assert priority_field({b"prio": b"-1"}) is Priority.LOW
    assert priority_field({b"prio": b"9"}) is Priority.NORMAL


def test_each_level_has_its_stream_and_normal_keeps_the_released_name() -> None:
    docket = Docket("orders", url="memory://", partitions=3)
    keys = docket.partition_keys[2]
    tag = keys.prefix
    assert keys.stream == f"{tag}:stream"
    assert keys.streams == (f"{tag}:stream:high", f"{tag}:stream", f"{tag}:stream:low")
    assert keys.level_stream(H) == f"{tag}:stream:high"
    assert docket.keys.stream == docket.stream_key == "{orders}:stream"


def test_runs_from_different_level_streams_never_share_a_run_id() -> None:
    docket = Docket("orders", url="memory://", partitions=3)

    async def job() -> None: ...

    ids = set()
    for partition in (0, 1):
        for level in Priority:
            execution = Execution(docket, job, (), {}, "k", datetime.now(UTC), message_id="1-1")
            execution.partition, execution.priority = partition, level
            ids.add(execution.run_id)
    assert len(ids) == 6
    assert "1-1" in ids  # partition 0, NORMAL: as released


# -- order and starvation -----------------------------------------------------------------


async def test_a_worker_takes_higher_levels_first(docket: Docket, url: str) -> None:
    ran: list[tuple[str, Priority]] = []

    async def job(execution: Execution = CurrentExecution()) -> None:
        ran.append((execution.key, execution.priority))

    for n in range(4):
        for level in (L, N, H):
            await docket.add(job, key=f"{level.name}-{n}", priority=level)()
    await run_all(docket, concurrency=1)
    assert len(ran) == 12
    assert sorted_within_partitions(docket, ran), ran
    if docket.partitions == 1:
        assert [level for _, level in ran] == [H] * 4 + [N] * 4 + [L] * 4


@pytest.mark.parametrize("concurrency", [1, 10])
async def test_a_flood_of_high_work_does_not_starve_low_work(
    docket: Docket, url: str, concurrency: int
) -> None:
    """Of every 10 slots a worker reads, one is offered to each lower level with work
    waiting: with 300 HIGH tasks ahead of them, the 5 LOW ones all run early."""
    ran: list[tuple[str, Priority]] = []

    async def job(execution: Execution = CurrentExecution()) -> None:
        ran.append((execution.key, execution.priority))

    await docket.add_many([docket.call(job, priority=L)() for _ in range(5)])
    await docket.add_many([docket.call(job, priority=H)() for _ in range(300)])
    await run_all(docket, concurrency=concurrency)
    assert len(ran) == 305
    assert [level for _, level in ran[:5]].count(H) >= 4
    # One LOW in every ~10 slots of a partition's reads: within its partition, each LOW
    # runs within the first ~60 (bounded, far from the HIGH ahead of them).
    for partition in range(docket.partitions):
        levels = [level for key, level in ran if partition_of(key, docket.partitions) == partition]
        positions = [i for i, level in enumerate(levels) if level is L]
        assert all(position < 60 for position in positions), (partition, positions)
    assert [level for _, level in ran].count(L) == 5


async def test_a_worker_never_runs_more_than_its_concurrency_over_the_levels(
    docket: Docket, url: str
) -> None:
    running = most = 0

    async def job() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.005)
        running -= 1

    for level in (H, N, L) * 20:
        await docket.add(job, priority=level)()
    await run_all(docket, concurrency=3)
    assert most == 3


async def test_work_arriving_on_every_level_at_an_idle_worker_of_one_slot_runs_one_at_a_time(
    docket: Docket, url: str
) -> None:
    """A blocking read waits on the three streams and may deliver one entry of each:
    the worker claims only what it has room for, highest first, and the rest next."""
    running = most = 0
    ran: list[Priority] = []

    async def job(execution: Execution = CurrentExecution()) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        ran.append(execution.priority)
        await asyncio.sleep(0.01)
        running -= 1

    docket.register(job)
    async with fast_worker(docket, concurrency=1) as worker:
        task = asyncio.create_task(worker.run_forever())
        try:
            for _ in range(3):
                await asyncio.sleep(0.2)  # the worker is waiting
                await docket.add_many([docket.call(job, priority=level)() for level in (L, N, H)])
                await wait_for(lambda: len(ran) % 3 == 0 and running == 0, what="the three")
            await wait_for(lambda: len(ran) == 9, what="all nine runs")
        finally:
            worker.stop()
            await task
    assert most == 1
    assert sorted(ran) == sorted([H, N, L] * 3)


# -- what keeps the level ------------------------------------------------------------------


async def test_a_future_task_keeps_its_level_when_it_comes_due(docket: Docket, url: str) -> None:
    seen: list[Priority] = []

    async def job(execution: Execution = CurrentExecution()) -> None:
        seen.append(execution.priority)

    when = datetime.now(UTC) + timedelta(milliseconds=200)
    execution = await docket.add(job, when=when, key="later", priority=H)()
    assert execution.state is ExecutionState.SCHEDULED
    stored = await docket.get_execution("later")
    assert stored is not None and stored.priority is H
    await asyncio.sleep(0.25)
    await run_all(docket)
    assert seen == [H]


async def test_retries_and_perpetual_successors_keep_their_level(docket: Docket, url: str) -> None:
    attempts: list[tuple[int, Priority]] = []
    beats: list[Priority] = []

    async def flaky(
        retry: Retry = Retry(attempts=2), execution: Execution = CurrentExecution()
    ) -> None:
        attempts.append((execution.attempt, execution.priority))
        if execution.attempt == 1:
            raise RuntimeError("once")

    async def beat(
        perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=10)),
        execution: Execution = CurrentExecution(),
    ) -> None:
        beats.append(execution.priority)
        if len(beats) == 3:
            perpetual.cancel()

    await docket.add(flaky, priority=L)()
    await docket.add(beat, key="beat", priority=H)()
    await run_all(docket)
    assert attempts == [(1, L), (2, L)]
    assert beats == [H, H, H]


async def test_replace_sets_the_level_of_the_replacement(docket: Docket, url: str) -> None:
    seen: list[Priority] = []

    async def job(execution: Execution = CurrentExecution()) -> None:
        seen.append(execution.priority)

    when = datetime.now(UTC) + timedelta(seconds=30)
    await docket.add(job, when=when, key="k", priority=L)()
    await docket.replace(job, None, "k", priority=H)()
    stored = await docket.get_execution("k")
    assert stored is not None and stored.priority is H
    # A queued copy is withdrawn from its own level's stream when replaced.
    await docket.replace(job, None, "k", priority=N)()
    keys = docket.keys_for("k")
    assert await docket.engine.connection.client.xlen(keys.level_stream(H)) == 0
    await run_all(docket)
    assert seen == [N]


@pytest.mark.parametrize("level", list(Priority))
async def test_cancel_works_at_every_level(docket: Docket, url: str, level: Priority) -> None:
    ran: list[str] = []

    async def job() -> None:
        ran.append("ran")

    await docket.add(job, key="queued", priority=level)()
    later = datetime.now(UTC) + timedelta(seconds=30)
    await docket.add(job, when=later, key="scheduled", priority=level)()
    await docket.cancel("queued")
    await docket.cancel("scheduled")
    client = docket.engine.connection.client
    assert await client.xlen(docket.keys_for("queued").level_stream(level)) == 0
    await run_all(docket)
    assert ran == []
    for key in ("queued", "scheduled"):
        stored = await docket.get_execution(key)
        assert stored is not None and stored.state is ExecutionState.CANCELLED


async def test_clear_clears_every_level(docket: Docket, url: str) -> None:
    async def job() -> None: ...

    for level in Priority:
        await docket.add(job, priority=level)()
    assert await docket.clear() == 3
    snapshot = await docket.snapshot()
    assert snapshot.total_tasks == 0


async def test_a_dead_letter_is_requeued_at_its_level(docket: Docket, url: str) -> None:
    seen: list[Priority] = []

    async def job(execution: Execution = CurrentExecution()) -> None:
        seen.append(execution.priority)

    docket.tasks.pop("job", None)
    docket.register(job)
    await docket.add(job, key="poisoned", priority=H)()
    # A worker that does not know the task dead-letters it.
    docket.tasks.pop("job")
    await run_all(docket)
    [letter] = await list_dead_letters(docket)
    assert "unknown task" in letter.reason
    docket.register(job)
    [result] = await requeue(docket, [letter.id])
    assert result.status == "requeued"
    stored = await docket.get_execution("poisoned")
    assert stored is not None and stored.priority is H
    await run_all(docket)
    assert seen == [H]


async def test_a_run_parked_behind_a_concurrency_limit_wakes_at_its_level(
    docket: Docket, url: str
) -> None:
    seen: list[tuple[str, Priority]] = []

    async def limited(
        execution: Execution = CurrentExecution(),
        limit: ConcurrencyLimit = ConcurrencyLimit(max_concurrent=1, scope="prio-test"),
    ) -> None:
        seen.append((execution.key, execution.priority))
        await asyncio.sleep(0.05)

    keys = [f"run-{n}" for n in range(6)]
    levels = [H, L, H, L, N, H]
    for key, level in zip(keys, levels, strict=True):
        await docket.add(limited, key=key, priority=level)()
    await run_all(docket, concurrency=5)
    # The five that found the slot taken parked, woke one by one and kept their level.
    assert sorted(seen) == sorted(zip(keys, levels, strict=True))


async def test_a_message_whose_level_disagrees_with_its_stream_runs_at_its_streams(
    docket: Docket, url: str
) -> None:
    """The stream a message was read from decides its level (what settling it must
    reach), whatever its ``prio`` field says."""
    seen: list[Priority] = []

    async def job(execution: Execution = CurrentExecution()) -> None:
        seen.append(execution.priority)

    execution = await docket.add(job, key="odd", priority=H)()
    keys = docket.keys_for("odd")
    client = docket.engine.connection.client
    assert execution.message_id is not None
    [(_, fields)] = await client.xrange(
        keys.level_stream(H), execution.message_id, execution.message_id
    )
    assert fields[b"prio"] == b"1"
    # Rewritten by hand to claim another level: the worker trusts the stream.
    await client.xdel(keys.level_stream(H), execution.message_id)
    mid = await client.xadd(keys.level_stream(H), {**fields, b"prio": b"-1"})
    await client.hset(keys.record("odd"), "mid", mid)
    await run_all(docket)
    assert seen == [H]
    assert await client.xlen(keys.level_stream(H)) == 0


async def test_snapshots_and_executions_show_the_level(docket: Docket, url: str) -> None:
    async def job() -> None: ...

    await docket.add(job, key="h", priority=H)()
    await docket.add(job, key="n")()
    later = datetime.now(UTC) + timedelta(seconds=30)
    await docket.add(job, when=later, key="l", priority=L)()
    snapshot = await docket.snapshot()
    assert {execution.key: execution.priority for execution in snapshot.future} == {
        "h": H,
        "n": N,
        "l": L,
    }


async def test_levels_on_a_cluster_with_partitions(
    redis_cluster: RedisClusterSet, docket_name: str
) -> None:
    ran: list[tuple[str, Priority]] = []

    async def job(execution: Execution = CurrentExecution()) -> None:
        ran.append((execution.key, execution.priority))

    async with Docket(name=docket_name, url=redis_cluster.url, partitions=3) as docket:
        for n in range(5):
            for level in (L, N, H):
                await docket.add(job, key=f"{level.name}-{n}", priority=level)()
        later = datetime.now(UTC) + timedelta(milliseconds=100)
        await docket.add(job, when=later, key="later-high", priority=H)()
        await run_all(docket, concurrency=1)
        assert len(ran) == 16
        assert ("later-high", H) in ran
        assert sorted_within_partitions(docket, [item for item in ran if item[0] != "later-high"])
        for keys in docket.partition_keys:
            owner = redis_cluster.primary_for_key(keys.prefix)
            for stream in keys.streams:
                # Every level's stream and group is on its partition's shard.
                assert owner.execute_command("EXISTS", stream) == 1


async def test_the_snapshot_command_marks_the_levels(docket: Docket, url: str) -> None:
    from rich.console import Console

    from docket.cli.snapshot import _snapshot_table

    async def job() -> None: ...

    await docket.add(job, key="urgent-one", priority=H)()
    await docket.add(job, key="plain-one")()
    await docket.add(job, key="background-one", priority=L)()
    console = Console(width=200, record=True)
    console.print(_snapshot_table(docket.name, await docket.snapshot()))
    text = console.export_text()
    assert "queued (high)" in text and "queued (low)" in text
    plain = next(line for line in text.splitlines() if "plain-one" in line)
    assert "queued" in plain and "(" not in plain
