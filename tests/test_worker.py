"""The worker: run modes, concurrency, scheduling, generations, heartbeats, automatic
perpetual tasks, cancelling and draining.

Faults (dead consumers, killed workers, signals, Redis restarts) live in
``test_worker_faults.py``.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from _helpers import fast_worker, running_forever, wait_for
from redis.asyncio import Redis

from docket import (
    Cron,
    CurrentExecution,
    Docket,
    Execution,
    ExecutionCancelled,
    ExecutionState,
    Perpetual,
    TaskKey,
    Worker,
)
from docket._redis import scripts
from docket._redis.keys import GROUP
from docket.dependencies import CompletionHandler, TaskOutcome

# --- helpers ------------------------------------------------------------------------------


# A subset of the core tests that also runs on a Redis Cluster (see conftest's ``url``).
pytestmark = [pytest.mark.cluster_too, pytest.mark.partitioned_too]


async def stop(worker: Worker, runner: asyncio.Task[None]) -> None:
    worker.stop()
    await asyncio.wait_for(runner, 15)


async def stream_length(docket: Docket) -> int:
    """Entries on the docket's streams (every partition's)."""
    async with docket.redis() as redis:
        return sum([int(await redis.xlen(keys.stream)) for keys in docket.partition_keys])


async def scheduled_count(docket: Docket) -> int:
    async with docket.redis() as redis:
        return sum([int(await redis.zcard(keys.queue)) for keys in docket.partition_keys])


async def pending_count(docket: Docket) -> int:
    total = 0
    async with docket.redis() as redis:
        for keys in docket.partition_keys:
            total += int((await redis.xpending(keys.stream, GROUP))["pending"])
    return total


async def server_time(redis: Redis) -> float:
    seconds, micros = await redis.time()
    return seconds + micros / 1_000_000


async def move_due(docket: Docket, limit: int) -> tuple[int, float]:
    """One call of the scheduler's mover script, as a worker makes it."""
    keys = docket.keys
    moved, delay = await docket.engine.scripts.send(
        scripts.MoveDue(
            queue=keys.queue,
            stream=keys.stream,
            high_stream=keys.level_stream(1),
            low_stream=keys.level_stream(-1),
            record_prefix=keys.record_prefix,
            limit=limit,
            events_prefix=keys.events_prefix,
        )
    )
    return int(moved), float(delay)


# --- run modes ------------------------------------------------------------------------------


async def test_run_until_finished_returns_once_everything_has_run(docket: Docket, url: str) -> None:
    ran: list[int] = []

    async def note(value: int) -> None:
        ran.append(value)

    for value in range(5):
        await docket.add(note)(value)

    async with fast_worker(docket) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 15)

    assert sorted(ran) == [0, 1, 2, 3, 4]
    assert await stream_length(docket) == 0
    assert await scheduled_count(docket) == 0


async def test_run_until_finished_waits_for_a_task_scheduled_for_later(
    docket: Docket, url: str
) -> None:
    ran_at: list[float] = []

    async def later() -> None:
        ran_at.append(time.time())

    when = datetime.now(UTC) + timedelta(milliseconds=300)
    await docket.add(later, when=when)()

    async with fast_worker(docket) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 15)

    assert len(ran_at) == 1, "run_until_finished returned before the scheduled task ran"
    assert ran_at[0] >= when.timestamp()
    assert await scheduled_count(docket) == 0


async def test_run_forever_keeps_running_until_stopped(docket: Docket, url: str) -> None:
    ran: list[int] = []

    async def note(value: int) -> None:
        ran.append(value)

    async with fast_worker(docket) as worker:
        runner = asyncio.create_task(worker.run_forever())
        await docket.add(note)(1)
        await wait_for(lambda: ran == [1], what="the first task")

        await asyncio.sleep(0.3)
        assert not runner.done(), "run_forever returned although nobody stopped it"

        await docket.add(note)(2)
        await wait_for(lambda: ran == [1, 2], what="a task added while idle")

        await stop(worker, runner)
    assert runner.exception() is None


