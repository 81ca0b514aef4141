"""On a Redis server a worker sends its blocking ``XREADGROUP`` and the script that claims
what it delivered (``take.lua``) together: Redis runs the script the moment the
read returns, so a task that arrives at an idle worker starts with no round trip of the
worker's own. What the script cannot claim at once goes the usual way."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from _helpers import running_forever, wait_for
from redis.asyncio import Redis

from docket import Docket, ExecutionState, Worker
from docket._redis.keys import GROUP
from docket._redis.scripts import Claim, Take

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ran(docket: Docket) -> list[Any]:
    """What the docket's ``job`` task was called with, run by run."""
    calls: list[Any] = []

    async def job(value: Any) -> None:
        calls.append(value)

    docket.register(job)
    return calls


@asynccontextmanager
async def workers_commands(redis_client: Redis) -> AsyncIterator[list[tuple[str, list[str]]]]:
    """Every command clients send while inside, as (client address, words), seen by
    MONITOR; commands a script runs show up there too, and are left out."""
    commands: list[tuple[str, list[str]]] = []
    monitoring = asyncio.Event()

    async def watch() -> None:
        async with redis_client.monitor() as monitor:
            monitoring.set()
            while True:
                command = await monitor.next_command()
                if command.get("client_type") != "lua":
                    client = f"{command.get('client_address')}:{command.get('client_port')}"
                    commands.append((client, command["command"].split(" ")))

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(monitoring.wait(), 5)
        yield commands
        await asyncio.sleep(0.2)  # let MONITOR catch up with the last commands
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


async def test_an_idle_worker_reads_and_claims_in_one_round_trip(
    docket: Docket, redis_client: Redis, ran: list[Any]
) -> None:
    claim_sha = Claim.sha
    take_sha = Take.sha
    async with (
        workers_commands(redis_client) as commands,
        Worker(docket) as worker,
        running_forever(worker),
    ):
        for n in range(5):
            await docket.add("job")(n)
            await wait_for(lambda n=n: n in ran, what=f"job {n} to run")
            await asyncio.sleep(0.05)  # the worker goes back to waiting

    assert ran == [0, 1, 2, 3, 4]
    scripts = [command[1] for _, command in commands if command[0] == "EVALSHA"]
    assert claim_sha not in scripts, "a fresh message needed a separate claim"
    # The reading connection sends each blocking read with the claim right behind it.
    reads = [i for i, (_, command) in enumerate(commands) if command[0] == "XREADGROUP"]
    assert len(reads) >= 5
    reader = {commands[i][0] for i in reads}
    assert len(reader) == 1
    from_reader = [
        command
        for client, command in commands
        if client in reader and command[0] in ("XREADGROUP", "EVALSHA")
    ]
    for read, after in itertools.pairwise(from_reader):
        if read[0] == "XREADGROUP":
            assert "BLOCK" in read
            assert after[:2] == ["EVALSHA", take_sha]


async def test_one_new_task_is_claimed_by_one_of_two_idle_workers(
    docket: Docket, redis_client: Redis, ran: list[Any]
) -> None:
    """Each worker blocks in XREADGROUP, so a new message wakes one of them, not all."""
    async with (
        workers_commands(redis_client) as commands,
        Worker(docket, name="first") as first,
        Worker(docket, name="second") as second,
        running_forever(first),
        running_forever(second),
    ):
        await asyncio.sleep(0.3)  # both are waiting
        since = len(commands)
        await docket.add("job")("only")
        await wait_for(lambda: ran == ["only"], what="the job to run")
        await asyncio.sleep(0.3)
        until = len(commands)

    # One worker's read returned and it blocked again; the other stayed blocked.
    blocking = [
        words for _, words in commands[since:until] if words[0] == "XREADGROUP" and "BLOCK" in words
    ]
    assert len(blocking) == 1, blocking


async def test_entries_delivered_but_never_claimed_are_claimed_by_the_next_read(
    docket: Docket, redis_client: Redis, ran: list[Any]
) -> None:
    """A read whose claim never ran (its connection dropped between the two) leaves
    fresh deliveries pending for the worker: the next call claims and runs them."""
    async with Worker(docket, name="reader") as worker:
        await asyncio.wait_for(worker.run_until_finished(), 20)  # it has read once
        await docket.add("job")("delivered-only")
        # A read of this worker's alone, as if the script behind it had been lost.
        await redis_client.xreadgroup(GROUP, "reader", {docket.keys.stream: ">"}, count=10)
        await asyncio.wait_for(worker.run_until_finished(), 20)

    assert ran == ["delivered-only"]
    assert await redis_client.xpending_range(docket.keys.stream, GROUP, "-", "+", 10) == []


async def test_a_stale_copy_is_acked_away_and_fresh_work_beside_it_runs(
    docket: Docket, redis_client: Redis, ran: list[Any]
) -> None:
    """An entry whose record has moved on (a newer generation) is not claimed by the
    combined read; the usual claim acks it away without running it or dead-lettering."""
    current = await docket.add("job", key="moved-on")("current")
    assert current.message_id is not None
    [(_, fields)] = await redis_client.xrange(
        docket.keys.stream, current.message_id, current.message_id
    )
    older = {**fields, b"gen": str(int(fields[b"gen"]) - 1).encode()}
    stale_mid = (await redis_client.xadd(docket.keys.stream, older)).decode()  # type: ignore[arg-type]
    await docket.add("job", key="neighbour")("neighbour")

    async with Worker(docket) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 20)

    assert sorted(ran) == ["current", "neighbour"]
    assert await redis_client.xrange(docket.keys.stream, stale_mid, stale_mid) == []
    pending = await redis_client.xpending_range(docket.keys.stream, GROUP, "-", "+", 10)
    assert pending == []
    assert await redis_client.xlen(docket.keys.dead_letters) == 0


