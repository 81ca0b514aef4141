"""The worker under faults: long tasks and leases, dead consumers, redelivery and the
dead-letter stream, killed and signalled worker processes, Redis restarts and killed
connections (docs/reliability.md).

Tests that restart Redis, kill its connections or run worker processes use a
``private_redis`` of their own; the child workers record their runs in ledger keys
outside the docket's keys. Dead consumers are simulated with raw XREADGROUP/XCLAIM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _helpers import fast_worker, wait_for
from _redis_server import RedisServer
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from docket import (
    CurrentExecution,
    CurrentWorker,
    Docket,
    Execution,
    ExecutionState,
    Worker,
)
from docket._redis.keys import GROUP

# --- helpers ------------------------------------------------------------------------------


async def pending_count(redis: Redis, docket: Docket) -> int:
    info = await redis.xpending(docket.keys.stream, GROUP)
    return int(info["pending"])


async def read_as_dead_consumer(redis: Redis, docket: Docket, consumer: str) -> list[bytes]:
    """Take every new message as a consumer that will never ack (a worker that died
    right after reading); returns their ids."""
    reply = await redis.xreadgroup(GROUP, consumer, {docket.keys.stream: ">"}, count=100)
    return [mid for _, entries in reply for mid, _ in entries]


@asynccontextmanager
async def subprocess_python(
    script: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``script`` in a child Python (its stderr goes to ``<script>.stderr``); it is
    killed if the test leaves it behind."""
    with script.with_suffix(".stderr").open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            *args,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def exit_code(process: asyncio.subprocess.Process, timeout: float) -> int:
    try:
        return await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"the worker process did not exit within {timeout}s") from None


# --- leases ------------------------------------------------------------------------------


async def test_a_task_longer_than_the_redelivery_timeout_is_not_stolen(docket: Docket) -> None:
    runs: list[str] = []

    async def long_task(worker: Worker = CurrentWorker()) -> None:
        runs.append(worker.name)
        await asyncio.sleep(1.2)

    execution = await docket.add(long_task, key="long")()
    timeout = timedelta(milliseconds=300)
    async with (
        fast_worker(docket, name="first", redelivery_timeout=timeout) as first,
        fast_worker(docket, name="second", redelivery_timeout=timeout) as second,
    ):
        await asyncio.wait_for(
            asyncio.gather(first.run_until_finished(), second.run_until_finished()), 20
        )

    assert len(runs) == 1, f"ran {len(runs)} times, on {runs}"
    await execution.sync()
    assert execution.state == ExecutionState.COMPLETED


# --- redelivery and dead letters -------------------------------------------------------------


async def test_messages_of_a_dead_consumer_are_redelivered_after_the_timeout(
    docket: Docket, redis_client: Redis
) -> None:
    seen: list[tuple[bool, int, float]] = []

    async def orphan(execution: Execution = CurrentExecution()) -> None:
        seen.append((execution.redelivered, execution.attempt, time.monotonic()))

    execution = await docket.add(orphan, key="orphan")()
    read_at = time.monotonic()
    assert len(await read_as_dead_consumer(redis_client, docket, "dead-consumer")) == 1

    async with fast_worker(docket, redelivery_timeout=timedelta(milliseconds=300)) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 20)

    assert [(redelivered, attempt) for redelivered, attempt, _ in seen] == [(True, 1)]
    # Not taken from its reader before the timeout (Redis counts idle time in whole ms).
    assert seen[0][2] - read_at >= 0.3 - 0.002
    await execution.sync()
    assert execution.state == ExecutionState.COMPLETED
    assert await pending_count(redis_client, docket) == 0
    assert await redis_client.xlen(docket.keys.dead_letters) == 0


async def test_a_message_delivered_max_deliveries_times_still_runs(
    docket: Docket, redis_client: Redis
) -> None:
    ran: list[str] = []

    async def survivor(execution: Execution = CurrentExecution()) -> None:
        ran.append(execution.key)

    await docket.add(survivor, key="survivor")()
    await read_as_dead_consumer(redis_client, docket, "dead-consumer")  # delivery 1

    async with fast_worker(  # its reclaim is delivery 2 of at most 2
        docket, redelivery_timeout=timedelta(milliseconds=300), max_deliveries=2
    ) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 20)

    assert ran == ["survivor"]
    assert await redis_client.xlen(docket.keys.dead_letters) == 0


