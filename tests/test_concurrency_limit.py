"""ConcurrencyLimit through the public API: Docket + Worker on a real Redis (a subset on
memory:// too, through the ``url`` fixture).

Tasks are closures that count how many of their group are running right now (a
``Tracker``), so "at most n at once" is measured where it matters, in the task bodies.
Runs that must stay put (holders, slow tasks) wait on asyncio events rather than sleep,
so the tests do not depend on timing to be right, only to be quick.

No ``from __future__ import annotations`` here: the tasks are closures whose
``Annotated`` metadata must be evaluated at definition.
"""

import asyncio
import inspect
import os
import random
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pytest
from redis.asyncio import Redis

from docket import (
    ConcurrencyLimit,
    CurrentDocket,
    Docket,
    Execution,
    ExecutionState,
    Worker,
)
from docket._redis import scripts
from docket.worker import GROUP

FAST: dict[str, Any] = {
    "minimum_check_interval": timedelta(milliseconds=5),
    "scheduling_resolution": timedelta(milliseconds=5),
}


# -- helpers ----------------------------------------------------------------------------


pytestmark = pytest.mark.partitioned_too


class Tracker:
    """Counts the runs of each group that are inside the task body right now."""

    def __init__(self) -> None:
        self.running: Counter[Hashable] = Counter()
        self.peak: Counter[Hashable] = Counter()
        self.total = 0
        self.total_peak = 0
        self.runs: Counter[Hashable] = Counter()
        self.started: list[Hashable] = []
        self.finished: list[Hashable] = []
        self.started_at: dict[Hashable, float] = {}
        self.finished_at: dict[Hashable, float] = {}

    @asynccontextmanager
    async def run(self, group: Hashable, name: Hashable) -> AsyncIterator[None]:
        self.running[group] += 1
        self.peak[group] = max(self.peak[group], self.running[group])
        self.total += 1
        self.total_peak = max(self.total_peak, self.total)
        self.runs[name] += 1
        self.started.append(name)
        self.started_at[name] = time.monotonic()
        try:
            yield
        finally:
            self.running[group] -= 1
            self.total -= 1
            self.finished.append(name)
            self.finished_at[name] = time.monotonic()


