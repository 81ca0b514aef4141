"""The released Docket's names for its Redis layout, mapped onto ours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from _helpers import fast_worker, running_forever, wait_for
from redis.asyncio import Redis

from docket import Docket


async def hello() -> str:
    return "hello"


def test_names_map_onto_our_keys() -> None:
    docket = Docket(name="shop", url="memory://names")
    keys = docket.keys
    assert docket.prefix == "{shop}"
    assert docket.queue_key == keys.queue
    assert docket.stream_key == keys.stream
    assert docket.runs_key("k") == keys.record("k")
    assert docket.workers_set == keys.workers
    assert docket.worker_tasks_set("w") == keys.worker_tasks("w")
    assert docket.worker_group_name == "docket-workers"
    assert docket.results_collection == keys.results
    assert docket.labels() == {"docket.name": "shop"}


def test_the_key_names_are_read_only_as_released() -> None:
    docket = Docket(name="shop", url="memory://names")
    for name in ("queue_key", "stream_key", "workers_set", "results_collection", "prefix"):
        with pytest.raises(AttributeError):
            setattr(docket, name, "{other}:queue")
    assert docket.queue_key == "{shop}:queue"


def test_every_name_is_under_the_prefix_and_in_its_slot() -> None:
    docket = Docket(name="shop", url="memory://names")
    names = [
        docket.key("fastmcp:task:1"),
        docket.queue_key,
        docket.stream_key,
        docket.runs_key("k"),
        docket.known_task_key("k"),
        docket.parked_task_key("k"),
        docket.stream_id_key("k"),
        docket.cancel_channel("k"),
        docket.results_collection,
        docket.workers_set,
        docket.worker_tasks_set("w"),
        docket.task_workers_set("t"),
        docket.redelivery_sweep_key,
    ]
    for name in names:
        # The first {...} is the hash tag: the same for every name, so one slot.
        assert name.startswith("{shop}:"), name
    assert len(set(names)) == len(names)


def test_names_with_no_equivalent_are_distinct_from_our_keys() -> None:
    docket = Docket(name="shop", url="memory://names")
    ours = {
        docket.keys.record("k"),
        docket.keys.cancel_channel,
        docket.keys.stream,
        docket.keys.queue,
        docket.keys.workers,
    }
    for unused in (
        docket.known_task_key("k"),
        docket.parked_task_key("k"),
        docket.stream_id_key("k"),
        docket.cancel_channel("k"),
        docket.task_workers_set("t"),
        docket.redelivery_sweep_key,
    ):
        assert unused not in ours
        assert unused.startswith("{shop}:unused:")
    # key() never lands on one of ours, whatever the suffix.
    for suffix in ("stream", "queue", "workers", "task:k", "result:k:1"):
        assert docket.key(suffix) not in ours | {docket.keys.result("k", 1)}


async def test_the_names_hold_what_they_say(docket: Docket, redis_client: Redis) -> None:
    scheduled = await docket.add(hello, key="now")()
    assert await redis_client.hget(docket.runs_key(scheduled.key), "state") in (
        b"queued",
        b"scheduled",
    )
    assert await redis_client.type(docket.stream_key) == b"stream"
    groups = await redis_client.xinfo_groups(docket.stream_key)
    assert [g["name"] for g in groups] == [docket.worker_group_name.encode()]

    await docket.add(hello, key="future", when=datetime.now(UTC) + timedelta(hours=1))()
    assert await redis_client.zscore(docket.queue_key, "future") is not None

    worker = fast_worker(docket, name="names-worker")
    async with worker, running_forever(worker):

        async def registered() -> bool:
            return await redis_client.zscore(docket.workers_set, "names-worker") is not None

        await wait_for(registered, what="the worker's heartbeat")
        tasks = await redis_client.smembers(docket.worker_tasks_set("names-worker"))
        assert b"hello" in tasks
        assert await scheduled.get_result(timeout=5) == "hello"
    assert await redis_client.hget(docket.runs_key("now"), "state") == b"completed"


async def test_key_data_is_left_alone(docket: Docket, redis_client: Redis) -> None:
    """What others keep under docket.key() survives runs, cancellations and clear(),
    with plain get/set/hset."""
    plain, hashed = docket.key("fastmcp:task:1"), docket.key("fastmcp:task:1:meta")
    async with docket.redis() as redis:
        await redis.set(plain, "value", ex=300)
        await redis.hset(hashed, mapping={"a": "1"})

    await docket.add(hello)()
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()
    await docket.add(hello, key="pending", when=datetime.now(UTC) + timedelta(hours=1))()
    await docket.cancel("pending")
    await docket.add(hello, when=datetime.now(UTC) + timedelta(hours=1))()
    assert await docket.clear() == 1

    assert await redis_client.get(plain) == b"value"
    assert await redis_client.hgetall(hashed) == {b"a": b"1"}
    external = [
        key.decode()
        async for key in redis_client.scan_iter(match=f"{docket.prefix}:*")
        if key.decode().startswith(docket.keys.external_prefix)
    ]
    assert sorted(external) == sorted([plain, hashed])
    await redis_client.delete(plain, hashed)