async def test_a_message_delivered_more_than_max_deliveries_is_dead_lettered(
    docket: Docket, redis_client: Redis
) -> None:
    ran: list[str] = []

    async def doomed() -> None:
        ran.append("doomed")

    execution = await docket.add(doomed, key="doomed")()
    [mid] = await read_as_dead_consumer(redis_client, docket, "dead-consumer-1")  # delivery 1
    # A second consumer takes it over and dies too (XCLAIM counts a delivery).
    await redis_client.xclaim(docket.keys.stream, GROUP, "dead-consumer-2", 0, [mid])

    async with fast_worker(  # its reclaim would be delivery 3 of at most 2
        docket, redelivery_timeout=timedelta(milliseconds=300), max_deliveries=2
    ) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 20)

    assert ran == []
    dead = await redis_client.xrange(docket.keys.dead_letters)
    assert len(dead) == 1
    _, fields = dead[0]
    assert fields[b"field:key"] == b"doomed"
    assert fields[b"field:function"] == b"doomed"
    assert fields[b"stream_id"] == mid
    assert int(fields[b"deliveries"]) == 3
    assert fields[b"reason"]
    assert await redis_client.xlen(docket.keys.stream) == 0
    assert await pending_count(redis_client, docket) == 0
    await execution.sync()
    assert execution.state == ExecutionState.FAILED


# --- killed and signalled worker processes ----------------------------------------------------

KILLED_WORKER = """
import asyncio, os, sys
from datetime import timedelta

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from docket import Docket, Worker

url, name, ledger = sys.argv[1:4]


async def crashy() -> None:
    client = Redis.from_url(url)
    try:
        await client.rpush(ledger, f"start:{os.getpid()}")
    finally:
        await client.aclose()
    await asyncio.sleep(60)


async def main() -> None:
    async with Docket(name=name, url=url) as docket:
        docket.register(crashy)
        async with Worker(
            docket,
            name=f"doomed-{os.getpid()}",
            redelivery_timeout=timedelta(milliseconds=500),
            minimum_check_interval=timedelta(milliseconds=5),
        ) as worker:
            await worker.run_forever()


asyncio.run(main())
"""


async def test_the_task_of_a_sigkilled_worker_runs_again_on_another(
    tmp_path: Path, private_redis: RedisServer, docket_name: str
) -> None:
    script = tmp_path / "killed_worker.py"
    script.write_text(KILLED_WORKER)
    ledger = f"ledger:{docket_name}:runs"
    redelivered: list[bool] = []

    async def crashy(execution: Execution = CurrentExecution()) -> None:
        redelivered.append(execution.redelivered)
        async with Redis.from_url(private_redis.url) as client:
            await client.rpush(ledger, "start:survivor")

    client = Redis.from_url(private_redis.url)
    try:
        async with Docket(name=docket_name, url=private_redis.url) as docket:
            docket.register(crashy)
            execution = await docket.add(crashy, key="crashy")()

            async with subprocess_python(script, private_redis.url, docket_name, ledger) as process:

                async def started() -> bool:
                    return await client.llen(ledger) == 1

                await wait_for(started, timeout=20, what="the child worker to start the task")
                process.kill()
                await process.wait()
                victim = process.pid

            async with fast_worker(docket, redelivery_timeout=timedelta(milliseconds=500)) as w:
                await asyncio.wait_for(w.run_until_finished(), 20)

            runs = [entry.decode() for entry in await client.lrange(ledger, 0, -1)]
            assert runs == [f"start:{victim}", "start:survivor"]
            assert redelivered == [True]
            await execution.sync()
            assert execution.state == ExecutionState.COMPLETED
            assert await pending_count(client, docket) == 0
    finally:
        await client.aclose()


