"""One policy for every background loop of a worker: run a step; when it could not reach
Redis, say so once and wait before the next one. SAQ's ``poll`` is the model: the loops
differ only in their step, their pace and what they say."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from redis.exceptions import RedisError

logger = logging.getLogger("docket.worker")

REDIS_TROUBLE = "Redis error in worker %(worker)s: %(error)s; retrying in %(delay).1fs"


def seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True, slots=True)
class Trouble:
    """What a loop does about a step that failed to reach Redis: unless ``ignored``
    says the error is expected, call ``noted``, log ``message`` at ``level``
    (%-formatted with ``worker``, ``error`` and ``delay``), then wait ``delay`` seconds
    (None: no wait beyond the loop's own pace). A callable delay is read at each error,
    so a worker's ``reconnection_delay`` changed after it was made still applies."""

    message: str
    worker: str
    level: int = logging.WARNING
    delay: float | Callable[[], float] | None = None
    ignored: Callable[[BaseException], bool] | None = None
    noted: Callable[[], None] | None = None

    async def handle(self, error: BaseException) -> None:
        if self.ignored is not None and self.ignored(error):
            return
        if self.noted is not None:
            self.noted()
        delay = self.delay() if callable(self.delay) else self.delay
        context = {"worker": self.worker, "error": error, "delay": delay or 0.0}
        logger.log(self.level, self.message, context)
        if delay is not None:
            await asyncio.sleep(delay)


async def poll(
    step: Callable[[], Coroutine[Any, Any, None]],
    trouble: Trouble,
    *,
    every: float = 0.0,
    until: Callable[[], bool] | None = None,
) -> None:
    """Run ``step`` until ``until()`` says stop (without it, until cancelled), pausing
    ``every`` seconds after each step, failed or not. A step that waits for its own
    moment (the scheduler's) takes no pause here."""
    while until is None or not until():
        try:
            await step()
        except (RedisError, OSError) as error:
            await trouble.handle(error)
        if every:
            await asyncio.sleep(every)


class Tasks:
    """A set of loops started together and cancelled together."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def start(self, loop: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(loop, name=name))

    async def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
