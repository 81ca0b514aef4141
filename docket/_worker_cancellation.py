"""Cancellation: ``docket.cancel`` reaching the runs of this worker over pub/sub."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._text import as_text
from ._worker_loops import Trouble, poll, seconds

if TYPE_CHECKING:
    from ._worker_state import WorkerState
    from .worker import Worker


class Cancellation:
    """Which keys were asked to stop, and which runs may be cancelled from outside."""

    def __init__(self, worker: Worker, state: WorkerState) -> None:
        self._worker = worker
        self._state = state
        self._active = state.active
        self.requested: set[str] = set()
        """Keys with a cancel aimed at their run here, for the run to see."""
        self.begun: set[str] = set()
        """Message ids of the runs that have taken their first step and not yet ended
        their body: only those are cancelled from outside."""

    def cancel_running(self, key: str) -> None:
        for mid, (execution, task) in list(self._active.items()):
            if execution.key == key:
                self.requested.add(key)
                # A run that has not taken its first step is not cancelled from outside:
                # it would vanish without settling its message. It sees the mark instead.
                if mid in self.begun:
                    task.cancel()

    def drop_mark(self, key: str) -> None:
        """Forget a cancel aimed at a run of ``key`` that is over (it came too late to
        stop it), unless another run of the key is still here to see it."""
        if all(execution.key != key for execution, _ in self._active.values()):
            self.requested.discard(key)

    async def _cancel_missed(self) -> None:
        """Cancel the runs here whose records say they were cancelled."""
        runs = [execution for execution, _ in list(self._active.values())]
        if not runs:
            return
        docket = self._worker.docket
        client = docket.engine.connection.client
        with self._state.internal("docket.listen"):
            async with client.pipeline(transaction=False) as pipe:
                for execution in runs:
                    pipe.hmget(docket.keys_for(execution.key).record(execution.key), "state", "gen")
                records = await pipe.execute()
        for execution, (state, generation) in zip(runs, records, strict=True):
            if as_text(state) == "cancelled" and as_text(generation) == str(execution.generation):
                self.cancel_running(execution.key)

    async def listen(self, wake: Callable[[], None]) -> None:
        """Pub/sub: ``wake`` the scheduler for earlier tasks, and cancel running ones."""
        worker = self._worker
        trouble = Trouble(
            "Worker %(worker)s lost its pub/sub connection: %(error)s",
            worker.name,
            delay=lambda: seconds(worker.reconnection_delay),
        )
        await poll(lambda: self._subscribed(wake), trouble)

    async def _subscribed(self, wake: Callable[[], None]) -> None:
        worker = self._worker
        keys = worker.docket.keys
        pubsub = worker.docket.engine.connection.pubsub()
        channels = (keys.wake_channel, keys.cancel_channel)
        with self._state.internal("docket.listen"):
            await pubsub.subscribe(*channels)
        try:
            while True:
                with self._state.internal("docket.listen"):
                    message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    # Confirmed on this connection (redis-py subscribes again by itself
                    # after a reconnect, so this comes after every one): subscribed from
                    # here on. A cancel published before, at start or while the connection
                    # was down, was heard by nobody, but the run's record says it.
                    if message["data"] == len(channels):
                        await self._cancel_missed()
                    continue
                channel = as_text(message["channel"])
                if channel == keys.wake_channel:
                    wake()
                elif channel == keys.cancel_channel:
                    self.cancel_running(as_text(message["data"]) or "")
        finally:
            await pubsub.aclose()
