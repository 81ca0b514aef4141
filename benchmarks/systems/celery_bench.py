"""celery, on its Redis transport: one worker, `--pool threads -c BENCH_CONCURRENCY`, default
settings and log level, no result backend (results are ignored). Scheduled tasks are ETA
tasks, which the worker holds until they are due.

No bulk enqueue: group() publishes one message per task, and chunks() changes what a task
is (one message runs a batch of calls)."""

from __future__ import annotations

from datetime import UTC, datetime

from bench_common import Adapter, bench_url, main, noop_body, sync_sleep_body, venv_command
from celery import Celery

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
    cli = venv_command("celery")
    return [cli, "-A", "celery_bench", "worker", "--pool", "threads", "-c", str(concurrency)]


ADAPTER = Adapter(
    name="celery",
    send=send,
    teardown=teardown,
    worker_command=worker_command,
)

if __name__ == "__main__":
    main(ADAPTER)