SIGNAL_TASKS = """
import asyncio, os

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError


async def _record(event: str) -> None:
    client = Redis.from_url(os.environ["LEDGER_URL"])
    try:
        await client.rpush(os.environ["LEDGER_KEY"], event)
    finally:
        await client.aclose()


async def one_second() -> str:
    await _record("start")
    await asyncio.sleep(1)
    await _record("end")
    return "done"


async def half_a_minute() -> None:
    await _record("start")
    await asyncio.sleep(30)
    await _record("end")


tasks = [one_second, half_a_minute]
"""

SIGNAL_WORKER = """
import asyncio, sys
from datetime import timedelta

from docket import Worker

asyncio.run(
    Worker.run(
        docket_name=sys.argv[2],
        url=sys.argv[1],
        tasks=["signal_tasks:tasks"],
        redelivery_timeout=timedelta(seconds=30),
        minimum_check_interval=timedelta(milliseconds=5),
        schedule_automatic_tasks=False,
    )
)
"""


@asynccontextmanager
async def signal_worker(
    tmp_path: Path, redis: RedisServer, docket_name: str, ledger: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    (tmp_path / "signal_tasks.py").write_text(SIGNAL_TASKS)
    script = tmp_path / "signal_worker.py"
    script.write_text(SIGNAL_WORKER)
    env = {
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "LEDGER_URL": redis.url,
        "LEDGER_KEY": ledger,
    }
    async with subprocess_python(script, redis.url, docket_name, env=env) as process:
        yield process


async def test_sigterm_lets_the_running_task_finish_and_exits_cleanly(
    tmp_path: Path, private_redis: RedisServer, docket_name: str
) -> None:
    ledger = f"ledger:{docket_name}:events"

    async def one_second() -> str: ...

    async with (
        Redis.from_url(private_redis.url) as client,
        Docket(name=docket_name, url=private_redis.url) as docket,
        signal_worker(tmp_path, private_redis, docket_name, ledger) as process,
    ):
        execution = await docket.add(one_second, key="one-second")()

        async def started() -> bool:
            return await client.lrange(ledger, 0, -1) == [b"start"]

        await wait_for(started, timeout=20, what="the worker process to start the task")
        process.send_signal(signal.SIGTERM)

        code = await exit_code(process, 20)
        assert code == 0, (tmp_path / "signal_worker.stderr").read_text()
        assert await client.lrange(ledger, 0, -1) == [b"start", b"end"]
        await execution.sync()
        assert execution.state == ExecutionState.COMPLETED
        assert await execution.get_result(timeout=5) == "done"
        assert await pending_count(client, docket) == 0


async def test_a_second_signal_exits_at_once(
    tmp_path: Path, private_redis: RedisServer, docket_name: str
) -> None:
    ledger = f"ledger:{docket_name}:events"

    async def half_a_minute() -> None: ...

    async with (
        Redis.from_url(private_redis.url) as client,
        Docket(name=docket_name, url=private_redis.url) as docket,
        signal_worker(tmp_path, private_redis, docket_name, ledger) as process,
    ):
        execution = await docket.add(half_a_minute, key="half-a-minute")()

        async def started() -> bool:
            return await client.lrange(ledger, 0, -1) == [b"start"]

        await wait_for(started, timeout=20, what="the worker process to start the task")
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert process.returncode is None, "exited on the first signal with a task running"
        process.send_signal(signal.SIGTERM)

        await exit_code(process, 10)  # far sooner than the 30 s task
        assert await client.lrange(ledger, 0, -1) == [b"start"]
        await execution.sync()
        assert execution.state != ExecutionState.COMPLETED
        # Nothing lost: the interrupted run stays pending for redelivery.
        assert await pending_count(client, docket) == 1


# --- Redis faults ------------------------------------------------------------------------------


def restart(server: RedisServer) -> None:
    server.restart()


def kill_connections(server: RedisServer) -> None:
    killed = server.execute_command("CLIENT", "KILL", "TYPE", "normal")
    assert killed >= 1, "precondition: some connections were killed"


FAULTS = [pytest.param(restart, id="restart"), pytest.param(kill_connections, id="client-kill")]


async def add_despite_dead_connections(
    docket: Docket, task: Callable[..., Any], *args: Any
) -> None:
    """Add a task, retrying while the pool hands out connections the fault killed.

    This is about the worker; a producer's own reconnecting is tested separately (and
    a fresh Docket would recreate the consumer group, hiding the worker's recovery)."""
    for _ in range(5):
        try:
            await docket.add(task)(*args)
            return
        except RedisConnectionError:
            await asyncio.sleep(0.05)
    await docket.add(task)(*args)


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_worker_survives_losing_its_redis_connections(
    private_redis: RedisServer, docket_name: str, fault: Callable[[RedisServer], None]
) -> None:
    ran: list[int] = []

    async def note(value: int) -> None:
        ran.append(value)

    async with Docket(name=docket_name, url=private_redis.url) as docket:
        docket.register(note)
        async with fast_worker(docket, reconnection_delay=timedelta(milliseconds=100)) as worker:
            runner = asyncio.create_task(worker.run_forever())
            await docket.add(note)(1)
            await wait_for(lambda: ran == [1], what="a task before the fault")

            await asyncio.to_thread(fault, private_redis)
            await asyncio.sleep(0.2)
            assert not runner.done(), runner

            await add_despite_dead_connections(docket, note, 2)
            await wait_for(lambda: ran == [1, 2], timeout=20, what="a task after the fault")
            assert not runner.done()
            worker.stop()
            await asyncio.wait_for(runner, 15)


def kill_idle_command_connections(server: RedisServer) -> int:
    """Close every connection that is not subscribed to anything, as a server-side
    idle timeout or a proxy would; returns how many."""
    clients = server.execute_command("CLIENT", "LIST", "TYPE", "normal").decode().splitlines()
    killed = 0
    for line in clients:
        fields = dict(part.split("=", 1) for part in line.split(" ") if "=" in part)
        if fields["sub"] == "0" and fields["psub"] == "0" and fields["cmd"] != "client|list":
            killed += server.execute_command("CLIENT", "KILL", "ID", fields["id"])
    return killed


async def test_a_producer_reconnects_when_its_idle_connection_was_closed(
    private_redis: RedisServer, docket_name: str
) -> None:
    async def note(value: int) -> None: ...

    async with Docket(name=docket_name, url=private_redis.url) as docket:
        await docket.add(note, key="before")(1)

        async def docket_subscribed() -> bool:
            [_, subscribers] = await asyncio.to_thread(
                private_redis.execute_command, "PUBSUB", "NUMSUB", docket.keys.strikes_channel
            )
            return int(subscribers) >= 1

        # Only the command connection dies; the docket's subscription lives on.
        await wait_for(docket_subscribed, what="the docket's strike subscription")
        killed = await asyncio.to_thread(kill_idle_command_connections, private_redis)
        assert killed >= 1, "precondition: the producer's pooled connection was closed"
        await asyncio.sleep(0.2)

        # The server is fine: an add must not fail because a pooled connection died.
        execution = await docket.add(note, key="after")(2)
        assert execution.state == ExecutionState.QUEUED
        assert await docket.get_execution("after") is not None


async def test_a_cancel_published_while_the_pubsub_connection_was_down_still_stops_the_run(
    docket: Docket, redis_client: Redis
) -> None:
    # The cancel reaches running tasks over pub/sub; one published while the worker's
    # subscription is gone is heard by nobody. Once the worker has subscribed again, the
    # run's record (cancelled, this generation) stops it anyway.
    started = asyncio.Event()
    interrupted = asyncio.Event()

    async def long_one() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    await docket.add(long_one, key="long")()
    async with fast_worker(
        docket, concurrency=1, reconnection_delay=timedelta(seconds=1)
    ) as worker:
        runner = asyncio.create_task(worker.run_forever())
        await asyncio.wait_for(started.wait(), 10)
        assert await redis_client.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
        # Inside the reconnection delay: no subscriber hears this one.
        await docket.cancel("long")
        await asyncio.wait_for(interrupted.wait(), 10)
        worker.stop()
        await asyncio.wait_for(runner, 10)
    record = await redis_client.hgetall(docket.keys.record("long"))
    assert record[b"state"] == b"cancelled"
