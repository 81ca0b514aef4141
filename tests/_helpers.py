"""Small helpers shared by test modules (imported as a top-level module, like _redis_server)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from docket import Docket, Execution, ExecutionState, Worker


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = ""
) -> None:
    """Poll ``condition`` until it holds; fail (not hang) if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.01)


def fast_worker(docket: Docket, **options: Any) -> Worker:
    """A worker that polls every few milliseconds, so tests need not wait for it."""
    options.setdefault("minimum_check_interval", timedelta(milliseconds=5))
    options.setdefault("scheduling_resolution", timedelta(milliseconds=5))
    return Worker(docket, **options)


async def run_all(docket: Docket, **options: Any) -> Worker:
    """Run a fast worker on ``docket`` until nothing is left to do; returns the worker."""
    async with fast_worker(docket, **options) as worker:
        await worker.run_until_finished()
    return worker


async def states(executions: list[Execution]) -> list[ExecutionState]:
    """The current state of each of ``executions``, freshly read."""
    for execution in executions:
        await execution.sync()
    return [execution.state for execution in executions]


async def keys_of(docket: Docket, kind: str) -> list[bytes]:
    """The Redis keys ``docket`` keeps under ``{prefix}:{kind}:``."""
    async with docket.redis() as redis:
        return [key async for key in redis.scan_iter(match=f"{docket.prefix}:{kind}:*")]


async def wait_until_no_keys(docket: Docket, kind: str, timeout: float = 10.0) -> list[bytes]:
    """Until ``docket`` keeps no ``kind`` keys, or ``timeout``; returns those left."""
    deadline = time.monotonic() + timeout
    while (left := await keys_of(docket, kind)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return left


@asynccontextmanager
async def in_background(worker: Worker, *gates: asyncio.Event) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``worker.run_until_finished()`` alongside the test; add work before entering.

    On the way out every gate is opened, so a task held on one cannot keep the worker
    draining forever when the test failed before releasing it."""
    run = asyncio.create_task(worker.run_until_finished())
    try:
        yield run
    finally:
        for gate in gates:
            gate.set()
        if not run.done():
            worker.stop()
            run.cancel()
        with suppress(asyncio.CancelledError):
            await run


@asynccontextmanager
async def running_throughout(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    """``worker.run_forever()`` in the background; on the way out it must still be running."""
    run = asyncio.create_task(worker.run_forever(), name="run_forever")
    try:
        yield run
        await asyncio.sleep(0)
        if run.done():
            error = None if run.cancelled() else run.exception()
            raise AssertionError(f"the worker's run loop exited: {error!r}")
    finally:
        worker.stop()
        with suppress(Exception):
            await asyncio.wait_for(run, 10)


@asynccontextmanager
async def running_forever(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``worker.run_forever()`` alongside the test; stop it gracefully on the way out."""
    run = asyncio.create_task(worker.run_forever())
    try:
        yield run
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)


def portal_execution(alias: str, key: str) -> Execution | None:
    """The execution of ``key`` on the docket of Django alias ``alias`` (None if there is
    none), read on docket_django's portal loop."""
    # Imported here so the tests that do not use Django never import it.
    from docket_django.portal import get_portal

    async def read() -> Execution | None:
        docket = await get_portal().docket(alias)
        return await docket.get_execution(key)

    return get_portal().run(read())


def span_exporter() -> InMemorySpanExporter:
    """The process's in-memory exporter, installed with an SDK provider on first use."""
    provider: Any = trace.get_tracer_provider()
    exporter: InMemorySpanExporter | None = getattr(provider, "_docket_test_exporter", None)
    if exporter is not None:
        return exporter
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider), "another TracerProvider is set"
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider._docket_test_exporter = exporter  # type: ignore[attr-defined]
    return exporter
