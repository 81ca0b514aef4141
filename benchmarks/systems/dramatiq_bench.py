"""dramatiq, on its Redis broker: one worker process (`-p 1`; dramatiq still forks a parent
and that one worker) with BENCH_CONCURRENCY threads, default middleware and settings.

No bulk enqueue: group() and pipeline() send one message at a time.

Left at the default, and worth knowing: redis-py 6+ caps a connection pool at 100
connections, and dramatiq's worker threads ack over the shared pool, so at `-t 100` an ack
now and then gets "Too many connections" and is retried after 5 s (seen in about 1 run in
8 of the sleep workload; nothing lost or run twice)."""

from __future__ import annotations

import math
import time

import dramatiq
from bench_common import Adapter, bench_url, main, noop_body, sync_sleep_body, venv_command
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=bench_url())
dramatiq.set_broker(broker)


@dramatiq.actor
def noop(i: int, t: float = 0.0) -> None:
    noop_body(i, t)


@dramatiq.actor
def sleeper(i: int, t: float = 0.0) -> None:
    sync_sleep_body(i, t)


def send(kind: str, i: int, t: float, when: float | None) -> None:
    actor = noop if kind == "noop" else sleeper
    if when is None:
        actor.send(i, t)
    else:
        # The delay is in whole milliseconds and means "not before": round up.
        delay = max(0, math.ceil((when - time.time()) * 1000))
        actor.send_with_options(args=(i, t), delay=delay)


def teardown() -> None:
    broker.close()


def worker_command(concurrency: int) -> list[str]:
    cli = venv_command("dramatiq")
    return [cli, "dramatiq_bench", "-p", "1", "-t", str(concurrency)]


ADAPTER = Adapter(
    name="dramatiq",
    send=send,
    teardown=teardown,
    worker_command=worker_command,
)

if __name__ == "__main__":
    main(ADAPTER)
