"""A background event loop that owns this process's dockets.

Django code is mostly synchronous, and a ``Docket`` is bound to the event loop it was
entered on. So the producer side (``task.enqueue()``, the ``django.tasks`` backend, the
admin, the test kit) talks to Redis from one daemon thread running one loop, with one
entered docket per alias; sync callers block on a future, async callers await it from
their own loop. The worker command runs its worker on this loop too, so ``memory://``
dockets are shared by everything in the process.

Nothing starts until first use: importing this module touches neither Redis nor the DB.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from typing import Any, TypeVar

from django.core.signals import setting_changed
from django.dispatch import receiver

from docket import Docket

from .conf import docket_settings
from .dockets import build_docket
from .registry import register_all

T = TypeVar("T")


class Portal:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="docket-django-portal", daemon=True)
        self._dockets: dict[tuple[str, Any], Docket] = {}
        self._lock: asyncio.Lock | None = None
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def in_portal(self) -> bool:
        return threading.current_thread() is self.thread

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the portal loop and wait for it (from sync code)."""
        if self.in_portal():
            coroutine.close()
            raise RuntimeError(
                "A synchronous docket_django call was made from the docket event loop "
                "(an async task); use the async variant (aenqueue, arun_pending, ...)"
            )
        return self.submit(coroutine).result(timeout)

    async def arun(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` on the portal loop from any loop."""
        if asyncio.get_running_loop() is self.loop:
            return await coroutine
        return await asyncio.wrap_future(self.submit(coroutine))

    async def docket(self, alias: str) -> Docket:
        """The entered docket for ``alias`` (portal loop only)."""
        config = docket_settings(alias)
        cache_key = (alias, config)
        found = self._dockets.get(cache_key)
        if found is not None:
            register_all(found, alias)
            return found
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            found = self._dockets.get(cache_key)
            if found is None:
                found = build_docket(alias)
                await found.__aenter__()
                self._dockets[cache_key] = found
        return found

    def forget(self) -> None:
        """Drop the cached dockets (the settings changed); they are closed in the
        background."""
        dockets, self._dockets = list(self._dockets.values()), {}

        async def close() -> None:
            for docket in dockets:
                with suppress(Exception):
                    await docket.__aexit__(None, None, None)

        if dockets and self.loop.is_running():
            self.submit(close())

    def close(self, timeout: float = 2.0) -> None:
        dockets, self._dockets = list(self._dockets.values()), {}

        async def close() -> None:
            for docket in dockets:
                with suppress(Exception):
                    await docket.__aexit__(None, None, None)

        if self.loop.is_running():
            with suppress(Exception):
                self.submit(close()).result(timeout)
            self.loop.call_soon_threadsafe(self.loop.stop)


_portal: Portal | None = None
_portal_lock = threading.Lock()


def get_portal() -> Portal:
    global _portal
    portal = _portal
    if portal is not None and portal.pid == os.getpid() and portal.thread.is_alive():
        return portal
    with _portal_lock:
        if _portal is None or _portal.pid != os.getpid() or not _portal.thread.is_alive():
            # After a fork the parent's loop thread does not exist here: start afresh.
            _portal = Portal()
        return _portal


def forget_dockets() -> None:
    if _portal is not None and _portal.pid == os.getpid():
        _portal.forget()


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # The entered dockets were built from the old values (conf drops its own cache too).
    if setting in {"DOCKET", "SECRET_KEY"}:
        forget_dockets()


@atexit.register
def _close_portal() -> None:
    if _portal is not None and _portal.pid == os.getpid():
        _portal.close()


def run_sync[V](function: Callable[[], Awaitable[V]]) -> V:
    """Run an async function on the portal loop from sync code."""

    async def call() -> V:
        return await function()

    return get_portal().run(call())
