"""Each task run is handled like a request under Django's ASGI handler.

* Sync (``def``) tasks run through ``asgiref.sync_to_async(thread_sensitive=True)``
  inside a ``ThreadSensitiveContext`` of their own. The context is bound to one of a
  fixed set of single-thread executors ("sync slots", ``WORKER.SYNC_THREADS``), so the
  number of threads is bounded and each slot keeps its DB connection between runs:
  ``CONN_MAX_AGE`` reuse works. ``close_old_connections()`` (which honours
  ``CONN_MAX_AGE`` and ``CONN_HEALTH_CHECKS``) and ``reset_queries()`` run in that thread
  before the task, ``close_old_connections()`` after it.
* Async tasks run on the worker's loop in a fresh ``ThreadSensitiveContext``: their
  async ORM calls share one thread per run (as in an ASGI request). If that thread
  opened connections they are closed at the end of the run, since the thread goes away.
* In test mode (see ``docket_django.testing``) runs happen in the test's own thread and
  connections are left alone, so tasks see the test's transaction.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import suppress
from typing import Any

from asgiref.sync import SyncToAsync, ThreadSensitiveContext, sync_to_async
from django.db import close_old_connections, connections, reset_queries

# Set by the test kit: run sync code in the caller's thread, leave connections alone.
inline_mode: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "docket_django_inline", default=False
)

_EXECUTOR_CONTEXTS = "executor" in inspect.signature(ThreadSensitiveContext).parameters


def _start_of_run() -> None:
    reset_queries()
    close_old_connections()


def _end_of_run() -> None:
    close_old_connections()


class SyncSlots:
    """A bounded set of single-thread executors for sync task code (one loop)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"docket-sync-{i}")
            for i in range(size)
        ]
        self.free: asyncio.Queue[Executor] = asyncio.Queue()
        for executor in self.executors:
            self.free.put_nowait(executor)

    async def close(self) -> None:
        """Close each slot's connections in its own thread, then stop the threads."""
        loop = asyncio.get_running_loop()
        for executor in self.executors:
            with suppress(Exception):
                await loop.run_in_executor(executor, connections.close_all)
            executor.shutdown(wait=False)


_slots: dict[asyncio.AbstractEventLoop, SyncSlots] = {}


def configure_slots(size: int) -> SyncSlots:
    """Install ``size`` sync slots on the running loop (the worker does this)."""
    loop = asyncio.get_running_loop()
    slots = SyncSlots(size)
    _slots[loop] = slots
    return slots


async def close_slots() -> None:
    slots = _slots.pop(asyncio.get_running_loop(), None)
    if slots is not None:
        await slots.close()


def _current_slots() -> SyncSlots:
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = SyncSlots(4)
    return slots


async def run_sync(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run sync ``function`` as one request-like unit of work (see module docs)."""
    if inline_mode.get():
        return await sync_to_async(function, thread_sensitive=True)(*args, **kwargs)
    if not _EXECUTOR_CONTEXTS:  # older asgiref: a fresh thread per run
        async with ThreadSensitiveContext():
            to_thread = sync_to_async(_wrapped_run, thread_sensitive=True)
            result = await to_thread(function, args, kwargs, True)
        return result
    slots = _current_slots()
    executor = await slots.free.get()
    try:
        async with ThreadSensitiveContext(executor=executor):
            return await sync_to_async(_wrapped_run, thread_sensitive=True)(
                function, args, kwargs, False
            )
    finally:
        slots.free.put_nowait(executor)


def _wrapped_run(
    function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], close_all: bool
) -> Any:
    _start_of_run()
    try:
        return function(*args, **kwargs)
    finally:
        if close_all:
            connections.close_all()
        else:
            _end_of_run()


async def run_async(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Await async ``function`` in a per-run thread-sensitive context."""
    if inline_mode.get():
        return await function(*args, **kwargs)
    context = ThreadSensitiveContext()
    async with context:
        try:
            return await function(*args, **kwargs)
        finally:
            # Only if the run's async ORM calls made a thread: its connections die with it.
            if context in SyncToAsync.context_to_thread_executor:
                await sync_to_async(connections.close_all, thread_sensitive=True)()


async def run_scoped(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if inspect.iscoroutinefunction(function):
        return await run_async(function, *args, **kwargs)
    return await run_sync(function, *args, **kwargs)


async def call_in_scope_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call sync ``function`` in the current run's thread (signals, record updates)."""
    return await sync_to_async(function, thread_sensitive=True)(*args, **kwargs)
