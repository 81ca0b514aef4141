"""docket: the same adapter runs ours (the project's .venv) and the released pydocket (its
own venv), since code written for the released docket runs on ours unchanged."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from bench_common import Adapter, async_sleep_body, main, noop_body, venv_command

from docket import Docket

DOCKET_NAME = "bench"
SYSTEM = os.environ.get("BENCH_SYSTEM", "docket")


def url() -> str:
    """The released pydocket holds a pooled connection per in-flight task, and redis-py 8
    caps a pool at 100: at concurrency 100 its worker fails with "Too many connections",
    restarts, and strands the messages it had read until their redelivery timeout (tasks
    go missing from the run). It gets a bigger pool so it can be measured at all; ours
    runs on the default pool."""
    base = os.environ["BENCH_URL"]
    return f"{base}?max_connections=1000" if SYSTEM == "pydocket" else base


async def noop(i: int, t: float = 0.0) -> None:
    noop_body(i, t)


async def sleeper(i: int, t: float = 0.0) -> None:
    await async_sleep_body(i, t)


tasks = [noop, sleeper]
_docket: Docket | None = None


async def setup() -> None:
    global _docket
    _docket = Docket(name=DOCKET_NAME, url=url())
    await _docket.__aenter__()
    for function in tasks:
        _docket.register(function)


async def teardown() -> None:
    if _docket is not None:
        await _docket.__aexit__(None, None, None)


def _function(kind: str) -> Callable[..., Awaitable[None]]:
    return noop if kind == "noop" else sleeper


async def send(kind: str, i: int, t: float, when: float | None) -> None:
    assert _docket is not None
    at = datetime.fromtimestamp(when, UTC) if when is not None else None
    await _docket.add(_function(kind), when=at)(i, t)


async def send_many(kind: str, ids: list[int]) -> None:
    assert _docket is not None
    function = _function(kind)
    await _docket.add_many(_docket.call(function)(i, 0.0) for i in ids)


def worker_command(concurrency: int) -> list[str]:
    docket_cli = venv_command("docket")
    return [
        docket_cli,
        "worker",
        "--docket",
        DOCKET_NAME,
        "--url",
        url(),
        "--tasks",
        "docket_bench:tasks",
        "--concurrency",
        str(concurrency),
    ]


ADAPTER = Adapter(
    name=SYSTEM,
    send=send,
    send_many=send_many,
    setup=setup,
    teardown=teardown,
    worker_command=worker_command,
)

if __name__ == "__main__":
    main(ADAPTER)
