"""docket: the same adapter runs ours (the project's .venv) and the released pydocket (its
own venv), since code written for the released docket runs on ours unchanged."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from bench_common import Adapter, Unavailable, async_sleep_body, main, noop_body, venv_command

from docket import Docket

DOCKET_NAME = "bench"
SYSTEM = os.environ.get("BENCH_SYSTEM", "docket")
# A partitioned docket (``Docket(name, url, partitions=N)``), for the cluster workload.
# Passed only when N > 1, so a docket without the argument runs the 1-partition rows.
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "1"))


def docket_options() -> dict[str, Any]:
    return {"partitions": PARTITIONS} if PARTITIONS > 1 else {}


def url() -> str:
    """The released pydocket holds a pooled connection per in-flight task, and redis-py 8
    caps a pool at 100: at concurrency 100 its worker fails with "Too many connections",
    restarts, and strands the messages it had read until their redelivery timeout (tasks
    go missing from the run). It gets a bigger pool so it can be measured at all; ours
    runs on the default pool."""
    base = os.environ["BENCH_URL"]
    if SYSTEM != "pydocket":
        return base
    return f"{base}{'&' if '?' in base else '?'}max_connections=1000"


async def noop(i: int, t: float = 0.0) -> None:
    noop_body(i, t)


async def sleeper(i: int, t: float = 0.0) -> None:
    await async_sleep_body(i, t)


tasks = [noop, sleeper]
_docket: Docket | None = None


async def setup() -> None:
    global _docket
    try:
        _docket = Docket(name=DOCKET_NAME, url=url(), **docket_options())
    except TypeError as error:
        if "partitions" not in str(error):
            raise
        raise Unavailable(f"this docket takes no partitions= ({error})") from None
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


@cache
def _cli_takes_partitions() -> bool:
    done = subprocess.run(
        [venv_command("docket"), "worker", "--help"], capture_output=True, text=True
    )
    return "--partitions" in done.stdout


def worker_command(concurrency: int) -> list[str]:
    docket_cli = venv_command("docket")
    # The worker's partition count: DOCKET_PARTITIONS in its environment (worker_env),
    # and --partitions too where the CLI has it. A worker that disagrees with the
    # producer's count is refused when it opens the docket, so the run fails loudly.
    partitions = (
        ["--partitions", str(PARTITIONS)] if PARTITIONS > 1 and _cli_takes_partitions() else []
    )
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
        *partitions,
    ]


ADAPTER = Adapter(
    name=SYSTEM,
    send=send,
    send_many=send_many,
    setup=setup,
    teardown=teardown,
    worker_command=worker_command,
    worker_env={"DOCKET_PARTITIONS": str(PARTITIONS)} if PARTITIONS > 1 else {},
)

if __name__ == "__main__":
    main(ADAPTER)
