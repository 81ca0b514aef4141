"""Find and flood: one task discovers work, then floods the docket with a task per item.

Run it with `python examples/find_and_flood.py`. It uses the in-process `memory://` docket
unless DOCKET_URL points at a Redis, and finishes by itself in about four seconds.

The pattern: a periodic "find" task asks some system what needs doing (here: which
orders are open) and schedules one small task per item.

- Urgent items go out at once, in one pipelined `add_many` call.
- Routine items are scattered over a window with an `Agenda`, so a thousand of them do
  not hit the workers in the same instant.
- Every item task has a stable key (`process-<order>`). The next poll sees the orders
  that are still open, but those already waiting keep their first schedule
  (`ALREADY_SCHEDULED`): only new orders are added.
- The item task checks that its order is still open before working on it, so a
  duplicate (a redelivery, or a poll racing a finishing task) does no harm.
"""

import asyncio
import os
import random
import time
from datetime import timedelta
from typing import Annotated

from docket import Agenda, CurrentDocket, Disposition, Docket, Logged, Perpetual, Worker

os.environ.setdefault("DOCKET_URL", "memory://find-and-flood")

POLLS = 3
POLL_EVERY = timedelta(milliseconds=700)
ROUTINE_WINDOW = timedelta(seconds=2)

began = time.monotonic()
report: list[str] = []

# Stands in for a database table: order id -> urgent?  Orders leave it once processed,
# and every poll a few new ones arrive.
open_orders: dict[str, bool] = {}
arrived = 0


def elapsed() -> str:
    return f"{time.monotonic() - began:5.2f}s"


def receive_orders(count: int) -> None:
    global arrived
    for _ in range(count):
        open_orders[f"order-{arrived:03d}"] = arrived % 5 == 0  # every fifth is urgent
        arrived += 1


async def process_order(order_id: Annotated[str, Logged], urgent: bool = False) -> None:
    if order_id not in open_orders:
        report.append(f"{elapsed()}  skip     {order_id} (already processed)")
        return
    await asyncio.sleep(random.uniform(0.01, 0.05))  # the actual work
    del open_orders[order_id]
    report.append(f"{elapsed()}  {'URGENT ' if urgent else 'routine'}  {order_id}")


async def find_orders(
    docket: Docket = CurrentDocket(),
    poll: Perpetual = Perpetual(every=POLL_EVERY),
) -> None:
    receive_orders(20 if arrived == 0 else 4)  # a backlog at first, then a trickle
    found = dict(open_orders)
    urgent = [order for order, is_urgent in found.items() if is_urgent]
    routine = [order for order, is_urgent in found.items() if not is_urgent]

    # Urgent orders: all now, in one round trip.
    flooded = await docket.add_many(
        docket.call(process_order, key=f"process-{order}")(order, urgent=True) for order in urgent
    )

    # Routine orders: spread evenly over the window.
    agenda = Agenda()
    for order in routine:
        agenda.add(process_order, key=f"process-{order}")(order)
    scattered = await agenda.scatter(docket, over=ROUTINE_WINDOW)

    new = [e for e in flooded + scattered if e.disposition == Disposition.SCHEDULED]
    report.append(
        f"{elapsed()}  find     {len(found)} open orders ({len(urgent)} urgent): "
        f"{len(new)} newly scheduled, {len(found) - len(new)} already waiting"
    )


async def main() -> None:
    async with Docket() as docket:
        docket.register(process_order)
        await docket.add(find_orders, key="find-orders")()

        async with Worker(docket, concurrency=8) as worker:
            # A perpetual task never finishes by itself: poll three times, then drain.
            await worker.run_at_most({"find-orders": POLLS})

    processed = [line.split()[-1] for line in report if "URGENT" in line or "routine" in line]
    print(f"\nWhat ran ({len(report)} runs):")
    for line in report:
        print(f"  {line}")
    once = "each exactly once" if len(processed) == len(set(processed)) else "SOME TWICE"
    print(
        f"\n{arrived} orders arrived, {len(processed)} processed ({once}), "
        f"{len(open_orders)} still open"
    )


if __name__ == "__main__":
    asyncio.run(main())
