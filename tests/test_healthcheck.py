"""The healthcheck endpoint: 200 while the worker loop is alive and Redis reachable, 503
(with the reason) otherwise, over real HTTP against a real, private redis-server that the
tests stop, freeze and bring back."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from _helpers import running_forever
from _redis_server import RedisServer

import docket.worker as worker_module
from docket._healthcheck import serve_healthcheck
from docket.docket import Docket
from docket.worker import Worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def probe(port: int) -> tuple[int, str]:
    """GET / over a fresh connection: (status, body); (0, reason) when nothing answers."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except (OSError, TimeoutError) as error:
        return 0, str(error)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5)
    except (OSError, TimeoutError) as error:
        return 0, str(error)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


async def probe_until(port: int, status: int, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    seen: tuple[int, str] = (0, "")
    while time.monotonic() < deadline:
        seen = await probe(port)
        if seen[0] == status:
            return seen[1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {status}, last answer {seen}")


@asynccontextmanager
async def checked_worker(url: str, name: str) -> AsyncIterator[tuple[Worker, int]]:
    """A worker with quick heartbeats and reconnections, and its healthcheck port."""
    async with Docket(name=name, url=url, heartbeat_interval=timedelta(milliseconds=50)) as docket:
        worker = Worker(
            docket,
            reconnection_delay=timedelta(milliseconds=100),
            minimum_check_interval=timedelta(milliseconds=5),
        )
        port = free_port()
        server = await serve_healthcheck(worker, port, host="127.0.0.1")
        try:
            async with worker:
                yield worker, port
        finally:
            server.close()


async def test_503_until_the_loop_runs_then_200(redis_url: str, docket_name: str) -> None:
    async with checked_worker(redis_url, docket_name) as (worker, port):
        assert await probe(port) == (503, "unhealthy: the worker loop is not running\n")
        async with running_forever(worker):
            assert await probe_until(port, 200) == "ok\n"
            assert worker.is_healthy()
        assert await probe(port) == (503, "unhealthy: the worker loop is not running\n")


async def test_503_when_redis_stops_and_200_when_it_is_back(
    private_redis: RedisServer, docket_name: str
) -> None:
    async with (
        checked_worker(private_redis.url, docket_name) as (worker, port),
        running_forever(worker),
    ):
        await probe_until(port, 200)

        await asyncio.to_thread(private_redis.stop)
        reason = await probe_until(port, 503, timeout=10)
        assert reason.startswith("unhealthy: "), reason
        assert not worker.is_healthy()

        await asyncio.to_thread(private_redis.start)
        await probe_until(port, 200, timeout=20)

        # And it still works: the group is recreated and tasks run.
        ran = asyncio.Event()

        async def ping() -> None:
            ran.set()

        await worker.docket.add(ping)()
        await asyncio.wait_for(ran.wait(), 10)


async def test_503_when_redis_hangs(private_redis: RedisServer, docket_name: str) -> None:
    """A frozen server closes nothing: the heartbeat stops succeeding and the answer turns
    503 once it is older than the liveness window."""
    async with (
        checked_worker(private_redis.url, docket_name) as (worker, port),
        running_forever(worker),
    ):
        await probe_until(port, 200)
        await asyncio.to_thread(private_redis.pause)
        try:
            reason = await probe_until(port, 503, timeout=10)
            assert "heartbeat" in reason or "hung" in reason, reason
        finally:
            await asyncio.to_thread(private_redis.resume)
        await probe_until(port, 200, timeout=20)


async def test_worker_run_serves_the_healthcheck(redis_url: str, docket_name: str) -> None:
    port = free_port()
    run = asyncio.create_task(
        Worker.run(docket_name=docket_name, url=redis_url, healthcheck_port=port)
    )
    try:
        assert await probe_until(port, 200) == "ok\n"
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    status, _ = await probe(port)
    assert status == 0, "the endpoint closes with the worker"


async def test_memory_backend_is_healthy_while_running(memory_url: str, docket_name: str) -> None:
    async with checked_worker(memory_url, docket_name) as (worker, port), running_forever(worker):
        assert await probe_until(port, 200) == "ok\n"


async def test_a_busy_worker_stays_healthy(
    redis_url: str, docket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every slot taken the loop reads nothing for as long as the runs last; that is
    not a failure (reads are short here so a stale read would show at once)."""
    monkeypatch.setattr(worker_module, "BLOCK_SECONDS", 0.05)
    release = asyncio.Event()

    async def hold() -> None:
        await release.wait()

    async with checked_worker(redis_url, docket_name) as (worker, port), running_forever(worker):
        await probe_until(port, 200)
        worker.concurrency = 1
        await worker.docket.add(hold)()
        while not worker._active:
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert await probe(port) == (200, "ok\n")
            await asyncio.sleep(0.05)
        assert len(worker._active) == 1, "precondition: the slot stayed taken"
        release.set()


async def test_a_run_cancelled_before_it_starts_frees_its_slot_and_drains(
    memory_url: str, docket_name: str
) -> None:
    """Regression: a run cancelled before its first step (a cancel or abort arriving right
    after the claim) never ran its cleanup, so it kept its concurrency slot and made the
    drain spin forever on a finished task, without ever yielding to the event loop."""
    ran = asyncio.Event()

    async def slow() -> None:
        await asyncio.sleep(30)

    async def after() -> None:
        ran.set()

    async with Docket(name=docket_name, url=memory_url) as docket:
        docket.register(slow)
        docket.register(after)
        worker = Worker(docket, concurrency=1, minimum_check_interval=timedelta(milliseconds=5))
        original = worker._start

        def start_then_cancel(execution: Any) -> None:
            original(execution)
            if execution.function_name == "slow":
                worker._cancellation.cancel_running(execution.key)  # the cancel lands at once

        worker._start = start_then_cancel  # type: ignore[method-assign]
        async with worker:
            await docket.add(slow, key="slow")()
            task = asyncio.create_task(worker.run_forever())
            await asyncio.sleep(0.1)
            await docket.add(after)()
            await asyncio.wait_for(ran.wait(), 5)  # the one slot was given back
            worker.stop()
            await asyncio.wait_for(task, 10)
