"""Workers whose clocks are wrong: one runs a minute fast, one a minute slow.

The docket schedules by the Redis server's clock (``server_now()`` in every script), so a
worker's own clock must not make a task start before its ``when``, nor hold it back,
nor lose it. The workers run under libfaketime; the producer (this process) and Redis
keep the real time.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from _redis_server import RedisServer
from chaos_harness import Cluster, Producer, check, publish, run_scenario
from ledger import read_ledger
from ledger_tasks import CLOCK_ANCHOR_ENV

pytestmark = pytest.mark.chaos

SKEWS = (60.0, -60.0)


@dataclass(frozen=True)
class Size:
    tasks: int
    over: float
    drain_timeout: float = 60.0


SIZES = {
    "smoke": Size(tasks=1_000, over=4.0),
    "full": Size(tasks=20_000, over=40.0, drain_timeout=300.0),
}


def faketime_preload() -> str:
    """The LD_PRELOAD the ``faketime`` wrapper would set (skips when it is missing).

    The wrapper itself is not used to start workers: it forks the program as its child
    and waits, so the pid the harness holds (for SIGTERM, SIGKILL, /proc) would be the
    wrapper's and not the worker's. Its environment is the robust way to find the library
    (``/usr/$LIB/faketime/libfaketime.so.1`` on Debian, which the loader expands)."""
    if shutil.which("faketime") is None:
        pytest.skip("faketime is not installed (apt-get install faketime)")
    shown = subprocess.run(
        ["faketime", "-f", "+0s", "env"], capture_output=True, text=True, timeout=30
    )
    for line in shown.stdout.splitlines():
        if line.startswith("LD_PRELOAD="):
            return line.removeprefix("LD_PRELOAD=")
    pytest.skip(f"faketime set no LD_PRELOAD (apt-get install faketime): {shown.stderr[-300:]}")


def skewed_environment(preload: str, skew: float) -> dict[str, str]:
    """A worker's environment for a clock ``skew`` seconds off (libfaketime).

    ``FAKETIME_DONT_FAKE_MONOTONIC=1``: only the wall clock is faked. With the monotonic
    clock faked too (libfaketime 0.9.10), Python's lock waits with a timeout hang for
    ever, and the ledger's monotonic times, which the overlap check compares across
    workers, would be off. One cost: ``time.sleep`` (clock_nanosleep on the monotonic
    clock, TIMER_ABSTIME) fails with EINVAL under it; neither the docket worker nor the
    ledger task calls it (asyncio waits in epoll).

    The ledger must record the real time (an early start is judged against the real
    ``when``), and the worker's ``time.time()`` is the faked one: the anchor below lets
    ``ledger_tasks.real_time`` count real wall time by the (real) monotonic clock. The
    faked ``time.time()`` goes in the ledger too ("f"), to prove the fake was in force.
    """
    mono_before = time.monotonic()
    wall = time.time()
    mono = (mono_before + time.monotonic()) / 2
    return {
        "LD_PRELOAD": preload,
        "FAKETIME": f"{skew:+.0f}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        CLOCK_ANCHOR_ENV: f"{wall!r} {mono!r}",
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


@pytest.mark.timeout(900)
async def test_workers_a_minute_fast_and_a_minute_slow_start_nothing_early_and_lose_nothing(
    chaos_size: str,
    make_cluster: Callable[..., Cluster],
    private_redis: RedisServer,
    request: pytest.FixtureRequest,
) -> None:
    preload = faketime_preload()
    size = SIZES[chaos_size]
    cluster = make_cluster(private_redis.url, concurrency=10, redelivery_timeout=2.0)
    skew_of = {cluster.start_worker(skewed_environment(preload, skew)).pid: skew for skew in SKEWS}

    async def nothing(producer: Producer) -> int:
        return 0

    outcome = await run_scenario(
        scenario="clock-skew",
        size=chaos_size,
        cluster=cluster,
        workers=0,
        tasks=size.tasks,
        over=size.over,
        # Due 0.5 to 3 s after it is added: a worker 60 s fast must still wait for it.
        horizon=2.5,
        producer_options={"lead": 0.5},
        fault="skewed_workers",
        inflict=nothing,
        drain_timeout=size.drain_timeout,
    )
    runs = read_ledger(cluster.ledger)
    # Lateness by the real clock: when the run started after its when.
    lateness = [run.start_wall - outcome.producer.added[run.key] for run in runs]
    by_worker = {pid: [r for r in runs if r.pid == pid] for pid in skew_of}
    outcome.figures.faults = len(SKEWS)
    outcome.figures.extra.update(
        {
            "skews_s": "/".join(f"{s:+.0f}" for s in SKEWS),
            "runs_per_worker": "/".join(str(len(by_worker[pid])) for pid in skew_of),
            "late_p50_ms": round(statistics.median(lateness) * 1000, 1) if lateness else 0,
            "late_p99_ms": round(percentile(lateness, 0.99) * 1000, 1),
            "late_max_ms": round(max(lateness, default=0.0) * 1000, 1),
        }
    )
    publish(outcome.figures, request.node.user_properties)
    check(outcome)
    assert not outcome.exited, outcome.explain()
    assert outcome.figures.duplicates == 0, outcome.explain()
    for pid, skew in skew_of.items():
        mine = by_worker[pid]
        # Both clocks took part, and each really was off by its skew while it ran.
        assert len(mine) >= size.tasks // 10, (pid, len(mine), outcome.explain())
        offsets = {
            round(r.start_process_wall - r.start_wall)
            for r in mine
            if r.start_process_wall is not None
        }
        assert offsets == {round(skew)}, (pid, skew, offsets)
    # Nothing held back by a slow clock either: every task started within a few
    # seconds of its when (a worker trusting its own clock 60 s slow would wait a minute).
    assert max(lateness) < 10.0, outcome.figures.line()
