"""Fault injection against real redis-server and ``docket worker`` processes.

Each scenario runs the ledger task (``ledger_tasks``) on worker subprocesses while it
kills, freezes or restarts something, waits for the docket to drain, and checks the
ledger kept outside Redis (``ledger``): nothing lost, nothing stuck, nothing early, no
two runs of a task at once on live workers. ``--chaos-size=full`` (``make chaos``) runs
them at scale. Each prints a line of figures (docs/reliability.md, "The chaos suite").
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from _redis_server import RedisServer
from chaos_harness import Cluster, Producer, check, publish, run_scenario
from ledger import read_ledger

from docket import Docket

pytestmark = pytest.mark.chaos

# Short, so redelivery happens inside the test.
REDELIVERY_TIMEOUT = 2.0
CONCURRENCY = 10


@dataclass(frozen=True)
class Size:
    tasks: int
    faults: int
    # Seconds over which the producer adds the tasks (and the faults happen).
    over: float
    # Each task is due up to this many seconds after it is added.
    horizon: float = 1.0
    drain_timeout: float = 60.0


# --- 1. SIGKILL storm ---------------------------------------------------------------------

STORM = {
    "smoke": Size(tasks=1_500, faults=4, over=5.0),
    "full": Size(tasks=100_000, faults=20, over=100.0, drain_timeout=300.0),
}


async def sigkill_storm(
    scenario: str,
    size: Size,
    chaos_size: str,
    cluster: Cluster,
    request: pytest.FixtureRequest,
    *,
    seed: int,
    producer_options: dict[str, Any] | None = None,
) -> None:
    """3 workers; every so often a random one that has been up long enough to be running
    tasks (not still importing) is SIGKILLed and a fresh one started."""
    chooser = random.Random(seed)

    async def kill_workers(producer: Producer) -> int:
        interval = size.over / (size.faults + 1)
        for _ in range(size.faults):
            await asyncio.sleep(interval)
            settled = [w for w in cluster.live if time.monotonic() - w.started > 1.0]
            await cluster.kill(chooser.choice(settled or cluster.live))
            cluster.start_worker()
        return size.faults

    outcome = await run_scenario(
        scenario=scenario,
        size=chaos_size,
        cluster=cluster,
        workers=3,
        tasks=size.tasks,
        over=size.over,
        horizon=size.horizon,
        fault="kills",
        inflict=kill_workers,
        drain_timeout=size.drain_timeout,
        producer_options=producer_options,
    )
    publish(outcome.figures, request.node.user_properties)
    check(outcome)
    # At least once: a worker killed after a run's end but before its settle reached
    # Redis has that run redelivered; no more than it had slots.
    assert outcome.figures.duplicates <= size.faults * CONCURRENCY, outcome.explain()


@pytest.mark.timeout(900)
async def test_worker_sigkill_storm_loses_nothing_and_runs_nothing_twice_at_once(
    chaos_size: str,
    make_cluster: Callable[..., Cluster],
    private_redis: RedisServer,
    request: pytest.FixtureRequest,
) -> None:
    cluster = make_cluster(
        private_redis.url, concurrency=CONCURRENCY, redelivery_timeout=REDELIVERY_TIMEOUT
    )
    await sigkill_storm("sigkill-storm", STORM[chaos_size], chaos_size, cluster, request, seed=7)


# --- 1b. SIGKILL storm at full speed: how many finished runs a kill repeats ----------------

# Short tasks as fast as the workers take them: settles are batched, so this is where a
# kill between a body's end and its settle would repeat the most finished runs.
FAST_STORM = {
    "smoke": Size(tasks=6_000, faults=4, over=3.0, horizon=0.5),
    "full": Size(tasks=60_000, faults=30, over=21.0, horizon=0.5, drain_timeout=300.0),
}


@pytest.mark.timeout(900)
async def test_a_sigkill_storm_at_full_speed_repeats_few_finished_runs(
    chaos_size: str,
    make_cluster: Callable[..., Cluster],
    private_redis: RedisServer,
    request: pytest.FixtureRequest,
) -> None:
    cluster = make_cluster(
        private_redis.url, concurrency=CONCURRENCY, redelivery_timeout=REDELIVERY_TIMEOUT
    )
    await sigkill_storm(
        "sigkill-storm-fast",
        FAST_STORM[chaos_size],
        chaos_size,
        cluster,
        request,
        seed=11,
        producer_options={"sleep": (0.0, 0.002)},
    )


# --- 2. Redis restarted (AOF) ---------------------------------------------------------------

RESTARTS = {
    "smoke": Size(tasks=1_000, faults=2, over=4.5),
    "full": Size(tasks=20_000, faults=6, over=40.0, drain_timeout=300.0),
}


@pytest.mark.timeout(900)
async def test_redis_restarted_with_aof_mid_run_loses_nothing(
    chaos_size: str,
    make_cluster: Callable[..., Cluster],
    redis_server_factory: Callable[..., RedisServer],
    request: pytest.FixtureRequest,
) -> None:
    size = RESTARTS[chaos_size]
    server = redis_server_factory(["--appendonly", "yes", "--appendfsync", "always"])
    cluster = make_cluster(
        server.url, concurrency=CONCURRENCY, redelivery_timeout=REDELIVERY_TIMEOUT
    )
    downtime: list[float] = []

    async def restart_redis(producer: Producer) -> int:
        interval = size.over / (size.faults + 1)
        for restart in range(size.faults):
            await asyncio.sleep(interval)
            began = time.monotonic()
            # Alternately a clean stop and a crash: with appendfsync always, both keep
            # every write Redis acknowledged.
            await asyncio.to_thread(server.restart, kill=restart % 2 == 1)
            downtime.append(time.monotonic() - began)
        return size.faults

    outcome = await run_scenario(
        scenario="redis-restart-aof",
        size=chaos_size,
        cluster=cluster,
        workers=2,
        tasks=size.tasks,
        over=size.over,
        horizon=size.horizon,
        fault="restarts",
        inflict=restart_redis,
        drain_timeout=size.drain_timeout,
    )
    outcome.figures.extra["max_downtime_s"] = round(max(downtime, default=0.0), 3)
    outcome.figures.extra["producer_retries"] = outcome.producer.retries
    publish(outcome.figures, request.node.user_properties)
    check(outcome)
    assert not outcome.exited, outcome.explain()


# --- 3. Connections killed --------------------------------------------------------------------

CONNECTION_KILLS = {
    "smoke": Size(tasks=1_000, faults=10, over=4.5),
    "full": Size(tasks=20_000, faults=80, over=40.0, drain_timeout=300.0),
}


@pytest.mark.timeout(900)
async def test_connections_killed_every_half_second_lose_nothing_and_stop_no_worker(
    chaos_size: str,
    make_cluster: Callable[..., Cluster],
    private_redis: RedisServer,
    request: pytest.FixtureRequest,
) -> None:
    size = CONNECTION_KILLS[chaos_size]
    cluster = make_cluster(
        private_redis.url, concurrency=CONCURRENCY, redelivery_timeout=REDELIVERY_TIMEOUT
    )
    killed_connections = 0

    async def kill_connections(producer: Producer) -> int:
        nonlocal killed_connections
        for _ in range(size.faults):
            await asyncio.sleep(0.5)
            # The helper's own connection is the one to skip; the workers' and the
            # producer's all go.
            killed = await asyncio.to_thread(
                private_redis.execute_command, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
            )
            killed_connections += int(killed)
        return size.faults

    outcome = await run_scenario(
        scenario="connection-kills",
        size=chaos_size,
        cluster=cluster,
        workers=3,
        tasks=size.tasks,
        over=size.over,
        horizon=size.horizon,
        fault="client_kills",
        inflict=kill_connections,
        drain_timeout=size.drain_timeout,
    )
    outcome.figures.extra["connections_killed"] = killed_connections
    outcome.figures.extra["producer_retries"] = outcome.producer.retries
    publish(outcome.figures, request.node.user_properties)
    check(outcome)
    assert killed_connections >= size.faults, "CLIENT KILL found no connections to kill"
    assert not outcome.exited, f"workers exited: {outcome.exited}\n{outcome.explain()}"


# --- 4. A worker paused past its lease ----------------------------------------------------------

PAUSES = {
    "smoke": Size(tasks=1_000, faults=1, over=4.0),
    "full": Size(tasks=20_000, faults=5, over=60.0, drain_timeout=300.0),
}
# Frozen well past the lease, so the other worker has taken its runs over by the thaw.
PAUSE_SECONDS = 2.5 * REDELIVERY_TIMEOUT


@pytest.mark.timeout(900)
async def test_worker_paused_past_its_lease_has_its_runs_taken_over_and_never_overlaps(
    chaos_size: str,
    make_cluster: Callable[..., Cluster],
    private_redis: RedisServer,
    request: pytest.FixtureRequest,
) -> None:
    size = PAUSES[chaos_size]
    cluster = make_cluster(
        private_redis.url, concurrency=CONCURRENCY, redelivery_timeout=REDELIVERY_TIMEOUT
    )
    # key -> (the frozen worker's name, its pid, when it was frozen, when thawed)
    in_flight: dict[str, tuple[str, int, float, float]] = {}

    async def pause_a_worker(producer: Producer) -> int:
        gap = max(size.over / size.faults - PAUSE_SECONDS, 0.5)
        for pause in range(size.faults):
            await asyncio.sleep(1.5 if pause == 0 else gap)
            victim = cluster.workers[pause % 2]
            for _attempt in range(50):
                frozen_at = await cluster.freeze(victim)
                # Its runs that had started and not ended when it froze.
                open_runs = [
                    run.key
                    for run in read_ledger(cluster.ledger)
                    if run.pid == victim.pid and run.start_mono < frozen_at and not run.ended
                ]
                if open_runs:
                    break
                cluster.thaw(victim, frozen_at)
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"worker {victim.name} never had a run in flight")
            await asyncio.sleep(PAUSE_SECONDS)
            thawed_at = time.monotonic()
            cluster.thaw(victim, frozen_at)
            for key in open_runs:
                in_flight[key] = (victim.name, victim.pid, frozen_at, thawed_at)
        return size.faults

    outcome = await run_scenario(
        scenario="paused-past-lease",
        size=chaos_size,
        cluster=cluster,
        workers=2,
        tasks=size.tasks,
        over=size.over,
        horizon=size.horizon,
        fault="pauses",
        inflict=pause_a_worker,
        drain_timeout=size.drain_timeout,
    )
    outcome.figures.extra["in_flight_at_pause"] = len(in_flight)
    publish(outcome.figures, request.node.user_properties)
    check(outcome)

    # Each run in flight on the frozen worker was taken over (redelivered) by the other
    # while it was frozen, and the record ends as the new owner's run.
    runs = read_ledger(cluster.ledger)
    async with Docket(name=cluster.docket, url=cluster.url) as docket:
        for key, (name, pid, frozen_at, thawed_at) in in_flight.items():
            takeovers = [
                r
                for r in runs
                if r.key == key and r.pid != pid and frozen_at < r.start_mono < thawed_at
            ]
            assert takeovers and all(r.redelivered for r in takeovers), (
                f"{key} was in flight on frozen {name} and not taken over while it was "
                f"frozen\n{outcome.explain()}"
            )
            execution = await docket.get_execution(key)
            assert execution is not None
            assert execution.state == "completed"
            assert execution.worker != name, f"{key}: the frozen worker's settle won"
    victims = {name for name, *_ in in_flight.values()}
    for worker in cluster.workers:
        if worker.name in victims:
            assert "Lost the lease" in worker.output, outcome.explain()
