"""Docket(result_storage=...): results kept in a py-key-value store instead of Redis."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any, SupportsFloat

import pytest
import pytest_asyncio
from _helpers import fast_worker
from key_value.aio.stores.memory import MemoryStore
from redis.asyncio import Redis

from docket import Docket, ExecutionState
from docket._results import RedisResultStore, ResultStoreError

pytestmark = pytest.mark.partitioned_too


class Refused(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.code = code


async def answer(x: int) -> dict[str, int]:
    return {"answer": x * 2}


async def nothing() -> None:
    return None


async def refuse(code: int) -> int:
    raise Refused("no", code)


class CountingStore(MemoryStore):
    """A MemoryStore that counts setup() calls."""

    def __init__(self) -> None:
        super().__init__()
        self.setups = 0

    async def setup(self) -> None:
        self.setups += 1
        await super().setup()


class BrokenStore(MemoryStore):
    """A store whose every put fails, like a store whose server went away."""

    async def put(
        self,
        key: str,
        value: Mapping[str, Any],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        raise OSError("the store is down")


@pytest_asyncio.fixture
async def store() -> AsyncIterator[MemoryStore]:
    yield MemoryStore()


async def result_keys(redis_client: Redis, docket: Docket) -> list[bytes]:
    return [key async for key in redis_client.scan_iter(match=f"{docket.keys.results}:*")]


async def test_results_round_trip_through_the_store(
    docket_name: str, redis_url: str, redis_client: Redis, store: MemoryStore
) -> None:
    ttl = timedelta(minutes=3)
    async with Docket(
        name=docket_name, url=redis_url, result_storage=store, execution_ttl=ttl
    ) as docket:
        assert docket.result_storage is store
        execution = await docket.add(answer)(21)
        async with fast_worker(docket) as worker:
            await worker.run_until_finished()

        assert await execution.get_result(timeout=5) == {"answer": 42}
        assert execution.result_key == f"{execution.key}:{execution.generation}"
        stored, remaining = await store.ttl(execution.result_key)
        assert stored is not None and set(stored) == {"data"}
        base64.b64decode(stored["data"], validate=True)
        assert remaining is not None and 0 < remaining <= ttl.total_seconds()
        # Nothing of the result went to Redis.
        assert await result_keys(redis_client, docket) == []


async def test_exceptions_round_trip_through_the_store(
    docket_name: str, url: str, store: MemoryStore
) -> None:
    async with Docket(name=docket_name, url=url, result_storage=store) as docket:
        execution = await docket.add(refuse)(418)
        async with fast_worker(docket) as worker:
            await worker.run_until_finished()

        with pytest.raises(Refused) as caught:
            await execution.get_result(timeout=5)
        assert caught.value.code == 418
        assert execution.state == ExecutionState.FAILED
        assert execution.result_key is not None
        assert await store.get(execution.result_key) is not None


async def test_none_results_are_not_stored(docket_name: str, url: str, store: MemoryStore) -> None:
    async with Docket(name=docket_name, url=url, result_storage=store) as docket:
        execution = await docket.add(nothing)()
        async with fast_worker(docket) as worker:
            await worker.run_until_finished()
        assert await execution.get_result(timeout=5) is None
        assert execution.result_key is None
        assert await store.keys() == []


async def test_each_run_of_a_key_has_its_own_result(
    docket_name: str, url: str, store: MemoryStore
) -> None:
    async with Docket(name=docket_name, url=url, result_storage=store) as docket:
        async with fast_worker(docket) as worker:
            first = await docket.add(answer, key="same")(1)
            await worker.run_until_finished()
            second = await docket.add(answer, key="same")(2)
            await worker.run_until_finished()

        assert await second.get_result(timeout=5) == {"answer": 4}
        await first.sync()
        # The key's record now belongs to the second run, so the first run reads the
        # second's result key; the first's own result is still under its generation.
        assert first.result_key == second.result_key == f"same:{second.generation}"
        assert sorted(await store.keys()) == sorted(
            [f"same:{second.generation - 1}", f"same:{second.generation}"]
        )


async def test_nothing_is_written_to_the_store_with_ttl_zero(
    docket_name: str, url: str, store: MemoryStore
) -> None:
    async with Docket(
        name=docket_name, url=url, result_storage=store, execution_ttl=timedelta(0)
    ) as docket:
        await docket.add(answer)(21)
        await docket.add(refuse)(500)
        async with fast_worker(docket) as worker:
            await worker.run_until_finished()
        assert await store.keys() == []


async def test_the_store_is_set_up_on_entering(docket_name: str, url: str) -> None:
    store = CountingStore()
    async with Docket(name=docket_name, url=url, result_storage=store) as docket:
        assert store.setups == 1
        assert docket.result_storage is store


async def test_a_store_that_fails_on_put_keeps_the_final_state(
    docket_name: str, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    async with Docket(name=docket_name, url=url, result_storage=BrokenStore()) as docket:
        completed = await docket.add(answer)(21)
        failed = await docket.add(refuse)(500)
        async with fast_worker(docket) as worker:
            await worker.run_until_finished()

        await completed.sync()
        assert completed.state == ExecutionState.COMPLETED
        with pytest.raises(ResultStoreError) as caught:
            await completed.get_result(timeout=5)
        message = str(caught.value)
        assert "could not be stored in result_storage (BrokenStore)" in message
        assert "the store is down" in message
        assert completed.key in message

        await failed.sync()
        assert failed.state == ExecutionState.FAILED
        with pytest.raises(RuntimeError, match="Refused"):
            await failed.get_result(timeout=5)

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "could not be stored in result_storage (BrokenStore)" in logged


# -- the default: results in the docket's own Redis ---------------------------------------


async def test_by_default_results_stay_in_redis(
    docket_name: str, redis_url: str, redis_client: Redis
) -> None:
    async with Docket(name=docket_name, url=redis_url) as docket:
        assert isinstance(docket.result_storage, RedisResultStore)
        execution = await docket.add(answer)(21)
        async with fast_worker(docket) as worker:
            await worker.run_until_finished()

        assert await execution.get_result(timeout=5) == {"answer": 42}
        assert execution.result_key == f"{execution.key}:{execution.generation}"
        redis_key = docket.keys.result(execution.key, execution.generation)
        assert await result_keys(redis_client, docket) == [redis_key.encode()]
        assert redis_key == f"{docket.results_collection}:{execution.result_key}"
        # The settle script wrote the sealed result; the view hands it out as released.
        stored = await docket.result_storage.get(execution.result_key)
        assert stored is not None
        assert base64.b64decode(stored["data"]) == await redis_client.get(redis_key)


async def test_the_default_store_is_a_key_value_store(docket: Docket) -> None:
    store = docket.result_storage
    await store.put("a", {"x": 1}, ttl=300)
    await store.put("b", {"y": 2})
    assert await store.get("a") == {"x": 1}
    value, remaining = await store.ttl("a")
    assert value == {"x": 1} and remaining is not None and 0 < remaining <= 300
    assert await store.ttl("b") == ({"y": 2}, None)
    assert await store.ttl("missing") == (None, None)
    assert await store.get_many(["a", "b", "missing"]) == [{"x": 1}, {"y": 2}, None]
    await store.put_many(["c", "d"], [{"c": 3}, {"d": 4}], collection=docket.key("mine"))
    assert await store.get("c", collection=docket.key("mine")) == {"c": 3}
    assert await store.get("c") is None
    assert await store.delete("a") is True
    assert await store.delete("a") is False
    assert await store.delete_many(["b", "missing"]) == 1
    assert await store.delete_many(["c", "d"], collection=docket.key("mine")) == 2
