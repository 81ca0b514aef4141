"""How long the dashboard's pages take with a large docket: 100,000 tasks queued and
20,000 scheduled on a private redis-server, one process, no worker. Each figure is the
median of several reads, from the request to the rendered HTML (or, for the data-layer
rows, to the page's executions). ``docket.snapshot()``, which reads everything and is
what the admin page read before the dashboard, is there for contrast. The figures in
docs/dashboard.md come from here.

    python benchmarks/dashboard_pages.py [queued] [scheduled]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

sys.path.insert(0, str(Path(__file__).parent))

from priority_drain_ab import start_server

from docket import Docket, Logged
from docket.inspection import count_states, list_queued, list_scheduled
from docket_dashboard import Access, Dashboard, DashboardRequest, Links


async def send_email(to: Annotated[str, Logged], body: str) -> None: ...


async def rare(number: Annotated[int, Logged]) -> None: ...


async def timed(what: str, read: Callable[[], Awaitable[Any]], repeats: int = 7) -> None:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        await read()
        samples.append(time.perf_counter() - start)
    print(f"  {what:<52} {statistics.median(samples) * 1000:9.1f} ms", flush=True)


async def main(queued: int, scheduled: int) -> None:
    server, url = start_server()
    try:
        async with Docket(name="dashboard-bench", url=url) as docket:
            docket.register(send_email)
            docket.register(rare)
            print(f"adding {queued:,} queued and {scheduled:,} scheduled tasks...", flush=True)
            calls = [
                docket.call(rare)(n)
                if n % 10_000 == 9_999
                else docket.call(send_email)(f"{n}@example.com", "x")
                for n in range(queued)
            ]
            await docket.add_many(calls, chunk_size=5000)
            await docket.add(send_email, key="known")("ada@example.com", "x")
            later = datetime.now(UTC) + timedelta(hours=1)
            await docket.add_many(
                [
                    docket.call(send_email, when=later + timedelta(seconds=n))(f"{n}@x", "x")
                    for n in range(scheduled)
                ],
                chunk_size=5000,
            )
            board = Dashboard(docket, Links("/ops"))

            async def page(path: str, **query: str) -> None:
                answer = await board.handle(DashboardRequest("GET", path, query, {}, Access.MANAGE))
                assert answer.status == 200, answer.body[:300]

            token = None
            for _ in range(40):  # the 41st page of 50: 2,000 tasks in
                token = (await list_queued(docket, count=50, after=token)).next
            deep = token
            assert deep is not None
            print("data layer:")
            await timed("count_states", lambda: count_states(docket))
            await timed("list_queued, first page of 50", lambda: list_queued(docket))
            await timed("list_queued, 41st page of 50", lambda: list_queued(docket, after=deep))
            await timed("list_scheduled, first page of 50", lambda: list_scheduled(docket))
            await timed(
                "list_queued, task=rare (1 in 10,000; 5,000 budget)",
                lambda: list_queued(docket, task="rare"),
            )
            print("pages, rendered:")
            await timed("overview", lambda: page(""))
            await timed("queued, first page of 50", lambda: page("queued"))
            await timed("queued, first page of 200", lambda: page("queued", size="200"))
            await timed("scheduled, first page of 50", lambda: page("scheduled"))
            await timed("a task page", lambda: page("task", key="known"))
            print("for contrast:")
            await timed("docket.snapshot() (everything)", docket.snapshot, repeats=1)
    finally:
        server.kill()


if __name__ == "__main__":
    arguments = [int(value) for value in sys.argv[1:3]]
    asyncio.run(main(*(arguments + [100_000, 20_000][len(arguments) :])))
