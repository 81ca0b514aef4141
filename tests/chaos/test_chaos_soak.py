"""Soak: a long steady run through two workers, watching for leaks.

The producer adds tasks steadily (each due within a second) through two workers while
this process samples each worker's resident set (``VmRSS`` in /proc/<pid>/status) every
second. Once the first 20% of the tasks have ended (the warm-up: imports, pools, caches
and allocator arenas settle), a worker's RSS may grow by less than 5 MB for the rest of
the run. The docket's ``execution_ttl`` is short (the workers get it through
``chaos_worker``, the producer's Docket directly), so once the last task has ended and
that TTL has passed, every record has expired and Redis's ``used_memory`` must come back
to within a small margin of what it was before the first task: nothing is left behind.

Sizes: smoke runs 20,000 tasks (about 15 s), full 1,000,000 (about 7 minutes on 2
shared cores; see RATE).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _redis_server import RedisServer
from chaos_harness import Cluster, Producer, check, conclude, publish
from ledger import LedgerTail

from docket import Docket

pytestmark = pytest.mark.chaos

WARM_UP = 0.2
MAX_RSS_GROWTH = 5 * 1024 * 1024
# Redis's used_memory after the records expired, over its baseline before the first task.
MEMORY_MARGIN = 512 * 1024
EXECUTION_TTL = 5.0
# The producer's pace (tasks a second). Measured at smoke size on the 2 shared cores this
# was written on: the two workers (concurrency 50, tasks that do not sleep) ran about
# 3,300 tasks a second with the producer unpaced beside them. At 3,000 a second the
# 1,000,000 of full size take about 5.5 minutes to add and run, and some 7 in all with
# the wait for the records to expire and the reading of the 2,000,000-line ledger: well
# inside 15 minutes, so full is the whole 1,000,000.
FULL_TASKS = 1_000_000
RATE = 3_000.0


@dataclass(frozen=True)
class Size:
    tasks: int
    concurrency: int = 50

    @property
    def over(self) -> float:
        """Seconds over which the producer adds them: as fast as the workers take them."""
        return self.tasks / RATE


SIZES = {
    "smoke": Size(tasks=20_000),
    "full": Size(tasks=FULL_TASKS),
}


def rss_bytes(pid: int) -> int | None:
    """VmRSS of ``pid`` in bytes, None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


@dataclass
class RssSampler:
    """Every second: how many tasks have ended, and each worker's RSS."""

    pids: list[int]
    ledger: LedgerTail
    samples: list[tuple[float, int, dict[int, int]]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            ended = len(self.ledger.poll())
            rss = {pid: value for pid in self.pids if (value := rss_bytes(pid)) is not None}
            self.samples.append((time.monotonic(), ended, rss))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    def growth(self, pid: int, warmed_at: int) -> tuple[int, int, int]:
        """(RSS when ``warmed_at`` tasks had ended, the most after, the last)."""
        after = [rss[pid] for _, ended, rss in self.samples if ended >= warmed_at and pid in rss]
        if not after:
            return 0, 0, 0
        return after[0], max(after), after[-1]


async def used_memory(docket: Docket) -> int:
    async with docket.redis() as redis:
        info: dict[str, Any] = await redis.info("memory")
    return int(info["used_memory"])


def mb(value: float) -> float:
    return round(value / (1024 * 1024), 2)


@pytest.mark.timeout(3600)
async def test_soak_grows_no_worker_and_leaves_nothing_in_redis(
    chaos_size: str,
    make_cluster: Callable[..., Cluster],
    private_redis: RedisServer,
    request: pytest.FixtureRequest,
) -> None:
    size = SIZES[chaos_size]
    cluster = make_cluster(
        private_redis.url,
        concurrency=size.concurrency,
        redelivery_timeout=10.0,
        execution_ttl=EXECUTION_TTL,
    )
    began = time.monotonic()
    workers = [cluster.start_worker() for _ in range(2)]
    ttl = timedelta(seconds=EXECUTION_TTL)
    async with Docket(name=cluster.docket, url=cluster.url, execution_ttl=ttl) as docket:
        await cluster.wait_ready(docket)
        baseline = await used_memory(docket)
        producer = Producer(
            docket, "soak", size.tasks, over=size.over, horizon=1.0, sleep=(0.0, 0.0)
        )
        ledger = LedgerTail(cluster.ledger)
        sampler = RssSampler([w.pid for w in workers], ledger)
        stop = asyncio.Event()
        sampling = asyncio.create_task(sampler.run(stop))
        try:
            await producer.run()
            deadline = time.monotonic() + max(120.0, size.over)
            while not producer.added.keys() <= ledger.poll():
                assert time.monotonic() < deadline, (
                    f"{len(producer.added.keys() - ledger.ended)} tasks never ended\n"
                    f"{cluster.describe()}"
                )
                assert all(w.alive for w in workers), cluster.describe()
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await sampling
        ended_at = time.monotonic()
        run_seconds = ended_at - began
        # Every record expires EXECUTION_TTL after its task ended; Redis's active expiry
        # then takes its time over a great many keys at once.
        await asyncio.sleep(EXECUTION_TTL)
        deadline = time.monotonic() + 120
        while (left := await used_memory(docket)) > baseline + MEMORY_MARGIN:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        returned_after = time.monotonic() - ended_at
        async with docket.redis() as redis:
            keys_left = await redis.dbsize()
        outcome = await conclude(
            scenario="soak",
            size=chaos_size,
            cluster=cluster,
            docket=docket,
            producer=producer,
            fault="workers",
            faults=len(workers),
            began=began,
            drain_timeout=120.0,
            records_expire=True,
        )

    warmed_at = int(size.tasks * WARM_UP)
    growth = {w.pid: sampler.growth(w.pid, warmed_at) for w in workers}
    outcome.figures.extra.update(
        {
            "tasks_per_s": round(size.tasks / run_seconds),
            "rss_at_warmup_mb": "/".join(str(mb(g[0])) for g in growth.values()),
            "rss_growth_max_mb": "/".join(str(mb(g[1] - g[0])) for g in growth.values()),
            "rss_growth_end_mb": "/".join(str(mb(g[2] - g[0])) for g in growth.values()),
            "rss_samples": len(sampler.samples),
            "redis_baseline_mb": mb(baseline),
            "redis_after_ttl_mb": mb(left),
            "redis_returned_after_s": round(returned_after, 1),
            "keys_left": keys_left,
        }
    )
    publish(outcome.figures, request.node.user_properties)
    check(outcome)
    assert not outcome.exited, outcome.explain()
    for pid, (at_warmup, most, _) in growth.items():
        assert at_warmup, f"no RSS sample of worker {pid} after the warm-up"
        assert most - at_warmup < MAX_RSS_GROWTH, (
            f"worker {pid} grew {mb(most - at_warmup)} MB after the warm-up "
            f"({mb(at_warmup)} -> {mb(most)} MB)\n{outcome.figures.line()}"
        )
    assert left <= baseline + MEMORY_MARGIN, (
        f"Redis holds {mb(left - baseline)} MB more than before the first task, "
        f"{returned_after:.0f}s after the end ({keys_left} keys)\n{outcome.figures.line()}"
    )
