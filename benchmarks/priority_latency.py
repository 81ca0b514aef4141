"""Latency of one task added behind a backlog: a HIGH task behind 20,000 queued LOW ones,
and for contrast a NORMAL task behind 20,000 NORMAL ones. One worker (concurrency 10)
drains no-op tasks from a private redis-server; the figure is the time from the add
returning to the task starting. The figures in docs/priorities.md come from here.

    python benchmarks/priority_latency.py [backlog] [rounds]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from priority_drain_ab import start_server

from docket import Docket, Priority, Worker


async def backlog_task() -> None:
    pass


async def one_round(url: str, backlog: int, behind: Priority, level: Priority) -> float:
    started = asyncio.get_running_loop().create_future()
    ran = 0

    async def counted() -> None:
        nonlocal ran
        ran += 1

    async def probe() -> None:
        if not started.done():
            started.set_result(time.perf_counter())

    async with Docket(name=f"latency-{behind.name}-{time.monotonic_ns()}", url=url) as docket:
        docket.register(counted)
        docket.register(probe)
        await docket.add_many(
            [docket.call(counted, priority=behind)() for _ in range(backlog)], chunk_size=2000
        )
        async with Worker(docket, concurrency=10) as worker:
            running = asyncio.create_task(worker.run_until_finished())
            while ran < 500:  # the worker is well into the backlog
                await asyncio.sleep(0.001)
            await docket.add(probe, priority=level)()
            added = time.perf_counter()
            start = await started
            left = backlog - ran
            await running
    if level > behind:
        # It overtook the backlog: most of it was still waiting when it started.
        assert left > backlog // 2, f"only {left} of the backlog left when the probe ran"
    return start - added


async def main() -> None:
    backlog = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    server, url = start_server()
    try:
        for behind, level in ((Priority.LOW, Priority.HIGH), (Priority.NORMAL, Priority.NORMAL)):
            figures = [await one_round(url, backlog, behind, level) for _ in range(rounds)]
            shown = ", ".join(f"{seconds * 1000:.1f}" for seconds in figures)
            print(
                f"{level.name} behind {backlog:,} {behind.name}: median "
                f"{statistics.median(figures) * 1000:.1f} ms (rounds: {shown} ms)"
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    asyncio.run(main())
