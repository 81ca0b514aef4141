"""``Execution.metadata``: what an integration carries with a run beside its arguments,
in a message field of its own, through every path that moves or repeats the run."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _helpers import fast_worker
from redis.asyncio import Redis

from docket import ConcurrencyLimit, CurrentExecution, Docket, Execution, Perpetual, Retry
from docket.dead_letters import list_dead_letters, requeue
from docket.execution import TaskCall

pytestmark = [pytest.mark.timeout(60), pytest.mark.partitioned_too]

META = {"example.request": {"id": "r-1", "headers": [["accept-language", "fr"]]}}


def call(
    function: Any, *args: Any, when: datetime | None = None, key: str | None = None, **kwargs: Any
) -> TaskCall:
    return TaskCall(function, when, key, args, kwargs, metadata=META)


async def test_a_run_sees_its_metadata_and_not_among_its_arguments(
    docket: Docket, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []

    async def job(n: int, execution: Execution = CurrentExecution()) -> None:
        seen.append((execution.metadata, dict(execution.kwargs)))

    caplog.set_level(logging.INFO, logger="docket")
    later = datetime.now(UTC) + timedelta(milliseconds=100)
    [now, due] = await docket.add_many([call(job, 1), call(job, 2, when=later)])
    assert now.metadata == META
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()
    assert seen == [(META, {}), (META, {})]
    assert "example.request" not in caplog.text
    stored = await docket.get_execution(due.key)
    assert stored is not None and stored.metadata == {}  # finished: its payload is gone


async def test_retries_and_perpetual_successors_keep_the_metadata(docket: Docket, url: str) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    async def flaky(
        execution: Execution = CurrentExecution(), retry: Retry = Retry(attempts=2)
    ) -> None:
        seen.append(("flaky", execution.metadata))
        if execution.attempt == 1:
            raise RuntimeError("first attempt fails")

    async def again(
        execution: Execution = CurrentExecution(),
        perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=10)),
    ) -> None:
        seen.append(("again", execution.metadata))
        if len([s for s in seen if s[0] == "again"]) == 2:
            perpetual.cancel()

    await docket.add_many([call(flaky), call(again, key="again")])
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()
    assert sorted(name for name, _ in seen) == ["again", "again", "flaky", "flaky"]
    assert all(metadata == META for _, metadata in seen)


async def test_a_run_parked_behind_a_concurrency_limit_keeps_its_metadata(
    docket: Docket, url: str
) -> None:
    release = asyncio.Event()
    seen: list[dict[str, Any]] = []

    async def limited(
        n: int,
        execution: Execution = CurrentExecution(),
        limit: ConcurrencyLimit = ConcurrencyLimit(max_concurrent=1),
    ) -> None:
        seen.append(execution.metadata)
        if n == 0:
            await asyncio.wait_for(release.wait(), 10)

    async with fast_worker(docket) as worker:
        serving = asyncio.create_task(worker.run_until_finished())
        await docket.add_many([call(limited, 0)])
        while not seen:
            await asyncio.sleep(0.01)
        await docket.add_many([call(limited, 1)])  # parked, then woken
        await asyncio.sleep(0.2)
        release.set()
        await asyncio.wait_for(serving, 15)
    assert seen == [META, META]


async def test_a_requeued_dead_letter_keeps_its_metadata(docket: Docket, url: str) -> None:
    seen: list[dict[str, Any]] = []

    async def job(execution: Execution = CurrentExecution()) -> None:
        seen.append(execution.metadata)

    docket.register(job)
    await docket.add_many([call(job)])
    stranger = Docket(name=docket.name, url=docket.url)
    async with stranger, fast_worker(stranger) as worker:
        await worker.run_until_finished()  # it does not know the task: dead-letters it
    [letter] = await list_dead_letters(docket)
    assert letter.fields["meta"]
    assert [r.status for r in await requeue(docket, [letter.id])] == ["requeued"]
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()
    assert seen == [META]


async def test_metadata_is_signed_with_the_payload(redis_url: str, docket_name: str) -> None:
    ran: list[dict[str, Any]] = []

    async def job(execution: Execution = CurrentExecution()) -> None:
        ran.append(execution.metadata)

    client = Redis.from_url(redis_url)
    try:
        async with Docket(name=docket_name, url=redis_url, signing_key="k" * 32) as docket:
            docket.register(job)
            [execution] = await docket.add_many([call(job)])
            stream = docket.keys_for(execution.key).stream
            [(mid, fields)] = await client.xrange(stream)
            forged = {**fields, b"meta": b'{"example.request":{"id":"forged"}}'}
            await client.xdel(stream, mid)
            await client.xadd(stream, forged)
            await client.hset(docket.keys_for(execution.key).record(execution.key), "mid", "0-1")
            async with fast_worker(docket) as worker:
                await worker.run_until_finished()
            [letter] = await list_dead_letters(docket)
    finally:
        await client.aclose()
    assert ran == []
    assert "signature does not match" in letter.reason


async def test_metadata_that_is_not_json_is_refused_naming_the_task(docket: Docket) -> None:
    async def job() -> None: ...

    docket.register(job)
    with pytest.raises(TypeError, match=r"metadata of task 'job'.*JSON-compatible"):
        await docket.add_many(
            [TaskCall(job, None, None, (), {}, metadata={"when": datetime.now(UTC)})]
        )
