"""ConcurrencyLimit in action: at most two syncs per customer at once, customers in parallel.

Run it with `python examples/concurrency_control.py`. It uses the in-process `memory://`
docket unless DOCKET_URL points at a Redis, so it needs no server, and it ends by itself
in a couple of seconds.

Twelve syncs for three customers are added at once to a worker with eight slots. Each
customer gets at most two syncs running at the same time; the others are parked (they
wait in line without taking a worker slot) and start, in the order they arrived, as
soon as one of that customer's syncs finishes. Meanwhile the other customers' syncs and
an unrelated report run freely.
"""

import asyncio
import os
import time
from collections import Counter
from typing import Annotated

from docket import ConcurrencyLimit, Docket, Worker

os.environ.setdefault("DOCKET_URL", "memory://concurrency-control")

PER_CUSTOMER = 2
TICK = 0.05  # seconds per column of the chart

started_at = time.monotonic()
events: list[tuple[float, str, str]] = []
spans: dict[str, tuple[float, float]] = {}
running: Counter[str] = Counter()
most_at_once: Counter[str] = Counter()


def now() -> float:
    return time.monotonic() - started_at


async def sync_customer(
    customer: Annotated[str, ConcurrencyLimit(PER_CUSTOMER)],
    batch: int,
    seconds: float,
) -> None:
    name = f"{customer}#{batch}"
    running[customer] += 1
    most_at_once[customer] = max(most_at_once[customer], running[customer])
    begin = now()
    events.append((begin, name, f"start  ({customer}: {running[customer]} running)"))
    await asyncio.sleep(seconds)
    running[customer] -= 1
    end = now()
    events.append((end, name, f"end    ({customer}: {running[customer]} running)"))
    spans[name] = (begin, end)


async def nightly_report() -> None:
    begin = now()
    events.append((begin, "report", "start  (no limit)"))
    await asyncio.sleep(0.1)
    events.append((now(), "report", "end"))
    spans["report"] = (begin, now())


def chart(order: list[str]) -> None:
    width = int(max(end for _, end in spans.values()) / TICK) + 1
    print(f"\n{'':>10}  one column = {int(TICK * 1000)} ms, █ running, · parked")
    for name in order:
        begin, end = spans[name]
        waited = begin > TICK  # more than the moment it takes a worker to pick a run up
        row = "".join(
            "█"
            if begin <= (i + 0.5) * TICK < end
            else "·"
            if waited and (i + 0.5) * TICK < begin
            else " "
            for i in range(width)
        )
        print(f"{name:>10}  {row}")


async def main() -> None:
    global started_at
    plan = [("acme", 0.3)] * 6 + [("globex", 0.2)] * 4 + [("initech", 0.4)] * 2
    async with Docket() as docket:
        order: list[str] = []
        batches: Counter[str] = Counter()
        for customer, seconds in plan:
            batches[customer] += 1
            await docket.add(sync_customer)(customer, batches[customer], seconds)
            order.append(f"{customer}#{batches[customer]}")
        await docket.add(nightly_report)()
        order.append("report")

        started_at = time.monotonic()
        async with Worker(docket, concurrency=8) as worker:
            await worker.run_until_finished()

    print("Timeline (seconds since the worker started):")
    for at, name, what in sorted(events):
        print(f"  +{at:4.2f}s  {name:<10} {what}")
    chart(order)
    print(f"\nMost syncs running at once, per customer (limit {PER_CUSTOMER}):")
    for customer, peak in sorted(most_at_once.items()):
        print(f"  {customer:<8} {peak}")
    assert all(peak <= PER_CUSTOMER for peak in most_at_once.values())
    assert sorted(spans) == sorted(order), "every sync ran"


if __name__ == "__main__":
    asyncio.run(main())
