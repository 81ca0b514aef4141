"""huey (RedisHuey): one consumer process, `-k thread -w BENCH_CONCURRENCY`, default settings.

One deviation from the defaults: the redis connection pool is capped at 1000 connections
instead of redis-py's default of 100 (redis-py 6+; older releases had no cap). Each huey
worker thread holds a connection while it blocks on the queue, so at `-w 100` the pool is
exhausted and the consumer's scheduler thread gets "Too many connections" and cannot move
due tasks. A larger cap only lets the pool open the connections the threads ask for; it
does not change how huey polls or schedules.

No bulk enqueue: Task.map() and group() enqueue one task at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from bench_common import Adapter, bench_url, main, noop_body, sync_sleep_body, venv_command
from huey import RedisHuey
from redis import ConnectionPool

MAX_CONNECTIONS = 1000


huey = RedisHuey(
    "bench",
    connection_pool=ConnectionPool.from_url(bench_url(), max_connections=MAX_CONNECTIONS),
)


def task(function: Callable[..., None]):  # type: ignore[no-untyped-def]
    # huey names a task "<module>.<function>"; run as a script this module is __main__,
    # while the consumer imports it as huey_bench, so name the module explicitly.
    function.__module__ = "huey_bench"
    return huey.task()(function)


@task
def noop(i: int, t: float = 0.0) -> None:
    noop_body(i, t)


@task
def sleeper(i: int, t: float = 0.0) -> None:
    sync_sleep_body(i, t)


def send(kind: str, i: int, t: float, when: float | None) -> None:
    function = noop if kind == "noop" else sleeper
    if when is None:
        function(i, t)
    else:
        function.schedule((i, t), eta=datetime.fromtimestamp(when, UTC))


def worker_command(concurrency: int) -> list[str]:
    cli = venv_command("huey_consumer")
    return [cli, "huey_bench.huey", "-w", str(concurrency), "-k", "thread"]


ADAPTER = Adapter(
    name="huey",
    send=send,
    worker_command=worker_command,
)

if __name__ == "__main__":
    main(ADAPTER)
