"""Health: the heartbeat other workers judge this one by, the depth gauges sampled with
it, and what ``Worker.health_problem`` answers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ._redis import scripts
from ._redis.keys import GROUP, LEVELS
from ._worker_loops import Trouble, poll, seconds
from .instrumentation import metrics_collected

if TYPE_CHECKING:
    from ._worker_state import WorkerState
    from .worker import Worker

logger = logging.getLogger("docket.worker")


class Health:
    """The run loop is going, its last read reached Redis, and so did the last
    heartbeat, recently."""

    def __init__(self, worker: Worker, state: WorkerState) -> None:
        self._worker = worker
        self._state = state
        self.running_loop = False
        self.reads_ok = True
        self.read_since: float | None = None
        """When the read under way began (None: no read under way)."""
        self.heartbeat_ok = False
        self.heartbeat_at: float | None = None

    def problem(self, read_block: float) -> str | None:
        """Why the worker is not healthy, or None when it is; reads block for at most
        ``read_block`` seconds."""
        if not self.running_loop:
            return "the worker loop is not running"
        if not self.reads_ok:
            return "the last read from Redis failed"
        if not self.heartbeat_ok:
            return "the last heartbeat failed" if self.heartbeat_at else "no heartbeat yet"
        docket = self._worker.docket
        now = time.monotonic()
        heartbeat = seconds(docket.heartbeat_interval)
        window = max(heartbeat * docket.missed_heartbeats, heartbeat + read_block)
        if self.heartbeat_at is None or now - self.heartbeat_at > window:
            return f"no heartbeat reached Redis in {window:g}s"
        read_since = self.read_since
        if read_since is not None and now - read_since > read_block * 3:
            return f"a read from Redis has hung for {now - read_since:.0f}s"
        return None

    async def heartbeat_loop(self, then: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Beat every ``heartbeat_interval``, doing ``then`` after each beat."""
        worker = self._worker
        interval = max(seconds(worker.docket.heartbeat_interval), 0.01)
        window = interval * worker.docket.missed_heartbeats
        trouble = Trouble("Heartbeat failed: %(error)s", worker.name, noted=self._beat_failed)
        await poll(lambda: self._beat(window, then), trouble, every=interval)

    def _beat_failed(self) -> None:
        self.heartbeat_ok = False

    async def _beat(self, window: float, then: Callable[[], Coroutine[Any, Any, None]]) -> None:
        worker = self._worker
        docket = worker.docket
        with self._state.internal("docket.heartbeat"):
            await docket.engine.scripts.send(
                scripts.Heartbeat(
                    workers=docket.keys.workers,
                    worker_tasks=docket.keys.worker_tasks(worker.name),
                    worker=worker.name,
                    window=window,
                    task_names=sorted(docket.tasks),
                )
            )
            self.heartbeat_ok = True
            self.heartbeat_at = time.monotonic()
            if metrics_collected():
                await self.sample_depths()
            await then()

    async def sample_depths(self) -> None:
        """Sample the queue and schedule depths for the gauges (read on collection).
        Best effort: a failed sample keeps the last one and never fails the heartbeat."""
        worker = self._worker
        client = worker.docket.engine.connection.client
        try:
            whole, micros = await client.time()
            now = whole + micros / 1_000_000
            async with client.pipeline(transaction=False) as pipe:
                for keys in worker.docket.partition_keys:
                    for stream in keys.streams:
                        pipe.xlen(stream)
                        pipe.xpending(stream, GROUP)
                    pipe.zcount(keys.queue, "-inf", now)
                    pipe.zcount(keys.queue, f"({now}", "+inf")
                replies = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as error:
            logger.debug("Could not sample queue depths: %s", error)
            return
        queue_depth = schedule_depth = 0
        per_partition = 2 * len(LEVELS) + 2
        for index in range(0, len(replies), per_partition):
            *streams, overdue, future = replies[index : index + per_partition]
            if isinstance(overdue, Exception):
                return
            for length, pending in zip(streams[::2], streams[1::2], strict=True):
                if isinstance(length, Exception):
                    return
                # Entries delivered but not yet settled are running, not waiting (an
                # error here means no consumer group yet, so nothing is delivered).
                claimed = int(pending["pending"]) if isinstance(pending, dict) else 0
                queue_depth += max(int(length) - claimed, 0)
            queue_depth += int(overdue)
            if not isinstance(future, Exception):
                schedule_depth += int(future)
        self._state.metrics.queue_depth = queue_depth
        self._state.metrics.schedule_depth = schedule_depth
