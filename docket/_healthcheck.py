"""A tiny HTTP endpoint for probes (``--healthcheck-port``): any GET answers 200 ``ok``
while the worker loop is alive and Redis reachable (``Worker.is_healthy``), else 503 with
the reason. It runs on the worker's event loop, so a loop that is stuck (a task blocking
it) does not answer at all, which probes count as a failure too."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .worker import Worker


async def serve_healthcheck(worker: Worker, port: int, host: str = "0.0.0.0") -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        problem = worker.health_problem()
        body = b"ok\n" if problem is None else f"unhealthy: {problem}\n".encode()
        status = b"200 OK" if problem is None else b"503 Service Unavailable"
        writer.write(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        with suppress(ConnectionError):
            await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, host, port)
