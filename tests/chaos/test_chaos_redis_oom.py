"""Redis out of memory under ``noeviction``: adds are refused, nothing added is lost.

A private Redis with a small ``--maxmemory`` and ``--maxmemory-policy noeviction``. The
producer adds tasks (each with 8 KB of padding, so the memory fills in a second or
two) until Redis refuses them with its OOM error, which must reach the caller:
as the ``schedule_exception`` of the calls ``add_many`` returns FAILED, and raised by a
plain ``add``. Then it stops while the two workers drain what was added, and once Redis
has room again it adds until the next refusal; a few times over. Every task an add
reported SCHEDULED must run, none refused may, and no worker may exit.

The workers keep the default ``execution_ttl`` (15 minutes): what frees the memory is
the workers finishing tasks (their stream entries go), not records expiring. Under
``noeviction`` Redis refuses a script's first write when it may grow memory (HSET,
ZADD, INCR), and lets it finish once it has written anything; a worker's claims,
heartbeats and renewals can all be refused for a while, its settles (XACK first) not.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from _redis_server import RedisServer
from chaos_harness import Cluster, Producer, check, conclude, publish
from ledger import LedgerTail
from ledger_tasks import chaos_task
from redis.exceptions import ResponseError

from docket import Docket
from docket.execution import Disposition

pytestmark = pytest.mark.chaos

MB = 1024 * 1024
BATCH = 500


@dataclass(frozen=True)
class Size:
    maxmemory_mb: int
    # How many times the producer fills Redis until it refuses.
    cycles: int
    # Bytes of padding per task: the stream entry it frees when it ends is much bigger
    # than the record it leaves (about 1 KB, kept for execution_ttl), so every cycle
    # finds room again.
    padding: int = 8_000
    drain_timeout: float = 120.0


SIZES = {
    "smoke": Size(maxmemory_mb=20, cycles=2),
    "full": Size(maxmemory_mb=30, cycles=6, drain_timeout=300.0),
}


def is_oom(error: BaseException | None) -> bool:
    return isinstance(error, ResponseError) and str(error).startswith("OOM")


@dataclass
class Filler:
    """Adds padded tasks until Redis refuses; keeps what was added in ``producer.added``
    and what was refused, with the errors."""

    docket: Docket
    producer: Producer
    padding: str
    seed: int = 0
    refused: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    raised: list[BaseException] = field(default_factory=list)
    _count: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def _calls(self, count: int) -> list[tuple[str, float]]:
        now = time.time()
        calls = []
        for _ in range(count):
            calls.append((f"oom-{self._count:07d}", round(now + self._random.uniform(0, 1), 6)))
            self._count += 1
        return calls

    async def fill(self, timeout: float = 60.0) -> int:
        """Add batches until one comes back with calls refused for OOM; returns how
        many were added."""
        docket = self.docket
        added = 0
        deadline = time.monotonic() + timeout
        while True:
            calls = self._calls(BATCH)
            executions = await docket.add_many(
                docket.call(chaos_task, when=datetime.fromtimestamp(when, UTC), key=key)(
                    when, self._random.uniform(0, 0.005), self.padding
                )
                for key, when in calls
            )
            refused = False
            for (key, when), execution in zip(calls, executions, strict=True):
                if execution.disposition is Disposition.SCHEDULED:
                    self.producer.added[key] = when
                    added += 1
                elif execution.disposition is Disposition.FAILED:
                    error = execution.schedule_exception
                    assert is_oom(error), f"{key}: refused with {error!r}, not Redis's OOM"
                    assert error is not None
                    self.errors.append(error)
                    self.refused.append(key)
                    refused = True
                else:
                    raise AssertionError(f"{key}: {execution.disposition}")
            if refused:
                return added
            assert time.monotonic() < deadline, f"Redis never refused an add ({added} added)"

    async def add_one(self, attempts: int = 200) -> BaseException | None:
        """A plain ``add`` while Redis is full: the OOM error must be raised."""
        for _ in range(attempts):
            [(key, when)] = self._calls(1)
            try:
                await self.docket.add(chaos_task, when=datetime.fromtimestamp(when, UTC), key=key)(
                    when, 0.0, self.padding
                )
            except ResponseError as error:
                assert is_oom(error), repr(error)
                self.raised.append(error)
                self.refused.append(key)
                return error
            # Room for one more (the workers free some as they go): it was added. Fill
            # up again, so the next try meets a full Redis even on a loaded machine,
            # where the workers drain more between two single adds.
            self.producer.added[key] = when
            await self.fill()
        return None


async def used_memory(docket: Docket) -> int:
    async with docket.redis() as redis:
        info: dict[str, Any] = await redis.info("memory")
    return int(info["used_memory"])


@pytest.mark.timeout(900)
async def test_redis_out_of_memory_refuses_adds_loudly_and_loses_nothing_it_accepted(
    chaos_size: str,
    make_cluster: Callable[..., Cluster],
    redis_server_factory: Callable[..., RedisServer],
    request: pytest.FixtureRequest,
) -> None:
    size = SIZES[chaos_size]
    maxmemory = size.maxmemory_mb * MB
    server = redis_server_factory(
        ["--maxmemory", str(maxmemory), "--maxmemory-policy", "noeviction"]
    )
    cluster = make_cluster(server.url, concurrency=10, redelivery_timeout=2.0)
    began = time.monotonic()
    for _ in range(2):
        cluster.start_worker()
    recoveries: list[float] = []
    after_drain: list[int] = []
    ledger = LedgerTail(cluster.ledger)
    async with Docket(name=cluster.docket, url=cluster.url) as docket:
        await cluster.wait_ready(docket)
        producer = Producer(docket, "oom", 0, over=0, horizon=0)
        filler = Filler(docket, producer, "p" * size.padding)
        single: BaseException | None = None
        for cycle in range(size.cycles):
            await filler.fill()
            if cycle == 0:
                single = await filler.add_one()
            # Stop while the workers drain everything added so far; go again once they
            # have (finished records stay, for execution_ttl: what frees the room is the
            # stream entries of the tasks that ran).
            stopped = time.monotonic()
            deadline = stopped + 60
            while not producer.added.keys() <= ledger.poll():
                assert time.monotonic() < deadline, (
                    f"the workers did not drain in 60s after OOM "
                    f"({len(producer.added.keys() - ledger.ended)} left, "
                    f"{await used_memory(docket) / MB:.1f} MB used)\n{cluster.describe()}"
                )
                assert all(w.alive for w in cluster.workers), cluster.describe()
                await asyncio.sleep(0.1)
            left = await used_memory(docket)
            assert left < maxmemory - MB, f"drained, and still {left / MB:.1f} MB used"
            after_drain.append(left)
            recoveries.append(time.monotonic() - stopped)
        producer.finished.set()
        # Refused adds left nothing behind (a script refused before its first write).
        sample = filler.refused[:: max(1, len(filler.refused) // 200)]
        leftovers = [key for key in sample if await docket.get_execution(key) is not None]
        async with docket.redis() as redis:
            info: dict[str, Any] = await redis.info("memory")
            stats: dict[str, Any] = await redis.info("stats")
        outcome = await conclude(
            scenario="redis-oom",
            size=chaos_size,
            cluster=cluster,
            docket=docket,
            producer=producer,
            fault="ooms",
            faults=size.cycles,
            began=began,
            drain_timeout=size.drain_timeout,
        )
    error = filler.errors[0] if filler.errors else None
    outcome.figures.extra.update(
        {
            "maxmemory_mb": size.maxmemory_mb,
            "refused": len(filler.refused),
            "error": f"{type(error).__name__}({str(error)[:40]!r}...)" if error else "none",
            "add_raised": type(single).__name__ if single else "nothing",
            "max_recovery_s": round(max(recoveries, default=0.0), 2),
            "used_after_drains_mb": "/".join(f"{b / MB:.1f}" for b in after_drain),
            "peak_used_mb": round(int(info["used_memory_peak"]) / MB, 1),
            "rejected_commands": stats.get("total_error_replies", "?"),
        }
    )
    publish(outcome.figures, request.node.user_properties)
    check(outcome)
    assert not outcome.exited, f"workers exited: {outcome.exited}\n{outcome.explain()}"
    assert len(filler.errors) >= size.cycles, "a fill ended without an OOM refusal"
    assert single is not None, "a plain add never raised while Redis was out of memory"
    assert not leftovers, f"refused adds left records behind: {leftovers[:10]}"
