"""celery, on its Redis transport: one worker, `--pool threads -c BENCH_CONCURRENCY`, default
settings and log level, no result backend (results are ignored). Scheduled tasks are ETA
tasks, which the worker holds until they are due.

No bulk enqueue: group() publishes one message per task, and chunks() changes what a task
is (one message runs a batch of calls)."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

from bench_common import Adapter, main, noop_body, sync_sleep_body
from celery import Celery


def bench_url() -> str:
    """The redis URL. The worker has BENCH_URL in its environment; the adapter process runs
    this module before main() sets BENCH_URL from ``--url``, so there it is read from the
    command line."""
    argv = sys.argv[1:]
    for k, arg in enumerate(argv):
        if arg == "--url" and k + 1 < len(argv):
            return argv[k + 1]
        if arg.startswith("--url="):
            return arg.split("=", 1)[1]
    return os.environ["BENCH_URL"]


# The main name makes task names "celery_bench.<function>" also when this file runs as
# __main__ (the adapter process), matching the worker's import of it.
app = Celery("celery_bench", broker=bench_url())


@app.task(ignore_result=True)
def noop(i: int, t: float = 0.0) -> None:
    noop_body(i, t)


@app.task(ignore_result=True)
def sleeper(i: int, t: float = 0.0) -> None:
    sync_sleep_body(i, t)


def send(kind: str, i: int, t: float, when: float | None) -> None:
    task = noop if kind == "noop" else sleeper
    if when is None:
        task.apply_async((i, t))
    else:
        task.apply_async((i, t), eta=datetime.fromtimestamp(when, UTC))


def teardown() -> None:
    app.close()


def worker_command(concurrency: int) -> list[str]:
    cli = os.path.join(os.path.dirname(sys.executable), "celery")
    return [cli, "-A", "celery_bench", "worker", "--pool", "threads", "-c", str(concurrency)]


ADAPTER = Adapter(
    name="celery",
    send=send,
    teardown=teardown,
    worker_command=worker_command,
)

if __name__ == "__main__":
    main(ADAPTER)
