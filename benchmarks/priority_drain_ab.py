"""Drain throughput of one worker (concurrency 10) over N no-op NORMAL tasks, against a
private redis-server: the A/B behind docs/priorities.md's "the hot path" figures.

    PYTHONPATH=<a checkout of docket> python benchmarks/priority_drain_ab.py [N]

Prints one line: tasks, seconds, tasks per second. Run it alternately on two
checkouts (the base commit and this one) for an A/B."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
import time

from docket import Docket, Worker


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    folder = tempfile.mkdtemp(prefix="docket-prio-bench-")
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("redis-server did not start")


async def noop() -> None:
    pass


async def drain(url: str, count: int) -> float:
    async with Docket(name="drain-ab", url=url) as docket:
        docket.register(noop)
        await docket.add_many([docket.call(noop)() for _ in range(count)])
        async with Worker(docket, concurrency=10) as worker:
            started = time.perf_counter()
            await worker.run_until_finished()
            return time.perf_counter() - started


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    server, url = start_server()
    try:
        seconds = asyncio.run(drain(url, count))
    finally:
        server.terminate()
        server.wait()
    print(f"{count} tasks {seconds:.2f} s {count / seconds:,.0f} tasks/s")


if __name__ == "__main__":
    main()
