"""A docket on a Sentinel-watched primary and its replica: found through the sentinels,
and followed by producers and workers through a failover, with nothing acknowledged lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from _failover import run_through_fault
from _redis_topologies import RedisSentinelSet

from docket import Docket, Worker
from docket._redis.client import TopologyError

pytestmark = [pytest.mark.topology, pytest.mark.timeout(120)]


async def test_a_docket_runs_its_tasks_on_the_primary_the_sentinels_name(
    redis_sentinel: RedisSentinelSet, docket_name: str
) -> None:
    ran: list[int] = []

    async def double(n: int) -> int:
        ran.append(n)
        return n * 2

    async with Docket(name=docket_name, url=redis_sentinel.url) as docket:
        # The hot path takes the lean connection here too.
        assert docket.engine.connection.wire is not None
        execution = await docket.add(double, key="k")(21)
        async with Worker(docket) as worker:
            await worker.run_until_finished()
        assert ran == [21]
        assert await execution.get_result() == 42
        _, port = redis_sentinel.current_primary_address()
        assert redis_sentinel.primary.port == port
        assert redis_sentinel.primary.execute_command("EXISTS", f"{docket.prefix}:stream") == 1


async def test_an_unknown_service_name_is_refused_naming_it(
    redis_sentinel: RedisSentinelSet, docket_name: str
) -> None:
    url = redis_sentinel.url.rpartition("/")[0] + "/no-such-service"
    with pytest.raises(TopologyError, match="watch no service named 'no-such-service'"):
        async with Docket(name=docket_name, url=url):
            pass


async def test_producer_and_worker_follow_a_killed_primary_to_its_replica(
    private_redis_sentinel: Callable[..., RedisSentinelSet], docket_name: str
) -> None:
    sentinels = private_redis_sentinel()
    old = sentinels.current_primary_address()

    async def kill_and_wait() -> None:
        await asyncio.to_thread(sentinels.kill_primary)
        await asyncio.to_thread(sentinels.wait_for_failover, old)

    ledger = await run_through_fault(sentinels.url, docket_name, kill_and_wait)
    assert sentinels.current_primary_address() != old
    assert not ledger.lost, f"acknowledged but never run: {sorted(ledger.lost)[:10]}"
    assert any(key.startswith("after-") for key in ledger.finished)


async def test_a_graceful_failover_demotes_the_primary_and_clients_follow(
    private_redis_sentinel: Callable[..., RedisSentinelSet], docket_name: str
) -> None:
    # The old primary stays up as a replica: clients still connected to it hear
    # READONLY, and must go and find the new primary.
    sentinels = private_redis_sentinel()
    old = sentinels.current_primary_address()

    async def fail_over() -> None:
        await asyncio.to_thread(sentinels.failover)

    ledger = await run_through_fault(sentinels.url, docket_name, fail_over)
    assert sentinels.current_primary_address() != old
    assert not ledger.lost, f"acknowledged but never run: {sorted(ledger.lost)[:10]}"
    assert any(key.startswith("after-") for key in ledger.finished)
