"""A worker's connections do not grow with its concurrency: concurrency 1,000 runs on
redis-py's default connection pool, and every task runs once."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from docket import Docket
from tests._helpers import fast_worker, wait_for
from tests._redis_server import RedisServer


async def _clients(server: RedisServer) -> int:
    admin = Redis.from_url(server.url)
    try:
        # Minus this admin connection itself.
        return len(await admin.client_list()) - 1
    finally:
        await admin.aclose()


async def test_concurrency_1000_holds_a_handful_of_connections(private_redis: RedisServer) -> None:
    ran: list[int] = []
    peak_running = 0
    running = 0
    release = asyncio.Event()

    async def hold(i: int) -> None:
        nonlocal running, peak_running
        running += 1
        peak_running = max(peak_running, running)
        await release.wait()
        running -= 1
        ran.append(i)

    async with Docket(name="wide", url=private_redis.url) as docket:
        docket.register(hold)
        await docket.add_many(docket.call(hold)(i) for i in range(1_500))
        async with fast_worker(docket, concurrency=1_000) as worker:
            run = asyncio.create_task(worker.run_until_finished())
            try:
                # A full house: 1,000 runs in flight at once...
                await wait_for(lambda: running == 1_000, timeout=30, what="1,000 runs")
                # ...over a few connections, not one per run (the default pool would
                # refuse the 101st).
                assert await _clients(private_redis) <= 10
                release.set()
                await asyncio.wait_for(run, 60)
            finally:
                release.set()
                worker.stop()
                await asyncio.gather(run, return_exceptions=True)
    assert peak_running == 1_000
    assert sorted(ran) == list(range(1_500))
