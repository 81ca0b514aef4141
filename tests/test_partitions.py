"""Partitioned dockets: one logical docket over N hash tags, each task key in one
partition for good, and workers that consume every partition without exceeding their
concurrency or starving one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from _redis_topologies import RedisClusterSet, key_slot
from redis.asyncio import Redis

from docket import (
    ConcurrencyLimit,
    Debounce,
    Docket,
    ExecutionState,
    PartitionMismatch,
    Retry,
    Worker,
)
from docket._redis import scripts
from docket._redis.keys import partition_of
from docket.dead_letters import count_dead_letters, list_dead_letters, purge, requeue
from docket.execution import Disposition

pytestmark = pytest.mark.timeout(60)


def fast_worker(docket: Docket, concurrency: int = 10) -> Worker:
    return Worker(
        docket,
        concurrency=concurrency,
        minimum_check_interval=timedelta(milliseconds=5),
        scheduling_resolution=timedelta(milliseconds=5),
    )


def keys_in_each_partition(partitions: int, per_partition: int = 1) -> list[str]:
    """Task keys, ``per_partition`` of them mapping to each partition."""
    found: dict[int, list[str]] = {p: [] for p in range(partitions)}
    n = 0
    while any(len(keys) < per_partition for keys in found.values()):
        key = f"task-{n}"
        bucket = found[partition_of(key, partitions)]
        if len(bucket) < per_partition:
            bucket.append(key)
        n += 1
    return [key for keys in found.values() for key in keys]


def test_partition_keys_are_hash_tags_of_their_own_and_channels_are_shared() -> None:
    docket = Docket(name="orders", url="memory://layout", partitions=3)
    control, first, second = (keys.prefix for keys in docket.partition_keys)
    assert control == "{orders}"
    assert first.startswith("{orders/1") and second.startswith("{orders/2")
    assert docket.keys is docket.partition_keys[0]
    assert docket.partition_keys[2].stream == second + ":stream"
    assert docket.partition_keys[2].record("k") == second + ":task:k"
    # Pub/sub channels are the docket's, whatever the partition.
    assert docket.partition_keys[2].events("k") == docket.keys.events("k")
    assert docket.partition_keys[1].cancel_channel == "{orders}:cancel"
    assert "partitions=3" in repr(docket)


@pytest.mark.parametrize("partitions", [2, 3, 5, 8])
def test_partition_slots_are_spread_evenly_round_the_slot_ring(partitions: int) -> None:
    for name in ("orders", "bench", "a", "billing-eu"):
        docket = Docket(name=name, url="memory://ring", partitions=partitions)
        slots = [key_slot(keys.prefix) for keys in docket.partition_keys]
        spacing = 16384 / partitions
        for p, slot in enumerate(slots):
            offset = (slot - slots[0]) % 16384
            assert p * spacing - 1 <= offset < p * spacing + 32, (name, slots)


def test_a_key_maps_to_the_same_partition_in_every_process() -> None:
    keys = [f"order-{n}" for n in range(300)]
    here = [partition_of(key, 4) for key in keys]
    # Python's own str hash differs per process; the partition must not.
    code = (
        f"from docket._redis.keys import partition_of;print([partition_of(k, 4) for k in {keys!r}])"
    )
    there = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    ).stdout
    assert str(here) == there.strip()
    assert set(Counter(here)) == {0, 1, 2, 3}
    docket = Docket(name="spread", url="memory://spread", partitions=4)
    assert all(docket.keys_for(key).partition == p for key, p in zip(keys, here, strict=True))


@pytest.mark.parametrize("bad", [0, -1, 1025, "3", 2.0, True])
def test_a_partition_count_that_cannot_work_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="partitions must be"):
        Docket(name="bad", url="memory://bad", partitions=bad)  # type: ignore[arg-type]


def test_the_partition_count_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKET_PARTITIONS", "5")
    assert Docket(name="env", url="memory://env").partitions == 5
    assert Docket(name="env", url="memory://env", partitions=2).partitions == 2
    monkeypatch.setenv("DOCKET_PARTITIONS", "lots")
    with pytest.raises(ValueError, match="DOCKET_PARTITIONS must be a whole number"):
        Docket(name="env", url="memory://env")


async def test_a_docket_opened_with_another_partition_count_is_refused(
    redis_url: str, docket_name: str
) -> None:
    async with Docket(name=docket_name, url=redis_url, partitions=3):
        pass
    for other in (1, 2, 4):
        with pytest.raises(
            PartitionMismatch, match=r"made with partitions=3.*partitions=" + str(other)
        ):
            async with Docket(name=docket_name, url=redis_url, partitions=other):
                pass
    async with Docket(name=docket_name, url=redis_url, partitions=3):
        pass


async def test_an_unpartitioned_docket_holding_tasks_is_not_partitioned_under_them(
    redis_url: str, docket_name: str
) -> None:
    async def job() -> None: ...

    async with Docket(name=docket_name, url=redis_url) as docket:
        await docket.add(job, key="waiting", when=datetime.now(UTC) + timedelta(hours=1))()
    with pytest.raises(PartitionMismatch, match=r"holds 1 task.*laid out for 1 partition"):
        async with Docket(name=docket_name, url=redis_url, partitions=3):
            pass
    async with Docket(name=docket_name, url=redis_url) as docket:
        assert await docket.clear() == 1
    async with Docket(name=docket_name, url=redis_url, partitions=3) as docket:
        assert docket.partitions == 3


async def test_every_partition_runs_its_tasks_and_each_key_keeps_its_meaning(
    url: str, docket_name: str
) -> None:
    ran: list[str] = []

    async def job(key: str) -> str:
        ran.append(key)
        return key.upper()

    keys = keys_in_each_partition(3, per_partition=4)
    async with Docket(name=docket_name, url=url, partitions=3) as docket:
        docket.register(job)
        executions = [await docket.add(job, key=key)(key) for key in keys]
        # Idempotency holds whichever partition a key is in.
        again = [await docket.add(job, key=key)(key) for key in keys]
        assert {e.disposition for e in again} == {Disposition.ALREADY_SCHEDULED}
        later = keys_in_each_partition(3)
        for key in later:
            await docket.add(job, key=f"later-{key}", when=datetime.now(UTC) + timedelta(hours=1))(
                key
            )
        snapshot = await docket.snapshot()
        assert snapshot.total_tasks == len(keys) + len(later)
        # Cancelling and looking up reach a key's own partition.
        for key in later:
            found = await docket.get_execution(f"later-{key}")
            assert found is not None and found.state is ExecutionState.SCHEDULED
            await docket.cancel(f"later-{key}")
        async with fast_worker(docket) as worker:
            await worker.run_until_finished()
        assert sorted(ran) == sorted(keys)
        for execution in executions:
            assert await execution.get_result() == execution.key.upper()
            stored = await docket.get_execution(execution.key)
            assert stored is not None and stored.state is ExecutionState.COMPLETED
        for key in later:
            found = await docket.get_execution(f"later-{key}")
            assert found is not None and found.state is ExecutionState.CANCELLED


async def test_a_task_lives_wholly_in_its_partition(redis_url: str, docket_name: str) -> None:
    async def job() -> None: ...

    client = Redis.from_url(redis_url)
    try:
        async with Docket(name=docket_name, url=redis_url, partitions=3) as docket:
            key = keys_in_each_partition(3)[2]
            await docket.add(job, key=key, when=datetime.now(UTC) + timedelta(hours=1))()
            own = docket.partition_keys[2]
            assert await client.zrange(own.queue, 0, -1) == [key.encode()]
            assert await client.exists(own.record(key))
            for other in docket.partition_keys[:2]:
                assert await client.zcard(other.queue) == 0
                assert not await client.exists(other.record(key))
            assert await client.get(docket.keys.partition_count) == b"3"
    finally:
        await client.aclose()


async def test_future_tasks_retries_and_replacements_stay_in_their_partition(
    url: str, docket_name: str
) -> None:
    attempts: Counter[str] = Counter()

    async def flaky(key: str, retry: Retry = Retry(attempts=2)) -> None:
        attempts[key] += 1
        if attempts[key] == 1:
            raise RuntimeError("first try fails")

    keys = keys_in_each_partition(3, per_partition=2)
    async with Docket(name=docket_name, url=url, partitions=3) as docket:
        soon = datetime.now(UTC) + timedelta(milliseconds=200)
        for key in keys:
            await docket.add(flaky, key=key, when=soon + timedelta(hours=1))(key)
            await docket.replace(flaky, when=soon, key=key)(key)
        async with fast_worker(docket) as worker:
            await worker.run_until_finished()
    assert attempts == {key: 2 for key in keys}


async def test_a_worker_never_runs_more_than_its_concurrency_over_all_partitions(
    url: str, docket_name: str
) -> None:
    running = 0
    most = 0

    async def job() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1

    async with Docket(name=docket_name, url=url, partitions=4) as docket:
        for _ in range(60):
            await docket.add(job)()
        async with fast_worker(docket, concurrency=3) as worker:
            await worker.run_until_finished()
    assert most == 3


async def test_no_partition_waits_while_another_has_a_backlog(url: str, docket_name: str) -> None:
    order: list[int] = []
    keys = keys_in_each_partition(3, per_partition=30)

    async with Docket(name=docket_name, url=url, partitions=3) as docket:

        async def job(key: str) -> None:
            order.append(docket.keys_for(key).partition)
            await asyncio.sleep(0.001)

        for key in keys:
            await docket.add(job, key=key)(key)
        async with fast_worker(docket, concurrency=2) as worker:
            await worker.run_until_finished()
    assert len(order) == 90
    # Every partition is served from the start: none waits for another's 30 tasks.
    assert set(order[:15]) == {0, 1, 2}


async def test_a_concurrency_limit_holds_across_partitions(url: str, docket_name: str) -> None:
    running = 0
    most = 0
    finished: list[str] = []

    async def job(key: str, limit: ConcurrencyLimit = ConcurrencyLimit(max_concurrent=1)) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        finished.append(key)

    keys = keys_in_each_partition(3, per_partition=3)
    async with Docket(name=docket_name, url=url, partitions=3) as docket:
        for key in keys:
            await docket.add(job, key=key)(key)
        async with fast_worker(docket, concurrency=6) as worker:
            await worker.run_until_finished()
    assert most == 1
    assert sorted(finished) == sorted(keys)


async def test_strikes_reach_every_partition(url: str, docket_name: str) -> None:
    ran: list[str] = []

    async def job(customer: str) -> None:
        ran.append(customer)

    keys = keys_in_each_partition(3, per_partition=2)
    async with Docket(name=docket_name, url=url, partitions=3) as docket:
        await docket.strike(job, "customer", "==", "blocked")
        for key in keys:
            await docket.add(job, key=key)("blocked" if key in keys[::2] else "ok")
        async with fast_worker(docket) as worker:
            await worker.run_until_finished()
    assert ran == ["ok"] * (len(keys) // 2)


async def test_dead_letters_of_every_partition_are_listed_requeued_and_purged(
    redis_url: str, docket_name: str
) -> None:
    ran: list[str] = []

    async def job(key: str) -> None:
        ran.append(key)

    keys = keys_in_each_partition(3)
    async with Docket(name=docket_name, url=redis_url, partitions=3) as docket:
        docket.register(job)
        for key in keys:
            await docket.add(job, key=key)(key)
        # A worker that does not know the task dead-letters each in its partition.
        stranger = Docket(name=docket_name, url=redis_url, partitions=3)
        async with stranger, fast_worker(stranger) as worker:
            await worker.run_until_finished()
        assert await count_dead_letters(docket) == 3
        letters = await list_dead_letters(docket)
        assert sorted(letter.key or "" for letter in letters) == sorted(keys)
        ids = [letter.id for letter in letters]
        assert len(set(ids)) == 3
        # A letter's id says its partition (partition 0's is a plain stream id).
        by_key = {letter.key: letter.id for letter in letters}
        assert "@" not in by_key[keys[0]]
        assert by_key[keys[2]].endswith("@2")
        assert len(await list_dead_letters(docket, count=2)) == 2

        results = await requeue(docket, [by_key[keys[1]], by_key[keys[2]]])
        assert [r.status for r in results] == ["requeued", "requeued"]
        async with fast_worker(docket) as worker:
            await worker.run_until_finished()
        assert sorted(ran) == sorted(keys[1:])
        assert await purge(docket, [by_key[keys[0]]]) == 1
        assert await count_dead_letters(docket) == 0
        with pytest.raises(ValueError, match="names partition 7"):
            await purge(docket, ["1-0@7"])


async def test_a_message_in_the_wrong_partition_is_dead_lettered(
    redis_url: str, docket_name: str
) -> None:
    async def job() -> None: ...

    client = Redis.from_url(redis_url)
    try:
        async with Docket(name=docket_name, url=redis_url, partitions=3) as docket:
            docket.register(job)
            key = keys_in_each_partition(3)[0]
            # Written by a process that disagreed on the layout: partition 1's stream.
            await client.xadd(
                docket.partition_keys[1].stream,
                {
                    "key": key,
                    "gen": "1",
                    "function": "job",
                    "when": "0",
                    "attempt": "1",
                    "payload": "",
                    "sig": "",
                    "trace": "",
                    "ser": "pickle",
                },
            )
            async with fast_worker(docket) as worker:
                await worker.run_until_finished()
            letters = await list_dead_letters(docket)
            assert len(letters) == 1
            assert "belongs to partition 0, not partition 1" in letters[0].reason
    finally:
        await client.aclose()


async def test_partitions_spread_a_docket_over_a_clusters_shards(
    redis_cluster: RedisClusterSet, docket_name: str
) -> None:
    ran: list[str] = []
    running = 0
    most = 0

    async def job(key: str) -> None:
        ran.append(key)

    async def limited(
        key: str, limit: ConcurrencyLimit = ConcurrencyLimit(max_concurrent=1)
    ) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        ran.append(key)

    async with Docket(name=docket_name, url=redis_cluster.url, partitions=3) as spread:
        # The cluster's slots are split evenly between its 3 primaries: one partition each.
        shards = [redis_cluster.primary_for_key(keys.prefix).port for keys in spread.partition_keys]
        assert len(set(shards)) == 3
    async with Docket(name=f"{docket_name}-6", url=redis_cluster.url, partitions=6) as docket:
        keys = keys_in_each_partition(6, per_partition=3)
        for key in keys:
            await docket.add(job, key=key)(key)
        # A limit shared by runs of every partition, on every shard.
        for key in keys_in_each_partition(6, per_partition=2):
            await docket.add(limited, key=f"limited-{key}")(f"limited-{key}")
        async with fast_worker(docket) as worker:
            await worker.run_until_finished()
        assert sorted(ran) == sorted(keys + [f"limited-{k}" for k in keys_in_each_partition(6, 2)])
        assert most == 1
        for keys_of in docket.partition_keys:
            owner = redis_cluster.primary_for_key(keys_of.prefix)
            assert owner.execute_command("EXISTS", keys_of.stream) == 1


async def test_a_parked_run_is_woken_even_when_its_releaser_dies_before_waking_it(
    redis_url: str, docket_name: str
) -> None:
    """A partitioned docket releases a slot in two steps (the limit's partition, then
    the woken run's); a worker that dies between them leaves the run parked with its
    slot reserved. The maintenance sweep wakes it once a lease has passed."""
    release = asyncio.Event()
    done: list[str] = []

    async def job(role: str, limit: ConcurrencyLimit = ConcurrencyLimit(max_concurrent=1)) -> None:
        if role == "holder":
            await asyncio.wait_for(release.wait(), 10)
        done.append(role)

    first, second = keys_in_each_partition(2)
    async with Docket(name=docket_name, url=redis_url, partitions=2) as docket:
        worker = Worker(
            docket,
            minimum_check_interval=timedelta(milliseconds=5),
            redelivery_timeout=timedelta(milliseconds=400),
        )
        async with worker:
            serving = asyncio.create_task(worker.run_until_finished())
            held = await docket.add(job, key=first)("holder")
            while (await docket.get_execution(held.key)).state is not ExecutionState.RUNNING:  # type: ignore[union-attr]
                await asyncio.sleep(0.01)
            parked = await docket.add(job, key=second)("waiter")
            while (await docket.get_execution(parked.key)).state is not ExecutionState.SCHEDULED:  # type: ignore[union-attr]
                await asyncio.sleep(0.01)
            # The first step of a release, by a worker that then died: the slot goes to
            # the waiter, which nobody wakes in its partition.
            holders = f"{docket.prefix}:concurrency::task:job"
            control = docket.keys
            woken = await docket.engine.scripts.send(
                scripts.ConcurrencyFree(
                    holders=holders,
                    waiters=f"{holders}:waiters",
                    registry=control.concurrency_registry,
                    limits=control.concurrency_limits,
                    waking=f"{holders}:waking",
                    key=first,
                    lease=0.4,
                )
            )
            assert [w.decode() for w in woken] == [second]
            release.set()
            await asyncio.wait_for(serving, 15)
    assert done == ["holder", "waiter"]


@pytest.mark.parametrize("where", ["redis", "cluster"])
async def test_a_debounced_burst_over_every_partition_runs_once(
    where: str, request: pytest.FixtureRequest, docket_name: str
) -> None:
    url = request.getfixturevalue("redis_url" if where == "redis" else "cluster_url")
    runs: list[str] = []

    async def rebuild(key: str, debounce: Debounce = Debounce(timedelta(milliseconds=200))) -> None:
        runs.append(key)

    keys = keys_in_each_partition(3, per_partition=2)
    async with Docket(name=docket_name, url=url, partitions=3) as docket:
        executions = [await docket.add(rebuild, key=key)(key) for key in keys]
        async with fast_worker(docket) as worker:
            await worker.run_until_finished()
        states = []
        for execution in executions:
            await execution.sync()
            states.append(execution.state)
    assert len(runs) == 1
    assert states.count(ExecutionState.COMPLETED) == 1
    assert states.count(ExecutionState.CANCELLED) == len(keys) - 1
