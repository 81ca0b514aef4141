"""arq: one ``arq arq_bench.WorkerSettings`` worker, ``max_jobs`` = the concurrency, every
other setting at arq's default. Scheduled tasks use ``_defer_until``; arq has no bulk
enqueue, so ``send_many`` is None."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from bench_common import Adapter, async_sleep_body, main, noop_body, venv_command


async def noop(ctx: dict[str, Any], i: int, t: float = 0.0) -> None:
    noop_body(i, t)


async def sleeper(ctx: dict[str, Any], i: int, t: float = 0.0) -> None:
    await async_sleep_body(i, t)


class WorkerSettings:
    """Read by the worker, where BENCH_URL and BENCH_CONCURRENCY are always set; the adapter
    process imports this module before it knows the URL and does not use these."""

    functions = [noop, sleeper]
    redis_settings = (
        RedisSettings.from_dsn(os.environ["BENCH_URL"]) if "BENCH_URL" in os.environ else None
    )
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "10"))


_pool: ArqRedis | None = None


async def setup() -> None:
    global _pool
    _pool = await create_pool(RedisSettings.from_dsn(os.environ["BENCH_URL"]))


async def teardown() -> None:
    if _pool is not None:
        await _pool.aclose()


async def send(kind: str, i: int, t: float, when: float | None) -> None:
    assert _pool is not None
    at = datetime.fromtimestamp(when, UTC) if when is not None else None
    function = "noop" if kind == "noop" else "sleeper"
    await _pool.enqueue_job(function, i, t, _defer_until=at)


def worker_command(concurrency: int) -> list[str]:
    arq_cli = venv_command("arq")
    return [arq_cli, "arq_bench.WorkerSettings"]


ADAPTER = Adapter(
    name="arq",
    send=send,
    setup=setup,
    teardown=teardown,
    worker_command=worker_command,
)

if __name__ == "__main__":
    main(ADAPTER)
