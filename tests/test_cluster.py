"""A docket on a Redis Cluster: one hash slot on one shard, pub/sub across the cluster,
and producers and workers that follow a resharding and a failover of that shard."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from _failover import run_through_fault
from _redis_server import RedisServer
from _redis_topologies import RedisClusterSet

from docket import Docket, ExecutionState, Progress, Worker
from docket._redis.client import TopologyError

pytestmark = [pytest.mark.topology, pytest.mark.timeout(120)]


async def test_every_key_of_a_docket_lives_on_the_shard_of_its_slot(
    redis_cluster: RedisClusterSet, docket_name: str
) -> None:
    async def noop() -> None: ...

    async with Docket(name=docket_name, url=redis_cluster.url) as docket:
        await docket.add(noop, key="now")()
        await docket.add(noop, key="later", when=datetime.now(UTC) + timedelta(hours=1))()
        owner = redis_cluster.primary_for_key(docket.prefix)
        keys = owner.execute_command("KEYS", f"{docket.prefix}:*")
        assert len(keys) >= 4  # stream, queue, records, generation counter
        slots = {redis_cluster.slot_of(key) for key in keys}
        assert slots == {redis_cluster.slot_of(docket.prefix)}
        for node in redis_cluster.primaries():
            if node is not owner:
                assert node.execute_command("KEYS", f"{docket.prefix}:*") == []


async def test_tasks_run_cancel_and_report_progress_on_a_cluster(
    redis_cluster: RedisClusterSet, docket_name: str
) -> None:
    async def step(progress: Progress = Progress()) -> str:
        await progress.set_total(3)
        for _ in range(3):
            await progress.increment()
            await asyncio.sleep(0.05)
        return "done"

    async with Docket(name=docket_name, url=redis_cluster.url) as docket:
        assert docket.engine.connection.wire is not None
        later = await docket.add(step, key="later", when=datetime.now(UTC) + timedelta(hours=1))()
        await docket.cancel("later")
        assert (await docket.get_execution("later")) is not None
        await later.sync()
        assert later.state is ExecutionState.CANCELLED

        execution = await docket.add(step, key="now")()
        seen: list[int] = []

        async def follow() -> None:
            async for event in execution.subscribe():
                if event["type"] == "progress" and event.get("current") is not None:
                    seen.append(int(event["current"]))
                if event["type"] == "state" and event["state"] == ExecutionState.COMPLETED:
                    return

        following = asyncio.create_task(follow())
        await asyncio.sleep(0.1)
        async with Worker(docket) as worker:
            await worker.run_until_finished()
        await asyncio.wait_for(following, 10)
        assert await execution.get_result() == "done"
        assert seen and max(seen) == 3


async def test_a_strike_reaches_a_worker_over_cluster_pub_sub(
    redis_cluster: RedisClusterSet, docket_name: str
) -> None:
    ran: list[int] = []

    async def record(n: int) -> None:
        ran.append(n)

    async with (
        Docket(name=docket_name, url=redis_cluster.url) as producer,
        Docket(name=docket_name, url=redis_cluster.url) as consumer,
    ):
        consumer.register(record)
        await producer.strike("record", "n", "==", 1)
        await asyncio.wait_for(_struck(consumer, "record"), 10)
        await consumer.add(record)(1)
        await consumer.add(record)(2)
        async with Worker(consumer) as worker:
            await worker.run_until_finished()
    assert ran == [2]


async def _struck(docket: Docket, task: str) -> None:
    # Heard over pub/sub: the consumer's monitor reloads the strikes when told.
    while not docket.strike_list.is_stricken(task, {"n": 1}):
        await asyncio.sleep(0.05)


async def test_a_cluster_url_that_reaches_a_single_server_is_refused(
    redis_server: RedisServer, docket_name: str
) -> None:
    url = f"redis+cluster://127.0.0.1:{redis_server.port}"
    with pytest.raises(TopologyError, match="not in cluster mode"):
        async with Docket(name=docket_name, url=url):
            pass


async def test_producer_and_worker_follow_the_docket_shard_through_a_failover(
    private_redis_cluster: Callable[..., RedisClusterSet], docket_name: str
) -> None:
    cluster = private_redis_cluster()
    old = cluster.primary_for_key("{" + docket_name + "}")

    async def kill_and_wait() -> None:
        await asyncio.to_thread(cluster.kill_primary, old)
        await asyncio.to_thread(cluster.wait_for_failover, old)

    ledger = await run_through_fault(cluster.url, docket_name, kill_and_wait)
    assert cluster.primary_for_key("{" + docket_name + "}") is not old
    assert not ledger.lost, f"acknowledged but never run: {sorted(ledger.lost)[:10]}"
    assert any(key.startswith("after-") for key in ledger.finished)


async def test_producer_and_worker_follow_the_docket_slot_to_another_shard(
    private_redis_cluster: Callable[..., RedisClusterSet], docket_name: str
) -> None:
    # Half-way through (the slot MIGRATING, its keys moving) clients hear ASK and
    # TRYAGAIN; once it is done, MOVED.
    cluster = private_redis_cluster(replicas_per_primary=0)
    prefix = "{" + docket_name + "}"
    slot = cluster.slot_of(prefix)
    source = cluster.primary_for_key(prefix)
    target = next(node for node in cluster.primaries() if node is not source)

    async def reshard() -> None:
        migration = await asyncio.to_thread(cluster.begin_migration, slot, target)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(cluster.finish_migration, migration)

    ledger = await run_through_fault(cluster.url, docket_name, reshard, replicated=False)
    assert cluster.primary_for_key(prefix) is target
    assert not ledger.lost, f"acknowledged but never run: {sorted(ledger.lost)[:10]}"
    assert any(key.startswith("after-") for key in ledger.finished)