async def test_run_forever_ends_when_cancelled(docket: Docket, url: str) -> None:
    ran: list[int] = []

    async def note(value: int) -> None:
        ran.append(value)

    async with fast_worker(docket) as worker:
        runner = asyncio.create_task(worker.run_forever())
        await docket.add(note)(1)
        await wait_for(lambda: ran == [1], what="the first task")
        assert not runner.done()

        # As released: cancelling the run asks the worker to stop; it returns normally.
        runner.cancel()
        await asyncio.wait_for(runner, 15)
    assert runner.done() and not runner.cancelled()


async def test_run_at_most_bounds_a_perpetual_task(docket: Docket, url: str) -> None:
    runs: list[str] = []

    async def forever(
        key: str = TaskKey(),
        perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=10)),
    ) -> None:
        runs.append(key)

    await docket.add(forever, key="forever")()

    async with fast_worker(docket) as worker:
        await asyncio.wait_for(worker.run_at_most({"forever": 3}), 15)

    assert runs == ["forever"] * 3


async def test_run_at_most_never_cancels_the_last_allowed_run_from_an_earlier_one(
    docket: Docket, url: str
) -> None:
    # Run 2 of the key starts while run 1 is still going (a replacement, like a
    # Perpetual's successor claimed before its predecessor finished). Run 1 ending must
    # not take run 2, the last one allowed, for the one that used up the budget.
    events: list[tuple[str, int]] = []
    release_first = asyncio.Event()
    release_second = asyncio.Event()

    async def hold(n: int) -> None:
        events.append(("start", n))
        await (release_first if n == 1 else release_second).wait()
        events.append(("end", n))

    docket.register(hold)
    await docket.add(hold, key="k")(1)

    async with fast_worker(docket, concurrency=2) as worker:
        runner = asyncio.create_task(worker.run_at_most({"k": 2}))
        await wait_for(lambda: ("start", 1) in events, what="run 1 to start")
        await docket.replace(hold, when=datetime.now(UTC), key="k")(2)
        await wait_for(lambda: ("start", 2) in events, what="run 2 to start")

        release_first.set()
        await wait_for(lambda: ("end", 1) in events, what="run 1 to end")
        await asyncio.sleep(0.2)  # room for a wrongful cancel to reach run 2
        release_second.set()
        await asyncio.wait_for(runner, 15)

    assert events == [("start", 1), ("start", 2), ("end", 1), ("end", 2)]
    execution = await docket.get_execution("k")
    assert execution is not None
    assert execution.state == ExecutionState.COMPLETED


async def test_run_until_finished_does_not_return_while_a_perpetual_task_lives(
    docket: Docket, url: str
) -> None:
    runs = 0

    async def heartbeat(perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=20))) -> None:
        nonlocal runs
        runs += 1

    await docket.add(heartbeat, key="heartbeat")()

    async with fast_worker(docket) as worker:
        runner = asyncio.create_task(worker.run_until_finished())
        await wait_for(lambda: runs >= 3, what="the perpetual task to run a few times")
        await asyncio.sleep(0.3)
        assert not runner.done(), "run_until_finished returned while a Perpetual was alive"
        await stop(worker, runner)


# --- concurrency ------------------------------------------------------------------------------


async def test_never_more_than_concurrency_tasks_at_once_and_all_slots_used(
    docket: Docket, url: str
) -> None:
    running = 0
    peak = 0
    finished = 0

    async def busy() -> None:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.1)
        running -= 1
        finished += 1

    for _ in range(12):
        await docket.add(busy)()

    async with fast_worker(docket, concurrency=4) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 15)

    assert finished == 12
    assert peak == 4


async def test_concurrency_one_runs_tasks_one_at_a_time(docket: Docket, url: str) -> None:
    running = 0
    peak = 0
    order: list[int] = []

    async def single(value: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        order.append(value)
        running -= 1

    for value in range(5):
        await docket.add(single)(value)

    async with fast_worker(docket, concurrency=1) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 15)

    assert sorted(order) == [0, 1, 2, 3, 4]
    assert peak == 1


