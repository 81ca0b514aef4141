"""The scheduler: due tasks move from the schedule to the stream, and the automatic
Perpetual tasks are kept in place."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import TYPE_CHECKING

from ._priority import Priority
from ._redis import scripts
from ._worker_loops import poll, seconds
from .dependencies import get_perpetual
from .execution import TaskCall

if TYPE_CHECKING:
    from ._worker_state import WorkerState
    from .worker import Worker

# How many due tasks one move_due.lua call moves. Redis runs nothing else while a script
# runs, and each task moved costs it about 20 us (SLOWLOG, 2-core machine): 1,000 a call
# held every other client up to 30 ms, twice that with two workers moving back to back.
# At 200 a call stays near 4 ms, and a backlog still moves at tens of thousands a second.
MOVE_BATCH = 200


class Scheduler:
    def __init__(self, worker: Worker, state: WorkerState) -> None:
        self._worker = worker
        self._state = state
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look at the schedule now: an earlier task was added, or the worker stops."""
        self._wake.set()

    async def loop(self) -> None:
        await poll(self._move_due, self._state.trouble, until=lambda: self._state.stopping)

    async def _move_due(self) -> None:
        docket = self._worker.docket
        delay = -1.0
        for keys in docket.partition_keys:
            with self._state.internal("docket.move_due"):
                moved, delay_text = await docket.engine.scripts.send(
                    scripts.MoveDue(
                        queue=keys.queue,
                        stream=keys.stream,
                        high_stream=keys.level_stream(Priority.HIGH),
                        low_stream=keys.level_stream(Priority.LOW),
                        record_prefix=keys.record_prefix,
                        limit=MOVE_BATCH,
                        events_prefix=keys.events_prefix,
                    )
                )
            if int(moved):
                docket.engine.connection.notify_activity()
            if int(moved) >= MOVE_BATCH:
                # More is due there: round again at once (the other partitions after).
                delay = 0.0
                continue
            due_in = float(delay_text)
            if due_in >= 0 and (delay < 0 or due_in < delay):
                delay = due_in
        if delay == 0.0:
            return
        # Pub/sub wakes the scheduler for earlier tasks; the resolution bounds how
        # late a task can be if such a wake-up is ever missed.
        cap = max(seconds(self._worker.scheduling_resolution), 0.001)
        sleep_for = cap if delay < 0 else min(delay, cap)
        self._wake.clear()
        if sleep_for > 0:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), sleep_for)

    async def after_heartbeat(self) -> None:
        """Put back any automatic Perpetual task that went missing (each heartbeat)."""
        worker = self._worker
        if worker.schedule_automatic_tasks and not self._state.stopping:
            await self.schedule_automatic()

    async def schedule_automatic(self) -> None:
        docket = self._worker.docket
        # Internal: traced only with internal instrumentation enabled, and counted only
        # when it scheduled something (not every time it finds the task in place).
        with self._state.internal("docket.schedule_automatic"):
            for name, function in list(docket.tasks.items()):
                perpetual = get_perpetual(function)
                if perpetual is None or not perpetual.automatic:
                    continue
                # What ``docket.add(function, when=..., key=name)()`` does, flagged.
                resolved, task_name = docket.engine.resolve(function)
                task = TaskCall(resolved, perpetual.initial_when, name, (), {}, task_name)
                await docket.engine.schedule("add", task, automatic=True)