async def test_a_server_that_forgot_its_scripts_while_the_worker_waited(
    docket: Docket, redis_client: Redis, ran: list[Any]
) -> None:
    async with Worker(docket) as worker, running_forever(worker):
        await docket.add("job")("before")
        await wait_for(lambda: ran == ["before"], what="the first job")
        await asyncio.sleep(0.1)  # the worker is blocked in its read, the script queued
        await redis_client.script_flush()
        execution = await docket.add("job")("after")
        await wait_for(lambda: ran == ["before", "after"], what="the job after SCRIPT FLUSH")
    await execution.sync()
    assert execution.state == ExecutionState.COMPLETED


async def test_a_message_claimed_at_once_but_undecodable_is_dead_lettered(
    docket: Docket, redis_client: Redis
) -> None:
    """A well-formed entry for a task this worker does not know: the combined read claims
    it (its record is queued with the same generation), then the worker dead-letters it
    and the record ends failed."""

    async def only_the_producer_knows(x: Any) -> None: ...

    execution = await docket.add(only_the_producer_knows)(1)
    del docket.tasks["only_the_producer_knows"]

    async with Worker(docket) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 20)

    await execution.sync()
    assert execution.state == ExecutionState.FAILED
    assert execution.error is not None and "unknown task" in execution.error
    [(_, letter)] = await redis_client.xrange(docket.keys.dead_letters)
    assert letter[b"field:function"] == b"only_the_producer_knows"
    assert await redis_client.xpending_range(docket.keys.stream, GROUP, "-", "+", 10) == []


async def test_a_worker_restarted_under_its_name_leaves_old_deliveries_to_redelivery(
    docket: Docket, redis_client: Redis, ran: list[Any]
) -> None:
    """Entries a dead predecessor of the same name was delivered are not claimed by the
    new process's reads: redelivery takes them, counting the delivery, so a task that
    kills its worker still reaches max_deliveries instead of looping."""
    async with Worker(docket, name="fixed") as first:
        await first._ensure_group()
    execution = await docket.add("job")("left behind")
    # The predecessor read it and died before claiming or running it.
    await redis_client.xreadgroup(GROUP, "fixed", {docket.keys.stream: ">"}, count=10)

    async with Worker(docket, name="fixed") as restarted, running_forever(restarted):
        await asyncio.sleep(0.5)
        assert ran == []
        [pending] = await redis_client.xpending_range(docket.keys.stream, GROUP, "-", "+", 10)
        assert pending["times_delivered"] == 1

    quick_redelivery = timedelta(milliseconds=100)
    async with Worker(docket, name="fixed", redelivery_timeout=quick_redelivery) as later:
        await asyncio.sleep(0.2)
        await asyncio.wait_for(later.run_until_finished(), 20)

    assert ran == ["left behind"]
    await execution.sync()
    assert execution.state == ExecutionState.COMPLETED


async def test_a_worker_whose_stream_vanished_before_its_first_read_recovers(
    docket: Docket, redis_client: Redis, ran: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Redis lost the stream (a restart without persistence) between the worker creating
    its group and its first read: the read fails with NOGROUP, the group is recreated,
    and new work runs."""
    async with Worker(docket, reconnection_delay=timedelta(milliseconds=50)) as worker:
        original = worker._ensure_group
        calls: list[int] = []
        lost = asyncio.Event()

        async def create_then_lose() -> None:
            await original()
            calls.append(1)
            if len(calls) == 1:  # only the first time, before the first read
                await redis_client.delete(docket.keys.stream)
                lost.set()

        worker._ensure_group = create_then_lose  # type: ignore[method-assign]

        async def group_is_back() -> bool:
            try:
                groups = await redis_client.xinfo_groups(docket.keys.stream)
            except Exception:
                return False
            return any(group["name"] == GROUP.encode() for group in groups)

        async with running_forever(worker):
            await asyncio.wait_for(lost.wait(), 10)
            # Back by itself, before any new task recreates the stream.
            await wait_for(group_is_back, timeout=5, what="the group to be recreated")
            await docket.add("job")("after the loss")
            await wait_for(lambda: ran == ["after the loss"], what="the job to run")

    # Told once, as a warning; the other loops do not add errors of their own for it.
    warned = [r for r in caplog.records if "consumer group is gone" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_reader_told_to_stop_sends_no_blocking_read(
    redis_url: str, docket_name: str
) -> None:
    """A worker that stops while its reader is between the non-blocking take and the
    blocking read must not then block (and take work it would start while stopping)."""
    from docket._worker_reading import open_reader

    async with Docket(name=docket_name, url=redis_url) as docket:
        reader = open_reader(docket, "stopping-worker", None, docket.keys)
        try:
            assert await reader.read(10, 0.0) == []  # a first read: the client id is known
            reader.unblock()
            started = asyncio.get_running_loop().time()
            assert await asyncio.wait_for(reader.read(10, 2.0), 1.0) == []
            assert asyncio.get_running_loop().time() - started < 0.5
        finally:
            await reader.aclose()