async def test_message_batch_smaller_than_backlog_still_drains_it(docket: Docket, url: str) -> None:
    ran: list[int] = []

    async def note(value: int) -> None:
        ran.append(value)

    await docket.add_many([docket.call(note)(value) for value in range(25)])

    async with fast_worker(docket, message_batch=3) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 15)

    assert sorted(ran) == list(range(25))
    assert await stream_length(docket) == 0


# --- scheduling ------------------------------------------------------------------------------


async def test_a_task_never_starts_before_its_when(docket: Docket, url: str) -> None:
    started: dict[str, float] = {}

    async def punctual(execution: Execution = CurrentExecution()) -> None:
        started[execution.key] = time.time()

    base = datetime.now(UTC)
    whens = {f"t{i}": base + timedelta(milliseconds=40 * i) for i in range(1, 8)}
    for key, when in whens.items():
        await docket.add(punctual, when=when, key=key)()

    async with fast_worker(docket) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 15)

    assert started.keys() == whens.keys()
    for key, when in whens.items():
        assert started[key] >= when.timestamp(), (
            f"{key} started {when.timestamp() - started[key]:.6f}s before its when"
        )


async def test_scheduler_moves_a_due_backlog_over_1000_in_bounded_batches(
    docket: Docket, redis_client: Redis
) -> None:
    count = 1500
    ran = 0

    async def tick() -> None:
        nonlocal ran
        ran += 1

    # Far enough ahead that adding them all (slow on a loaded machine) ends before any
    # is due, or the late ones would be queued at once rather than held.
    when = datetime.fromtimestamp(await server_time(redis_client) + 2.0, UTC)
    await docket.add_many([docket.call(tick, when=when)() for _ in range(count)])
    assert await redis_client.zcard(docket.keys.queue) == count, "precondition: all held"
    await wait_for(
        lambda: _after(redis_client, when), what="the backlog to fall due by the server's clock"
    )

    move_sha = scripts.MoveDue.sha
    limits: list[int] = []
    monitoring = asyncio.Event()

    async def watch() -> None:
        async with redis_client.monitor() as monitor:
            monitoring.set()
            while True:
                command = (await monitor.next_command())["command"].split(" ")
                if command[:2] == ["EVALSHA", move_sha] and command[3] == docket.keys.queue:
                    limits.append(int(command[8]))

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(monitoring.wait(), 5)
        async with fast_worker(docket, concurrency=50) as worker:
            await asyncio.wait_for(worker.run_until_finished(), 60)
        await asyncio.sleep(0.2)  # let MONITOR catch up with the last commands
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher

    assert ran == count
    assert limits, "MONITOR saw no call of the mover script"
    assert max(limits) <= 1000


async def _after(redis: Redis, when: datetime) -> bool:
    return await server_time(redis) > when.timestamp()


async def test_move_due_moves_at_most_its_limit_per_call(
    docket: Docket, redis_client: Redis
) -> None:
    async def tick() -> None: ...

    # Far enough ahead that all 1,200 are still held once added, on a busy machine too.
    when = datetime.fromtimestamp(await server_time(redis_client) + 1.0, UTC)
    await docket.add_many([docket.call(tick, when=when)() for _ in range(1200)])
    assert await redis_client.zcard(docket.keys.queue) == 1200, "precondition: all held"
    await wait_for(lambda: _after(redis_client, when), what="the tasks to fall due")

    moved, _ = await move_due(docket, 1000)

    assert moved == 1000
    assert await redis_client.xlen(docket.keys.stream) == 1000
    assert await redis_client.zcard(docket.keys.queue) == 200


