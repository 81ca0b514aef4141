"""taskiq with taskiq-redis's ``RedisStreamBroker``: one ``taskiq worker`` with
``--workers 1`` (taskiq's default is 2 worker processes) and ``--max-async-tasks`` = the
concurrency, every other setting at taskiq's default.

The stream's consumer group is created with id ``$`` (only messages added after it), so the
sending side calls ``broker.startup()`` before it enqueues, as taskiq's docs do for clients;
that is what lets pre-queued tasks reach a worker started later.

taskiq has no bulk kick, so ``send_many`` is None. It cannot run a task at a given time in
the worker: ``schedule_by_time`` writes to a schedule source that only the separate
``taskiq scheduler`` process reads."""

from __future__ import annotations

import os

from bench_common import Adapter, async_sleep_body, main, noop_body, venv_command
from taskiq import AsyncTaskiqDecoratedTask
from taskiq_redis import RedisStreamBroker


async def noop(i: int, t: float = 0.0) -> None:
    noop_body(i, t)


async def sleeper(i: int, t: float = 0.0) -> None:
    await async_sleep_body(i, t)


def make_broker(url: str) -> RedisStreamBroker:
    made = RedisStreamBroker(url=url)
    made.register_task(noop, task_name="noop")
    made.register_task(sleeper, task_name="sleeper")
    return made


# The worker (``taskiq worker taskiq_bench:broker``) always has BENCH_URL; the adapter
# process imports this module before it knows the URL, and makes its broker in setup().
broker: RedisStreamBroker | None = (
    make_broker(os.environ["BENCH_URL"]) if "BENCH_URL" in os.environ else None
)
_tasks: dict[str, AsyncTaskiqDecoratedTask] = {}


async def setup() -> None:
    global broker
    if broker is None:
        broker = make_broker(os.environ["BENCH_URL"])
    for name in ("noop", "sleeper"):
        task = broker.find_task(name)
        assert task is not None
        _tasks[name] = task
    await broker.startup()


async def teardown() -> None:
    if broker is not None:
        await broker.shutdown()


async def send(kind: str, i: int, t: float, when: float | None) -> None:
    assert when is None, "taskiq cannot schedule in the worker"
    await _tasks["noop" if kind == "noop" else "sleeper"].kiq(i, t)


def worker_command(concurrency: int) -> list[str]:
    taskiq_cli = venv_command("taskiq")
    return [
        taskiq_cli,
        "worker",
        "taskiq_bench:broker",
        "--workers",
        "1",
        "--max-async-tasks",
        str(concurrency),
    ]


ADAPTER = Adapter(
    name="taskiq",
    send=send,
    setup=setup,
    teardown=teardown,
    worker_command=worker_command,
    scheduling=(
        "taskiq runs a task at a given time only through a separate `taskiq scheduler` "
        "process reading a schedule source (which it re-reads every 60 s by default); "
        "the worker itself cannot delay a task"
    ),
)

if __name__ == "__main__":
    main(ADAPTER)