async def eventually(
    predicate: Callable[[], Any], what: str, timeout: float = 10.0, interval: float = 0.01
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def state_of(execution: Execution) -> ExecutionState:
    await execution.sync()
    return execution.state


async def states(executions: list[Execution]) -> list[ExecutionState]:
    return [await state_of(execution) for execution in executions]


async def wait_parked(execution: Execution, timeout: float = 10.0) -> None:
    """A run due now is SCHEDULED again only once a worker has parked it."""

    async def parked() -> bool:
        return await state_of(execution) == ExecutionState.SCHEDULED

    await eventually(parked, f"{execution.key} to be parked", timeout)


async def wait_running(execution: Execution, timeout: float = 10.0) -> None:
    async def running() -> bool:
        return await state_of(execution) == ExecutionState.RUNNING

    await eventually(running, f"{execution.key} to be running", timeout)


async def all_keys(docket: Docket) -> list[str]:
    async with docket.redis() as redis:
        found = [key async for key in redis.scan_iter(match=f"{docket.prefix}:*")]
    return sorted(k.decode() if isinstance(k, bytes) else str(k) for k in found)


async def concurrency_keys(docket: Docket) -> list[str]:
    return [key for key in await all_keys(docket) if ":concurrency" in key]


async def assert_no_concurrency_keys(docket: Docket, timeout: float = 5.0) -> None:
    """Every holder, waiter, registry and limit entry is gone once the work has drained."""
    deadline = time.monotonic() + timeout
    while (left := await concurrency_keys(docket)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert left == [], f"concurrency keys left behind: {left}"


@asynccontextmanager
async def running_worker(worker: Worker, forever: bool = True) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``worker`` in the background for the block; stop and drain it afterwards."""
    task = asyncio.create_task(worker.run_forever() if forever else worker.run_until_finished())
    try:
        yield task
    finally:
        worker.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), 15)
        except TimeoutError:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            raise


async def run_all(docket: Docket, timeout: float = 15, **options: Any) -> None:
    async with Worker(docket, **{**FAST, **options}) as worker:
        await asyncio.wait_for(worker.run_until_finished(), timeout)


# -- declaration and validation -----------------------------------------------------------


@pytest.mark.parametrize("max_concurrent", [0, -1])
def test_max_concurrent_below_one_is_rejected(max_concurrent: int) -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        ConcurrencyLimit("customer_id", max_concurrent=max_concurrent)
    with pytest.raises(ValueError, match="max_concurrent"):
        ConcurrencyLimit(max_concurrent=max_concurrent)
    with pytest.raises(ValueError, match="max_concurrent"):
        ConcurrencyLimit(max_concurrent)


@pytest.mark.parametrize("scope", ["", "two words", "glob*", "what?", "[abc]", "{tag}", "a\nb"])
def test_bad_scopes_are_rejected(scope: str) -> None:
    with pytest.raises(ValueError, match="scope"):
        ConcurrencyLimit("customer_id", max_concurrent=1, scope=scope)


@pytest.mark.parametrize("scope", ["billing", "team-1.imports", "a:b", "x_y"])
def test_ordinary_scopes_are_accepted(scope: str) -> None:
    limit = ConcurrencyLimit("customer_id", max_concurrent=2, scope=scope)
    assert (limit.argument_name, limit.max_concurrent, limit.scope) == ("customer_id", 2, scope)


def test_constructor_forms() -> None:
    by_argument = ConcurrencyLimit("customer_id", 3)
    assert (by_argument.argument_name, by_argument.max_concurrent) == ("customer_id", 3)
    positional_count = ConcurrencyLimit(2)  # the Annotated form: the parameter is inferred
    assert (positional_count.argument_name, positional_count.max_concurrent) == (None, 2)
    per_task = ConcurrencyLimit(max_concurrent=4)
    assert (per_task.argument_name, per_task.max_concurrent) == (None, 4)
    assert ConcurrencyLimit().max_concurrent == 1
    shown = repr(ConcurrencyLimit("customer_id", 3, scope="billing"))
    assert "customer_id" in shown and "3" in shown and "billing" in shown


def test_a_task_may_declare_only_one_concurrency_limit(docket_name: str) -> None:
    async def greedy(
        a: int,
        b: int,
        first: ConcurrencyLimit = ConcurrencyLimit("a", 1),
        second: ConcurrencyLimit = ConcurrencyLimit("b", 1),
    ) -> None: ...

    memory = Docket(name=docket_name, url="memory://one-limit-only")
    with pytest.raises(ValueError):
        memory.register(greedy)


async def test_an_argument_the_task_was_not_called_with_fails_the_run_clearly(
    docket: Docket, url: str
) -> None:
    ran: list[Any] = []

    async def sync_customer(
        customer_id: int | None = None,
        limit: ConcurrencyLimit = ConcurrencyLimit("customer_id", max_concurrent=1),
    ) -> None:
        ran.append(customer_id)

    async def misnamed(
        customer: int,
        limit: ConcurrencyLimit = ConcurrencyLimit("tenant", max_concurrent=1),
    ) -> None:
        ran.append(customer)

    without = await docket.add(sync_customer)()
    wrong_name = await docket.add(misnamed)(7)
    await run_all(docket)

    assert ran == []
    for execution, name in ((without, "customer_id"), (wrong_name, "tenant")):
        assert await state_of(execution) == ExecutionState.FAILED
        with pytest.raises(Exception) as failure:
            await execution.get_result(timeout=timedelta(seconds=5))
        message = str(failure.value)
        assert "limit" in message  # the parameter that failed to resolve
        assert repr(name) in message and "not called with" in message
    await assert_no_concurrency_keys(docket)


# -- per argument value, per task, scope ---------------------------------------------------


async def test_default_style_limits_each_argument_value(docket: Docket, url: str) -> None:
    tracker = Tracker()

    async def sync_customer(
        customer_id: int,
        n: int,
        limit: ConcurrencyLimit = ConcurrencyLimit("customer_id", max_concurrent=1),
    ) -> None:
        async with tracker.run(customer_id, (customer_id, n)):
            await asyncio.sleep(0.03)

    executions = []
    for n in range(4):
        for customer_id in (1, 2, 3):
            # Positional and keyword calls name the same value, so share the same limit.
            if n % 2:
                executions.append(await docket.add(sync_customer)(customer_id, n))
            else:
                executions.append(await docket.add(sync_customer)(customer_id=customer_id, n=n))
    await run_all(docket, concurrency=10)

    assert await states(executions) == [ExecutionState.COMPLETED] * 12
    assert sorted(tracker.runs.values()) == [1] * 12
    assert dict(tracker.peak) == {1: 1, 2: 1, 3: 1}
    # Different customers do not wait for each other.
    assert tracker.total_peak >= 2
    await assert_no_concurrency_keys(docket)


async def test_annotated_style_limits_each_argument_value(docket: Docket, url: str) -> None:
    tracker = Tracker()

    async def sync_customer(customer_id: Annotated[int, ConcurrencyLimit(2)], n: int) -> None:
        async with tracker.run(customer_id, (customer_id, n)):
            await asyncio.sleep(0.05)

    executions = [
        await docket.add(sync_customer)(customer_id, n) for n in range(6) for customer_id in (1, 2)
    ]
    await run_all(docket, concurrency=10)

    assert await states(executions) == [ExecutionState.COMPLETED] * 12
    assert sorted(tracker.runs.values()) == [1] * 12
    # Exactly the limit: never more, and the second slot is really used.
    assert dict(tracker.peak) == {1: 2, 2: 2}
    assert tracker.total_peak >= 3
    await assert_no_concurrency_keys(docket)


async def test_per_task_limit_counts_every_run_of_the_task(docket: Docket, url: str) -> None:
    tracker = Tracker()

    async def rebuild_index(
        n: int, limit: ConcurrencyLimit = ConcurrencyLimit(max_concurrent=2)
    ) -> None:
        async with tracker.run("rebuild_index", ("rebuild_index", n)):
            await asyncio.sleep(0.04)

    async def refresh_cache(
        n: int, limit: ConcurrencyLimit = ConcurrencyLimit(max_concurrent=1)
    ) -> None:
        async with tracker.run("refresh_cache", ("refresh_cache", n)):
            await asyncio.sleep(0.04)

    executions = [await docket.add(rebuild_index)(n) for n in range(6)]
    executions += [await docket.add(refresh_cache)(n) for n in range(3)]
    await run_all(docket, concurrency=10)

    assert await states(executions) == [ExecutionState.COMPLETED] * 9
    assert sorted(tracker.runs.values()) == [1] * 9
    # Each task has its own limit, whatever its arguments are.
    assert dict(tracker.peak) == {"rebuild_index": 2, "refresh_cache": 1}
    assert tracker.total_peak == 3
    await assert_no_concurrency_keys(docket)


async def test_a_scope_is_shared_by_different_tasks(docket: Docket, url: str) -> None:
    tracker = Tracker()
    anyone = Tracker()  # every run for the account, whatever its scope

    async def export_invoices(
        account: str,
        n: int,
        limit: ConcurrencyLimit = ConcurrencyLimit(
            "account", max_concurrent=1, scope="billing-api"
        ),
    ) -> None:
        async with tracker.run(("billing", account), ("export", n)), anyone.run(account, n):
            await asyncio.sleep(0.04)

    async def import_payments(
        account: str,
        n: int,
        limit: ConcurrencyLimit = ConcurrencyLimit(
            "account", max_concurrent=1, scope="billing-api"
        ),
    ) -> None:
        async with tracker.run(("billing", account), ("import", n)), anyone.run(account, n):
            await asyncio.sleep(0.04)

    # The same argument under another scope is a different limit.
    async def send_reminders(
        account: str,
        n: int,
        limit: ConcurrencyLimit = ConcurrencyLimit("account", max_concurrent=1, scope="mailer"),
    ) -> None:
        async with tracker.run(("mailer", account), ("remind", n)), anyone.run(account, n):
            await asyncio.sleep(0.04)

    executions = []
    for n in range(3):
        executions.append(await docket.add(export_invoices)("acme", n))
        executions.append(await docket.add(import_payments)("acme", n))
        executions.append(await docket.add(send_reminders)("acme", n))
    await run_all(docket, concurrency=10)

    assert await states(executions) == [ExecutionState.COMPLETED] * 9
    assert sorted(tracker.runs.values()) == [1] * 9
    # Exports and imports of one account never overlapped: they share one slot...
    assert tracker.peak[("billing", "acme")] == 1
    assert tracker.peak[("mailer", "acme")] == 1
    # ...while the mailer scope ran alongside them.
    assert anyone.peak["acme"] == 2
    await assert_no_concurrency_keys(docket)


async def test_an_argument_limit_without_scope_is_shared_by_tasks_naming_that_argument(
    docket: Docket, url: str
) -> None:
    """As in the released docket: an argument limit is keyed by the argument's name and
    value, not by the task, so tasks naming the same argument share it."""
    tracker = Tracker()

    async def first_task(
        customer_id: int, limit: ConcurrencyLimit = ConcurrencyLimit("customer_id", 1)
    ) -> None:
        async with tracker.run(customer_id, ("first", customer_id)):
            await asyncio.sleep(0.04)

    async def second_task(customer_id: Annotated[int, ConcurrencyLimit(1)]) -> None:
        async with tracker.run(customer_id, ("second", customer_id)):
            await asyncio.sleep(0.04)

    executions = []
    for _ in range(2):
        executions.append(await docket.add(first_task)(5))
        executions.append(await docket.add(second_task)(5))
    await run_all(docket, concurrency=10)

    assert await states(executions) == [ExecutionState.COMPLETED] * 4
    assert tracker.peak[5] == 1
    await assert_no_concurrency_keys(docket)


# -- blocked runs ------------------------------------------------------------------------


async def test_a_blocked_run_waits_without_holding_a_worker_slot(docket: Docket, url: str) -> None:
    tracker = Tracker()
    others_done = asyncio.Event()
    holder_waited_in_vain: list[bool] = []

    async def per_key(
        key: str, n: int, limit: ConcurrencyLimit = ConcurrencyLimit("key", 1)
    ) -> None:
        async with tracker.run(key, (key, n)):
            if key == "A" and n == 1:
                # The holder keeps its slot until every B task has finished. If a blocked
                # A run sat in the second worker slot, no B could run and this times out.
                try:
                    await asyncio.wait_for(others_done.wait(), 5)
                except TimeoutError:
                    holder_waited_in_vain.append(True)
            elif key.startswith("B"):
                await asyncio.sleep(0.01)
                if sum(1 for name in tracker.finished if name[0].startswith("B")) == 3:
                    others_done.set()

    worker = Worker(docket, concurrency=2, **FAST)
    async with worker, running_worker(worker):
        first = await docket.add(per_key)("A", 1)
        await wait_running(first)
        blocked = [await docket.add(per_key)("A", n) for n in (2, 3)]
        for execution in blocked:
            await wait_parked(execution)
        others = [await docket.add(per_key)(f"B{n}", n) for n in range(4)]
        await eventually(lambda: len(tracker.finished) == 7, "every task to finish", 15)

    assert holder_waited_in_vain == []
    assert await states([first, *blocked, *others]) == [ExecutionState.COMPLETED] * 7
    b_finished = max(tracker.finished_at[(f"B{n}", n)] for n in range(4))
    a_started = min(tracker.started_at[("A", n)] for n in (2, 3))
    assert b_finished < a_started, "the B tasks finished while the A tasks were still waiting"
    assert tracker.peak["A"] == 1
    await assert_no_concurrency_keys(docket)


async def test_blocked_runs_start_in_the_order_they_were_parked(docket: Docket, url: str) -> None:
    tracker = Tracker()
    release = asyncio.Event()

    async def ordered(
        key: str, n: int, limit: ConcurrencyLimit = ConcurrencyLimit("key", 1)
    ) -> None:
        async with tracker.run(key, n):
            if n == 0:
                await asyncio.wait_for(release.wait(), 10)

    worker = Worker(docket, concurrency=10, **FAST)
    async with worker, running_worker(worker):
        holder = await docket.add(ordered)("k", 0)
        await wait_running(holder)
        waiting = []
        # Shuffled labels, parked one after another: the order of parking is the order
        # of starting, whatever the labels or the task keys (reverse-sorted here) say.
        labels = random.Random(7).sample(range(1, 100), 8)
        for position, label in enumerate(labels):
            execution = await docket.add(ordered, key=f"fifo-{99 - position:02d}")("k", label)
            await wait_parked(execution)
            waiting.append(execution)
        release.set()
        await eventually(lambda: len(tracker.finished) == 9, "every waiter to run", 15)

    assert tracker.started == [0, *labels]
    assert tracker.peak["k"] == 1
    assert await states([holder, *waiting]) == [ExecutionState.COMPLETED] * 9
    await assert_no_concurrency_keys(docket)


async def test_parked_runs_are_not_polled(
    docket: Docket, redis_client: Redis, redis_url: str
) -> None:
    """While runs are parked, nothing retries them: the acquire script runs once when a run
    is first claimed and once when a release wakes it, never in between."""
    tracker = Tracker()
    release = asyncio.Event()
    parked = 4

    async def quiet(key: str, n: int, limit: ConcurrencyLimit = ConcurrencyLimit("key", 1)) -> None:
        async with tracker.run(key, n):
            if n == 0:
                await asyncio.wait_for(release.wait(), 10)

    acquire_sha = scripts.ConcurrencyAcquire.sha
    release_sha = scripts.ConcurrencyRelease.sha
    assert acquire_sha and release_sha
    holders_prefix = f"{docket.prefix}:concurrency:"
    seen: list[tuple[float, str]] = []

    async def watch(monitor: Any) -> None:
        while True:
            info = await monitor.next_command()
            words = info["command"].split(" ")
            if len(words) < 4 or words[0].upper() not in ("EVALSHA", "EVAL"):
                continue
            # EVALSHA sha numkeys key1 ...: only this docket's concurrency scripts count.
            if not words[3].startswith(holders_prefix):
                continue
            if words[1] == acquire_sha or "Take a concurrency slot" in words[1]:
                seen.append((time.monotonic(), "acquire"))
            elif words[1] == release_sha or "Give back a run's concurrency slot" in words[1]:
                seen.append((time.monotonic(), "release"))

    def count(kind: str, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(1 for at, what in seen if what == kind and since <= at <= until)

    async with redis_client.monitor() as monitor:
        watcher = asyncio.create_task(watch(monitor))
        try:
            worker = Worker(docket, concurrency=10, **FAST)
            async with worker, running_worker(worker):
                holder = await docket.add(quiet)("k", 0)
                await wait_running(holder)
                waiters = [await docket.add(quiet)("k", n) for n in range(1, parked + 1)]
                for execution in waiters:
                    await wait_parked(execution)
                await eventually(lambda: count("acquire") == 1 + parked, "the first acquires")
                quiet_from = time.monotonic()
                await asyncio.sleep(1.0)
                quiet_until = time.monotonic()
                release.set()
                await eventually(lambda: len(tracker.finished) == 1 + parked, "the waiters", 15)
            # Let MONITOR catch up with the last commands before counting them all.
            await eventually(lambda: count("release") >= 1 + parked, "the last releases", 5)
            await asyncio.sleep(0.2)
        finally:
            watcher.cancel()
            with suppress(asyncio.CancelledError):
                await watcher

    assert count("acquire", quiet_from, quiet_until) == 0, "parked runs were polled"
    assert count("release", quiet_from, quiet_until) == 0
    # One acquire for the holder, then two per waiter: parked, and woken into its slot.
    assert count("acquire") == 1 + 2 * parked
    assert tracker.started == list(range(parked + 1))
    await assert_no_concurrency_keys(docket)


async def test_run_until_finished_does_not_return_while_runs_are_parked(
    docket: Docket, url: str
) -> None:
    tracker = Tracker()
    release = asyncio.Event()

    async def slow(key: str, n: int, limit: ConcurrencyLimit = ConcurrencyLimit("key", 1)) -> None:
        async with tracker.run(key, n):
            if n == 0:
                await asyncio.wait_for(release.wait(), 10)

    docket.register(slow)
    holding_worker = Worker(docket, concurrency=1, **FAST)
    async with holding_worker, running_worker(holding_worker):
        holder = await docket.add(slow)("k", 0)
        await wait_running(holder)
        waiter = await docket.add(slow)("k", 1)
        # The holding worker is full, so this one claims the waiter and parks it; then it
        # has nothing active, nothing queued and nothing scheduled for later.
        async with Worker(docket, concurrency=5, **FAST) as other:
            finishing = asyncio.create_task(other.run_until_finished())
            await wait_parked(waiter)
            await asyncio.sleep(0.5)
            assert not finishing.done(), "run_until_finished returned with a run parked"
            release.set()
            await asyncio.wait_for(finishing, 10)
        assert await states([holder, waiter]) == [ExecutionState.COMPLETED] * 2
    assert tracker.started == [0, 1]
    await assert_no_concurrency_keys(docket)


# -- leases, failures and shutdowns -----------------------------------------------------------


async def test_a_long_run_keeps_its_slot_past_the_redelivery_timeout(
    docket: Docket, url: str
) -> None:
    tracker = Tracker()

    async def long_job(
        key: str, n: int, limit: ConcurrencyLimit = ConcurrencyLimit("key", 1)
    ) -> None:
        async with tracker.run(key, n):
            await asyncio.sleep(1.2 if n == 0 else 0.01)

    first = await docket.add(long_job)("k", 0)
    second = await docket.add(long_job)("k", 1)
    # Three lease lengths: without renewal the slot would expire and let the second in.
    await run_all(docket, concurrency=5, redelivery_timeout=timedelta(milliseconds=400))

    # The slot lease (and the message lease) were renewed: no second copy, no overlap.
    assert tracker.peak["k"] == 1
    assert tracker.runs == Counter({0: 1, 1: 1})
    # Whichever went first (a partitioned docket keeps no order between partitions),
    # the other started only after it had finished.
    earlier, later = sorted((0, 1), key=lambda n: tracker.started_at[n])
    assert tracker.started_at[later] >= tracker.finished_at[earlier]
    assert await states([first, second]) == [ExecutionState.COMPLETED] * 2
    await assert_no_concurrency_keys(docket)


async def test_a_task_registered_after_the_worker_started_keeps_its_slot_renewed(
    docket: Docket, url: str
) -> None:
    """The lease renewal of slots is a worker-lifecycle loop; a task the worker only
    learns about after it started must still have its slot renewed."""
    tracker = Tracker()

    async def late_job(
        key: str, n: int, limit: ConcurrencyLimit = ConcurrencyLimit("key", 1)
    ) -> None:
        async with tracker.run(key, n):
            await asyncio.sleep(1.2 if n == 0 else 0.01)

    worker = Worker(docket, concurrency=5, redelivery_timeout=timedelta(milliseconds=400), **FAST)
    async with worker, running_worker(worker):
        await asyncio.sleep(0.1)  # the worker is running before the task is registered
        first = await docket.add(late_job)("k", 0)
        await wait_running(first)
        # Well past the lease: only a renewed slot still keeps the newcomer out.
        await asyncio.sleep(0.6)
        second = await docket.add(late_job)("k", 1)
        executions = [first, second]
        await eventually(lambda: len(tracker.finished) == 2, "both runs", 15)

    assert tracker.peak["k"] == 1, "the waiter started while the long run still held the slot"
    assert tracker.runs == Counter({0: 1, 1: 1})
    assert await states(executions) == [ExecutionState.COMPLETED] * 2


async def test_a_failed_or_cancelled_run_gives_its_slot_back(docket: Docket, url: str) -> None:
    tracker = Tracker()
    started_cancellable = asyncio.Event()

    async def fragile(
        key: str, n: int, limit: ConcurrencyLimit = ConcurrencyLimit("key", 1)
    ) -> None:
        async with tracker.run(key, n):
            if n == 0:
                raise RuntimeError("boom")
            if n == 1:
                started_cancellable.set()
                await asyncio.sleep(30)

    worker = Worker(docket, concurrency=5, **FAST)
    async with worker, running_worker(worker):
        failing = await docket.add(fragile)("k", 0)
        await eventually(lambda: tracker.finished == [0], "the failing run")
        cancelled = await docket.add(fragile)("k", 1)
        await asyncio.wait_for(started_cancellable.wait(), 10)
        waiter = await docket.add(fragile)("k", 2)
        await wait_parked(waiter)
        await docket.cancel(cancelled.key)
        await eventually(lambda: 2 in tracker.finished, "the waiter behind the cancelled run")

    assert await states([failing, cancelled, waiter]) == [
        ExecutionState.FAILED,
        ExecutionState.CANCELLED,
        ExecutionState.COMPLETED,
    ]
    assert tracker.started == [0, 1, 2]
    await assert_no_concurrency_keys(docket)


async def test_a_graceful_shutdown_releases_its_slots(docket: Docket, url: str) -> None:
    tracker = Tracker()
    running = asyncio.Event()
    go = asyncio.Event()

    async def held(key: str, n: int, limit: ConcurrencyLimit = ConcurrencyLimit("key", 1)) -> None:
        async with tracker.run(key, n):
            running.set()
            await asyncio.wait_for(go.wait(), 10)

    # A worker told to stop while its run holds the slot: it drains the run, and the run
    # gives the slot back.
    worker = Worker(docket, concurrency=1, **FAST)
    async with worker:
        serving = asyncio.create_task(worker.run_forever())
        holder = await docket.add(held)("k", 0)
        await asyncio.wait_for(running.wait(), 10)
        assert await concurrency_keys(docket), "the running task holds a slot"
        worker.stop()
        await asyncio.sleep(0.1)
        assert not serving.done(), "the worker drains its run before it returns"
        go.set()
        await asyncio.wait_for(serving, 10)
    assert await state_of(holder) == ExecutionState.COMPLETED
    assert await concurrency_keys(docket) == []

    # The same with a run parked behind it: the waiter is handed the slot (queued again)
    # and a later worker runs it.
    running.clear()
    go.clear()
    worker = Worker(docket, concurrency=2, **FAST)
    async with worker:
        serving = asyncio.create_task(worker.run_forever())
        holder = await docket.add(held)("k", 1)
        await asyncio.wait_for(running.wait(), 10)
        waiter = await docket.add(held)("k", 2)
        await wait_parked(waiter)
        worker.stop()
        await asyncio.sleep(0.1)
        go.set()
        await asyncio.wait_for(serving, 10)
    assert await state_of(holder) == ExecutionState.COMPLETED
    assert await state_of(waiter) == ExecutionState.QUEUED
    assert tracker.runs == Counter({0: 1, 1: 1})
    await run_all(docket)
    assert await state_of(waiter) == ExecutionState.COMPLETED
    assert tracker.runs == Counter({0: 1, 1: 1, 2: 1})
    assert tracker.peak["k"] == 1
    await assert_no_concurrency_keys(docket)


async def test_an_aborted_run_gives_its_slot_back_and_runs_again_later(
    docket: Docket, url: str
) -> None:
    tracker = Tracker()
    running = asyncio.Event()

    async def interrupted(
        key: str, n: int, limit: ConcurrencyLimit = ConcurrencyLimit("key", 1)
    ) -> None:
        async with tracker.run(key, n):
            running.set()
            if tracker.runs[n] == 1:
                await asyncio.sleep(30)

    worker = Worker(docket, concurrency=1, redelivery_timeout=timedelta(milliseconds=300), **FAST)
    async with worker:
        serving = asyncio.create_task(worker.run_forever())
        execution = await docket.add(interrupted)("k", 0)
        await asyncio.wait_for(running.wait(), 10)
        worker.abort()
        await asyncio.wait_for(serving, 10)
    # The cancelled run does not keep its slot for a lease; the message is redelivered.
    assert await concurrency_keys(docket) == []
    await run_all(docket, redelivery_timeout=timedelta(milliseconds=300))
    assert await state_of(execution) == ExecutionState.COMPLETED
    assert tracker.runs[0] == 2
    await assert_no_concurrency_keys(docket)


# -- cancel, replace and redelivery of parked runs ------------------------------------------


@pytest.mark.parametrize("replace_later", [False, True], ids=["replace-now", "replace-later"])
async def test_cancelled_and_replaced_parked_runs(
    docket: Docket, url: str, replace_later: bool
) -> None:
    tracker = Tracker()
    release = asyncio.Event()

    async def work(
        key: str, label: str, limit: ConcurrencyLimit = ConcurrencyLimit("key", 1)
    ) -> None:
        async with tracker.run(key, label):
            if label == "holder":
                await asyncio.wait_for(release.wait(), 10)

    worker = Worker(docket, concurrency=10, **FAST)
    async with worker, running_worker(worker):
        holder = await docket.add(work)("k", "holder")
        await wait_running(holder)
        doomed = await docket.add(work)("k", "cancelled")
        await wait_parked(doomed)
        old = await docket.add(work)("k", "old")
        await wait_parked(old)
        behind = await docket.add(work)("k", "behind")
        await wait_parked(behind)

        await docket.cancel(doomed.key)
        when = datetime.now(UTC) + timedelta(milliseconds=300 if replace_later else 0)
        new = await docket.replace(work, when=when, key=old.key)("k", "new")
        assert await state_of(doomed) == ExecutionState.CANCELLED

        release.set()
        await eventually(lambda: {"new", "behind"} <= set(tracker.finished), "the waiters", 15)
        await asyncio.sleep(0.2)  # room for anything that should not run to show up

    assert tracker.runs == Counter({"holder": 1, "new": 1, "behind": 1})
    assert "cancelled" not in tracker.started and "old" not in tracker.started
    assert tracker.peak["k"] == 1
    assert await state_of(doomed) == ExecutionState.CANCELLED
    assert await states([holder, new, behind]) == [ExecutionState.COMPLETED] * 3
    await assert_no_concurrency_keys(docket)


async def ghost_claims(redis_client: Redis, docket: Docket, count: int = 1) -> list[str]:
    """Claim messages as a consumer that then dies: they stay pending, unrenewed."""
    reply = await redis_client.xreadgroup(GROUP, "ghost", {docket.keys.stream: ">"}, count=count)
    return [mid.decode() for mid, _ in reply[0][1]] if reply else []


async def test_a_redelivered_run_that_finds_the_slot_taken_parks_and_runs_once(
    docket: Docket, redis_client: Redis
) -> None:
    tracker = Tracker()
    release = asyncio.Event()

    async def job(key: str, n: int, limit: ConcurrencyLimit = ConcurrencyLimit("key", 1)) -> None:
        async with tracker.run(key, n):
            if n == 0:
                await asyncio.wait_for(release.wait(), 10)

    docket.register(job)
    lease = timedelta(milliseconds=300)
    # One worker slot, taken by the holder: this worker reads nothing else.
    holding = Worker(docket, concurrency=1, redelivery_timeout=lease, **FAST)
    async with holding, running_worker(holding):
        holder = await docket.add(job)("k", 0)
        await wait_running(holder)
        redelivered = await docket.add(job)("k", 1)
        assert len(await ghost_claims(redis_client, docket)) == 1

        # A second worker takes the ghost's message over after the redelivery timeout,
        # finds the slot taken and parks the run.
        rescuer = Worker(docket, concurrency=1, redelivery_timeout=lease, **FAST)
        async with rescuer, running_worker(rescuer):
            await wait_parked(redelivered)
            assert tracker.runs[1] == 0
            release.set()
            await eventually(lambda: tracker.finished == [0, 1], "the redelivered run", 15)
            await asyncio.sleep(0.5)  # longer than the redelivery timeout: no second copy

    assert tracker.runs == Counter({0: 1, 1: 1})
    assert await states([holder, redelivered]) == [ExecutionState.COMPLETED] * 2
    pending = await redis_client.xpending(docket.keys.stream, GROUP)
    assert pending["pending"] == 0
    await assert_no_concurrency_keys(docket)


async def test_a_woken_run_whose_worker_died_is_redelivered_and_runs_once(
    docket: Docket, redis_client: Redis
) -> None:
    tracker = Tracker()
    release = asyncio.Event()

    async def job(key: str, n: int, limit: ConcurrencyLimit = ConcurrencyLimit("key", 1)) -> None:
        async with tracker.run(key, n):
            if n == 0:
                await asyncio.wait_for(release.wait(), 10)

    docket.register(job)
    first = Worker(docket, concurrency=2, **FAST)
    async with first:
        serving = asyncio.create_task(first.run_forever())
        holder = await docket.add(job)("k", 0)
        await wait_running(holder)
        waiter = await docket.add(job)("k", 1)
        await wait_parked(waiter)
        first.stop()  # takes nothing more, but drains the holder...
        await asyncio.sleep(0.2)
        release.set()  # ...whose release wakes the waiter into the stream, slot reserved
        await asyncio.wait_for(serving, 10)
    assert tracker.runs == Counter({0: 1})
    await eventually(lambda: _is_queued(waiter), "the waiter to be woken")

    # A worker claims the woken run and dies before running it.
    assert len(await ghost_claims(redis_client, docket)) == 1
    await run_all(docket, redelivery_timeout=timedelta(milliseconds=300))
    assert tracker.runs == Counter({0: 1, 1: 1})
    assert await states([holder, waiter]) == [ExecutionState.COMPLETED] * 2
    await assert_no_concurrency_keys(docket)


async def _is_queued(execution: Execution) -> bool:
    return await state_of(execution) == ExecutionState.QUEUED


# -- dead workers -------------------------------------------------------------------------

DOOMED_WORKER = textwrap.dedent(
    """
    import asyncio
    import sys
    from datetime import timedelta

    from docket import ConcurrencyLimit, CurrentDocket, Docket, Worker


    async def guarded(
        group: str,
        name: str,
        docket: Docket = CurrentDocket(),
        limit: ConcurrencyLimit = ConcurrencyLimit("group", max_concurrent=1),
    ) -> None:
        async with docket.redis() as redis:
            await redis.incr(f"ledger:{docket.name}:doomed-started:{name}")
        await asyncio.sleep(120)


    async def main() -> None:
        url, name = sys.argv[1], sys.argv[2]
        async with Docket(name=name, url=url) as docket:
            docket.register(guarded)
            async with Worker(
                docket,
                name="doomed",
                concurrency=4,
                redelivery_timeout=timedelta(seconds=1),
                minimum_check_interval=timedelta(milliseconds=10),
                scheduling_resolution=timedelta(milliseconds=10),
            ) as worker:
                await worker.run_forever()


    asyncio.run(main())
    """
)


@pytest.mark.parametrize("comes_back", [True, False], ids=["redelivered", "cancelled"])
async def test_slots_held_by_a_dead_worker_are_reclaimed(
    docket: Docket, redis_client: Redis, redis_url: str, tmp_path: Path, comes_back: bool
) -> None:
    """A worker process holding a slot (and having parked the other run) is SIGKILLed.
    Its run is either redelivered here, or cancelled in the meantime so that it never
    comes back: then only the expiry of the dead worker's slot lease lets the waiter in.
    Either way each run that should still happen runs to completion exactly once."""
    ledger = f"ledger:{docket.name}"

    async def guarded(
        group: str,
        name: str,
        current: Docket = CurrentDocket(),
        limit: ConcurrencyLimit = ConcurrencyLimit("group", max_concurrent=1),
    ) -> None:
        async with current.redis() as redis:
            await redis.incr(f"{ledger}:started:{name}")
            await asyncio.sleep(0.05)
            await redis.incr(f"{ledger}:done:{name}")

    async def counter(kind: str, name: str) -> int:
        return int(await redis_client.get(f"{ledger}:{kind}:{name}") or 0)

    async def parked_count() -> int:
        return sum(1 for s in await states(executions) if s == ExecutionState.SCHEDULED)

    executions = [await docket.add(guarded)("A", name) for name in ("one", "two")]
    script = tmp_path / "doomed_worker.py"
    script.write_text(DOOMED_WORKER)
    process = subprocess.Popen(
        [sys.executable, str(script), redis_url, docket.name],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        async def one_holds_one_parked() -> bool:
            started = [await counter("doomed-started", name) for name in ("one", "two")]
            return sorted(started) == [0, 1] and await parked_count() == 1

        await eventually(one_holds_one_parked, "the doomed worker to hold one, park one", 30)
        killed, waiting = (
            ("one", "two") if await counter("doomed-started", "one") else ("two", "one")
        )
        process.kill()
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        assert process.stderr is not None
        doomed_output = process.stderr.read().decode(errors="replace")
    by_name = dict(zip(("one", "two"), executions, strict=True))
    if not comes_back:
        await docket.cancel(by_name[killed].key)

    # The dead worker leased its slot and its message for 1s; this worker takes over.
    await run_all(docket, redelivery_timeout=timedelta(milliseconds=500))
    assert await counter("started", waiting) == 1, doomed_output[-2000:]
    assert await counter("done", waiting) == 1
    assert await state_of(by_name[waiting]) == ExecutionState.COMPLETED
    assert await counter("doomed-started", killed) == 1
    if comes_back:
        assert await counter("started", killed) == 1
        assert await counter("done", killed) == 1
        assert await state_of(by_name[killed]) == ExecutionState.COMPLETED
    else:
        assert await counter("started", killed) == 0
        assert await state_of(by_name[killed]) == ExecutionState.CANCELLED
    await assert_no_concurrency_keys(docket)
    await redis_client.delete(
        *[
            f"{ledger}:{k}:{n}"
            for k in ("started", "done", "doomed-started")
            for n in ("one", "two")
        ]
    )


# -- races ----------------------------------------------------------------------------------


async def test_many_workers_and_concurrent_adds_respect_the_limit(
    docket_name: str, url: str
) -> None:
    tracker = Tracker()

    async def contended(
        account: str,
        n: int,
        limit: ConcurrencyLimit = ConcurrencyLimit("account", max_concurrent=2),
    ) -> None:
        async with tracker.run(account, n):
            await asyncio.sleep(random.uniform(0, 0.02))

    dockets = [Docket(name=docket_name, url=url) for _ in range(4)]
    for each in dockets:
        await each.__aenter__()
    try:
        producer, *worker_dockets = dockets
        for each in worker_dockets:
            each.register(contended)
        workers = [Worker(each, concurrency=5, **FAST) for each in worker_dockets]
        for worker in workers:
            await worker.__aenter__()
        try:
            serving = [asyncio.create_task(worker.run_forever()) for worker in workers]
            executions = await asyncio.gather(
                *(producer.add(contended)("shared", n) for n in range(50))
            )
            await eventually(lambda: len(tracker.finished) >= 50, "all 50 runs", 30)
            await asyncio.sleep(0.2)  # room for a duplicate to show up
        finally:
            for worker in workers:
                worker.stop()
            await asyncio.wait_for(asyncio.gather(*serving, return_exceptions=True), 15)
            for worker in workers:
                await worker.__aexit__(None, None, None)

        assert tracker.runs == Counter(range(50)), "every task runs exactly once"
        assert tracker.peak["shared"] == 2
        assert await states(list(executions)) == [ExecutionState.COMPLETED] * 50
        await assert_no_concurrency_keys(producer)
    finally:
        for each in reversed(dockets):
            await each.__aexit__(None, None, None)


# -- leaks ----------------------------------------------------------------------------------


async def test_nothing_is_left_behind_once_everything_drains(
    docket: Docket, redis_client: Redis
) -> None:
    """After holders, waiters, a cancelled waiter, a failure, other values and a per-task
    limit have all drained, no concurrency key is left, and every other key is either one
    of the docket's permanent keys or a task record or result that expires."""
    release = asyncio.Event()

    async def mixed(
        key: str, n: int, limit: ConcurrencyLimit = ConcurrencyLimit("key", 2, scope="leaks")
    ) -> int:
        if n in (0, 1):
            await asyncio.wait_for(release.wait(), 10)
        if n == 2:
            raise RuntimeError("fails, and still gives its slot back")
        return n

    async def per_task(limit: ConcurrencyLimit = ConcurrencyLimit(max_concurrent=1)) -> None:
        await asyncio.sleep(0.01)

    worker = Worker(docket, concurrency=10, **FAST)
    async with worker, running_worker(worker):
        holders = [await docket.add(mixed)("k", n) for n in (0, 1)]
        for execution in holders:
            await wait_running(execution)
        waiters = []
        for n in range(2, 8):
            waiters.append(await docket.add(mixed)("k", n))
            await wait_parked(waiters[-1])
        others = [await docket.add(mixed)(f"other-{n}", 9) for n in range(5)]
        others += [await docket.add(per_task)() for _ in range(5)]
        await docket.cancel(waiters[1].key)
        release.set()

        async def drained() -> bool:
            return all(
                s in (ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.CANCELLED)
                for s in await states([*holders, *waiters, *others])
            )

        await eventually(drained, "everything to finish", 15)

    assert await state_of(waiters[0]) == ExecutionState.FAILED
    assert await state_of(waiters[1]) == ExecutionState.CANCELLED
    await assert_no_concurrency_keys(docket)
    permanent = docket.keys.permanent()
    for key in await all_keys(docket):
        if key in permanent:
            continue
        assert key.startswith((docket.keys.record_prefix, f"{docket.prefix}:result:")), key
        assert await redis_client.pttl(key) > 0, f"{key} would live forever"


async def test_fire_and_forget_tasks_park_and_run_too(docket_name: str, url: str) -> None:
    """With execution_ttl=0 there is no state to keep afterwards; a parked run must still
    wait for its turn and run."""
    tracker = Tracker()

    async def light(key: str, n: int, limit: ConcurrencyLimit = ConcurrencyLimit("key", 1)) -> None:
        async with tracker.run(key, n):
            await asyncio.sleep(0.02)

    async with Docket(name=docket_name, url=url, execution_ttl=timedelta(0)) as docket:
        for n in range(6):
            await docket.add(light)("k", n)
        await run_all(docket, concurrency=6)
        assert tracker.runs == Counter(range(6))
        assert tracker.peak["k"] == 1
        await assert_no_concurrency_keys(docket)