async def test_a_task_due_by_the_servers_clock_runs_at_once(
    docket: Docket, redis_client: Redis
) -> None:
    ran: list[str] = []

    async def overdue(key: str = TaskKey()) -> None:
        ran.append(key)

    when = datetime.fromtimestamp(await server_time(redis_client) - 0.5, UTC)
    execution = await docket.add(overdue, when=when, key="overdue")()
    assert execution.state == ExecutionState.QUEUED
    assert await redis_client.zcard(docket.keys.queue) == 0

    async with fast_worker(docket) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 15)

    assert ran == ["overdue"]


async def test_mover_uses_the_servers_clock_and_never_moves_early(
    docket: Docket, redis_client: Redis
) -> None:
    async def soon() -> None: ...

    due = await server_time(redis_client) + 0.3
    await docket.add(soon, when=datetime.fromtimestamp(due, UTC), key="soon")()
    assert await redis_client.zscore(docket.keys.queue, "soon") == pytest.approx(due)

    calls = 0
    while True:
        before = await server_time(redis_client)
        moved, delay = await move_due(docket, 1000)
        after = await server_time(redis_client)
        calls += 1
        if moved:
            assert after >= due, f"moved {due - after:.6f}s before it was due"
            break
        assert before < due, "not moved although due by the server's clock"
        assert 0 <= delay <= due - before + 0.001
        assert calls < 1000, "never moved"
        await asyncio.sleep(0.01)

    assert calls > 1, "moved on the first call, before it could have been due"
    record = await redis_client.hgetall(docket.keys.record("soon"))
    assert record[b"state"] == b"queued"
    assert await redis_client.xlen(docket.keys.stream) == 1


# --- generations ------------------------------------------------------------------------------


async def test_replacing_a_queued_task_before_it_is_claimed_runs_only_the_new_one(
    docket: Docket, url: str
) -> None:
    ran: list[str] = []

    async def note(label: str) -> None:
        ran.append(label)

    first = await docket.add(note, key="k")("old")
    second = await docket.replace(note, when=datetime.now(UTC), key="k")("new")
    assert second.generation > first.generation

    async with fast_worker(docket) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 15)

    assert ran == ["new"]


async def test_a_run_superseded_while_running_does_not_record_its_outcome(
    docket: Docket, url: str
) -> None:
    started = asyncio.Event()
    finished = asyncio.Event()

    async def report(label: str) -> str:
        started.set()
        await asyncio.sleep(0.3)
        finished.set()
        return label

    await docket.add(report, key="k")("old")
    async with fast_worker(docket) as worker:
        runner = asyncio.create_task(worker.run_forever())
        await asyncio.wait_for(started.wait(), 10)
        later = datetime.now(UTC) + timedelta(hours=1)
        replacement = await docket.replace(report, when=later, key="k")("new")
        await asyncio.wait_for(finished.wait(), 10)
        await stop(worker, runner)  # drains: the old run has settled by now

    execution = await docket.get_execution("k")
    assert execution is not None
    assert execution.generation == replacement.generation
    assert execution.state == ExecutionState.SCHEDULED
    assert execution.result_key is None
    assert await pending_count(docket) == 0


async def test_a_superseded_run_finishing_last_does_not_overwrite_the_new_result(
    docket: Docket, url: str
) -> None:
    old_started = asyncio.Event()
    finished: list[str] = []

    async def report(label: str, seconds: float) -> str:
        if label == "old":
            old_started.set()
        await asyncio.sleep(seconds)
        finished.append(label)
        return label

    await docket.add(report, key="k")("old", 0.5)
    async with fast_worker(docket) as worker:
        runner = asyncio.create_task(worker.run_forever())
        await asyncio.wait_for(old_started.wait(), 10)
        await docket.replace(report, when=datetime.now(UTC), key="k")("new", 0)
        await wait_for(lambda: finished == ["new", "old"], what="both runs to end")
        await stop(worker, runner)

    execution = await docket.get_execution("k")
    assert execution is not None
    assert execution.state == ExecutionState.COMPLETED
    assert await execution.get_result(timeout=5) == "new"


