"""Running a docket through a fault of its Redis topology, with a ledger outside Redis.

A producer adds tasks in three phases (before, during and after the fault) while one
worker runs them; each task sleeps a little, so some are running when the fault comes.
The ledger (plain Python sets in this process) records every add Redis acknowledged and
every run that finished. Before the fault the producer pauses and the primary is made to
wait for its replica (``WAIT``), so everything acknowledged so far has reached a replica:
the promoted replica must then hold all of it, and nothing acknowledged may be missing at
the end. Runs may repeat (a run in flight when the primary died runs again elsewhere).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from redis.exceptions import RedisError

from docket import Docket, Worker


@dataclass
class Ledger:
    acknowledged: set[str] = field(default_factory=set)
    refused: int = 0
    started: collections.Counter[str] = field(default_factory=collections.Counter)
    finished: collections.Counter[str] = field(default_factory=collections.Counter)
    fault_at: float = 0.0
    acknowledged_at: list[float] = field(default_factory=list)
    finished_at: list[float] = field(default_factory=list)

    @property
    def lost(self) -> set[str]:
        return self.acknowledged - set(self.finished)

    @property
    def repeated(self) -> int:
        return sum(count - 1 for count in self.finished.values() if count > 1)

    def gap(self, times: list[float]) -> float:
        """The longest wait between two successes after the fault began: how long the
        producers (or the workers) could do nothing."""
        after = [t for t in times if t >= self.fault_at]
        before = [t for t in times if t < self.fault_at]
        points = before[-1:] + after
        return max((b - a for a, b in itertools.pairwise(points)), default=0.0)

    def figures(self) -> str:
        """One line for the docs' failover table (run the tests with -s to see it)."""
        return (
            f"acknowledged {len(self.acknowledged)}, refused {self.refused}, lost "
            f"{len(self.lost)}, repeated {self.repeated}; longest wait for an add "
            f"{self.gap(self.acknowledged_at):.2f} s, between finished runs "
            f"{self.gap(self.finished_at):.2f} s"
        )


async def run_through_fault(
    url: str,
    name: str,
    fault: Callable[[], Coroutine[Any, Any, None]],
    *,
    per_phase: int = 60,
    settle_timeout: float = 60.0,
    replicated: bool = True,
) -> Ledger:
    """Add ``per_phase`` tasks before, during and after ``fault`` (which returns once the
    topology is whole again), and wait until every acknowledged one has finished.
    ``replicated``: the primary has a replica to wait for before the fault."""
    ledger = Ledger()

    async def job(key: str) -> None:
        ledger.started[key] += 1
        await asyncio.sleep(0.02)
        ledger.finished[key] += 1
        ledger.finished_at.append(time.monotonic())

    async with Docket(name=name, url=url) as docket:
        docket.register(job)

        async def add(key: str) -> None:
            try:
                await docket.add(job, key=key)(key)
            except (RedisError, OSError):
                # Not acknowledged: the caller knows, so the ledger does not count it.
                ledger.refused += 1
                await asyncio.sleep(0.05)
                return
            ledger.acknowledged.add(key)
            ledger.acknowledged_at.append(time.monotonic())

        async with Worker(
            docket,
            concurrency=8,
            reconnection_delay=timedelta(milliseconds=200),
            redelivery_timeout=timedelta(seconds=3),
        ) as worker:
            running = asyncio.create_task(worker.run_forever())
            for i in range(per_phase):
                await add(f"before-{i}")
            while not ledger.started:
                await asyncio.sleep(0.01)
            wire = docket.engine.connection.wire
            assert wire is not None, "the lean connection serves this topology"
            if replicated:
                # Everything acknowledged so far is on a replica before the primary goes.
                assert int(await wire.call("WAIT", 1, 5000)) >= 1
            ledger.fault_at = time.monotonic()
            faulting = asyncio.create_task(fault())
            i = 0
            while not faulting.done():
                await add(f"during-{i}")
                i += 1
                await asyncio.sleep(0.01)
            await faulting
            for i in range(per_phase):
                await add(f"after-{i}")
            deadline = time.monotonic() + settle_timeout
            while ledger.lost and time.monotonic() < deadline:
                assert not running.done(), f"the worker stopped: {running}"
                await asyncio.sleep(0.1)
            assert not running.done(), "the worker must carry on through the fault"
            running.cancel()
    print(f"\n{name}: {ledger.figures()}")
    return ledger