async def test_a_stale_stream_entry_is_acked_and_removed_without_running(
    docket: Docket, url: str
) -> None:
    ran: list[str] = []

    async def note(label: str) -> None:
        ran.append(label)

    await docket.add(note, key="k")("old")
    async with docket.redis() as redis:
        [(_, stale_fields)] = await redis.xrange(docket.keys_for("k").stream)
    await docket.replace(note, when=datetime.now(UTC), key="k")("new")
    # A copy of the old generation's entry that outlived the replace.
    async with docket.redis() as redis:
        await redis.xadd(docket.keys_for("k").stream, stale_fields)
        assert await redis.xlen(docket.keys_for("k").stream) == 2

    async with fast_worker(docket) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 15)

    assert ran == ["new"]
    assert await stream_length(docket) == 0
    assert await pending_count(docket) == 0


# --- cancel, drain ------------------------------------------------------------------------------


async def test_cancel_stops_a_running_task(docket: Docket, url: str) -> None:
    started = asyncio.Event()
    interrupted = asyncio.Event()
    completed: list[bool] = []
    after: list[bool] = []

    async def long_one() -> None:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            interrupted.set()
            raise
        completed.append(True)

    async def afterwards() -> None:
        after.append(True)

    execution = await docket.add(long_one, key="long")()
    async with fast_worker(docket, concurrency=1) as worker:
        runner = asyncio.create_task(worker.run_forever())
        await asyncio.wait_for(started.wait(), 10)

        await docket.cancel("long")
        await asyncio.wait_for(interrupted.wait(), 10)

        # The slot is free again and the worker goes on.
        await docket.add(afterwards)()
        await wait_for(lambda: after == [True], what="a task after the cancelled one")
        await stop(worker, runner)

    assert completed == []
    with pytest.raises(ExecutionCancelled):
        await execution.get_result(timeout=5)
    assert await pending_count(docket) == 0


async def test_a_cancel_arriving_after_the_body_still_settles_the_run(
    docket: Docket, url: str
) -> None:
    # The cancel lands while a completion handler (Perpetual's kind) is still at work
    # after the body returned. The run must settle at once, not leave its message pending
    # for redelivery, and the mark must not make the key's next run skip.
    in_handler = asyncio.Event()
    release = asyncio.Event()
    runs: list[str] = []

    class Linger(CompletionHandler["Linger"]):
        async def __aenter__(self) -> Linger:
            return self

        async def on_complete(self, execution: Execution, outcome: TaskOutcome) -> bool:
            in_handler.set()
            await release.wait()
            return False

    async def lingering(linger: Linger = Linger()) -> None:
        runs.append("lingering")

    await docket.add(lingering, key="k")()
    worker = fast_worker(docket, redelivery_timeout=timedelta(minutes=5))
    async with worker, running_forever(worker):
        await asyncio.wait_for(in_handler.wait(), 10)
        await docket.cancel("k")
        await asyncio.sleep(0.2)  # room for the cancel to reach the worker
        release.set()
        await wait_for(lambda: _no_pending(docket), timeout=5, what="the cancelled run to settle")

        # The same key again, on the same worker: it runs, not skipped as cancelled.
        await docket.add(lingering, key="k")()
        await wait_for(lambda: runs == ["lingering"] * 2, what="the key's next run")

    stored = await docket.get_execution("k")
    assert stored is not None
    assert stored.state == ExecutionState.COMPLETED


async def test_a_cancel_arriving_before_a_perpetual_reschedules_ends_the_chain(
    docket: Docket, url: str
) -> None:
    in_handler = asyncio.Event()
    release = asyncio.Event()
    runs: list[str] = []

    class SlowPerpetual(Perpetual):
        async def on_complete(self, execution: Execution, outcome: TaskOutcome) -> bool:
            in_handler.set()
            await release.wait()
            return await super().on_complete(execution, outcome)

    async def chained(perpetual: SlowPerpetual = SlowPerpetual()) -> None:
        runs.append("chained")

    await docket.add(chained, key="chain")()
    worker = fast_worker(docket)
    async with worker, running_forever(worker):
        await asyncio.wait_for(in_handler.wait(), 10)
        await docket.cancel("chain")
        release.set()
        await wait_for(lambda: _no_pending(docket), timeout=5, what="the run to settle")
        await asyncio.sleep(0.2)  # room for a wrongly scheduled next run to start

    assert runs == ["chained"]
    stored = await docket.get_execution("chain")
    assert stored is not None
    assert stored.state == ExecutionState.CANCELLED
    assert await scheduled_count(docket) == 0


async def _no_pending(docket: Docket) -> bool:
    return await stream_length(docket) == 0 and await pending_count(docket) == 0


async def test_leaving_the_worker_waits_for_tasks_in_flight_and_records_them(
    docket: Docket, url: str
) -> None:
    started: set[int] = set()

    async def slow(value: int) -> int:
        started.add(value)
        await asyncio.sleep(0.3)
        return value * 10

    executions = [await docket.add(slow, key=f"slow-{v}")(v) for v in range(3)]
    async with fast_worker(docket) as worker:
        runner = asyncio.create_task(worker.run_forever())
        await wait_for(lambda: started == {0, 1, 2}, what="all three to start")
    # Left while all three were still sleeping.

    try:
        for value, execution in enumerate(executions):
            stored = await docket.get_execution(execution.key)
            assert stored is not None
            assert stored.state == ExecutionState.COMPLETED, stored
            assert await stored.get_result(timeout=1) == value * 10
        assert await pending_count(docket) == 0
    finally:
        runner.cancel()
        with suppress(asyncio.CancelledError):
            await runner


# --- heartbeats ------------------------------------------------------------------------------


async def test_workers_lists_a_running_worker_with_its_task_names(docket: Docket) -> None:
    async def listed_task() -> None: ...

    docket.register(listed_task)
    async with fast_worker(docket, name="worker-under-test") as worker:
        runner = asyncio.create_task(worker.run_forever())

        async def listed() -> bool:
            return any(w.name == "worker-under-test" for w in await docket.workers())

        await wait_for(listed, what="the worker's heartbeat")
        infos = {w.name: w for w in await docket.workers()}
        assert {"listed_task", "trace", "fail", "sleep"} <= infos["worker-under-test"].tasks
        assert "worker-under-test" in {w.name for w in await docket.task_workers("listed_task")}
        assert await docket.task_workers("no_such_task") == []
        await stop(worker, runner)


async def test_a_worker_that_left_is_no_longer_listed(docket: Docket) -> None:
    async with fast_worker(docket, name="leaving-worker"):

        async def listed() -> bool:
            return any(w.name == "leaving-worker" for w in await docket.workers())

        await wait_for(listed, what="the worker's heartbeat")

    assert "leaving-worker" not in {w.name for w in await docket.workers()}


# --- automatic perpetual tasks --------------------------------------------------------------------


async def test_automatic_perpetual_parameter_is_scheduled_under_its_name(
    docket: Docket, url: str
) -> None:
    keys: list[str] = []

    async def auto_param(
        key: str = TaskKey(),
        perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=20), automatic=True),
    ) -> None:
        keys.append(key)

    docket.register(auto_param)
    async with fast_worker(docket) as worker:
        await asyncio.wait_for(worker.run_at_most({"auto_param": 3}), 15)

    assert keys == ["auto_param"] * 3


async def test_automatic_perpetual_decorator_is_scheduled_under_its_name(
    docket: Docket, url: str
) -> None:
    keys: list[str] = []

    @Perpetual(interval=timedelta(milliseconds=20), automatic=True)
    async def auto_decorated(key: str = TaskKey()) -> None:
        keys.append(key)

    docket.register(auto_decorated)
    async with fast_worker(docket) as worker:
        await asyncio.wait_for(worker.run_at_most({"auto_decorated": 3}), 15)

    assert keys == ["auto_decorated"] * 3


async def test_a_strike_stops_an_automatic_perpetual_task(redis_url: str, docket_name: str) -> None:
    runs = 0

    @Perpetual(every=timedelta(milliseconds=20), automatic=True)
    async def auto_struck() -> None:
        nonlocal runs
        runs += 1

    # A short heartbeat: workers re-add automatic tasks on every beat.
    async with Docket(
        name=docket_name, url=redis_url, heartbeat_interval=timedelta(milliseconds=50)
    ) as docket:
        docket.register(auto_struck)
        async with fast_worker(docket) as worker:
            runner = asyncio.create_task(worker.run_forever())
            await wait_for(lambda: runs >= 2, what="the automatic task to run")

            await docket.strike(auto_struck)
            await asyncio.sleep(0.2)  # a run already in flight may finish
            seen = runs
            await asyncio.sleep(0.6)  # a dozen heartbeats and perpetual intervals
            assert runs == seen, "the struck automatic task kept running"

            await docket.restore(auto_struck)
            await wait_for(lambda: runs > seen, what="the restored task to run again")
            await stop(worker, runner)


async def test_automatic_cron_task_is_scheduled_for_the_next_minute_boundary(
    docket: Docket,
) -> None:
    async def every_minute(cron: Cron = Cron("* * * * *")) -> None: ...

    docket.register(every_minute)
    before = datetime.now(UTC)
    async with fast_worker(docket) as worker:
        runner = asyncio.create_task(worker.run_forever())

        async def scheduled() -> bool:
            return await docket.get_execution("every_minute") is not None

        await wait_for(scheduled, what="the cron task to be scheduled")
        execution = await docket.get_execution("every_minute")
        await stop(worker, runner)

    assert execution is not None
    next_minute = before.replace(second=0, microsecond=0) + timedelta(minutes=1)
    # (the one after, should a minute boundary pass while the test runs)
    assert execution.when in (next_minute, next_minute + timedelta(minutes=1))
    assert execution.state == ExecutionState.SCHEDULED


# --- log records -------------------------------------------------------------------------------


async def test_a_runs_log_records_point_at_the_line_that_logged_them(
    docket: Docket, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The start and finish lines skip logging's caller lookup; a formatter showing
    # %(lineno)d must still get the real line, not 0.
    caplog.set_level(logging.INFO, logger="docket")

    async def quick() -> None: ...

    await docket.add(quick, key="quick")()
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()

    records = [
        r for r in caplog.records if r.name == "docket.worker" and r.getMessage()[:1] in ("↪", "↩")
    ]
    assert len(records) == 2, [r.getMessage() for r in records]
    for record in records:
        source = Path(record.pathname).read_text().splitlines()
        assert record.lineno > 0
        assert "_log_info(" in source[record.lineno - 1], (record.lineno, record.getMessage())
        assert record.funcName == "_run_started"


# --- sharing the event loop -------------------------------------------------------------------

_ENDLESS_CHAIN_ON_MEMORY = """
import asyncio
from datetime import timedelta

from docket import Docket, Perpetual, Worker

runs = 0


async def spin(perpetual: Perpetual = Perpetual()) -> None:
    global runs
    runs += 1


async def main() -> None:
    async with Docket(name="fair", url="memory://fair") as docket:
        await docket.add(spin, key="spin")()
        worker = Worker(docket, minimum_check_interval=timedelta(milliseconds=5))
        async with worker:
            runner = asyncio.create_task(worker.run_forever())
            for _ in range(5):
                await asyncio.sleep(0.01)
            worker.stop()
            await runner
    print(f"ticked while spin ran {runs} times" if runs else "spin never ran")


asyncio.run(main())
"""


def test_a_worker_on_memory_gives_the_event_loop_back_between_reads() -> None:
    # The in-process engine answers without suspending, so a worker that always has work
    # (a Perpetual with no interval) could hold the loop forever: the app's own coroutines
    # sharing the process (here, a sleeping loop) would never run again. A subprocess, as
    # a starved loop cannot even time itself out.
    finished = subprocess.run(
        [sys.executable, "-c", _ENDLESS_CHAIN_ON_MEMORY],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.startswith("ticked while spin ran"), finished.stdout
