"""Settling: runs' final states reach Redis in batches, one settle.lua call per batch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from . import failures
from ._redis import scripts
from ._redis.keys import GROUP, Keys
from ._worker_loops import Tasks
from .execution import Execution

if TYPE_CHECKING:
    from ._worker_state import WorkerState
    from .worker import Worker

logger = logging.getLogger("docket.worker")


@dataclass
class Settlement:
    execution: Execution
    state: str  # completed | failed | cancelled | ack
    error: str = ""
    result: bytes = b""
    traceback: str = ""
    """A failed run's formatted traceback (kept in its record and the failures stream)."""


def by_lane[T: (Settlement, Execution)](
    partitions: Sequence[Keys], items: Iterable[T]
) -> dict[Keys, list[T]]:
    """``items`` (Settlements or Executions) grouped by the lane of their run: its
    partition's keys with ``stream`` naming its level's stream."""
    grouped: dict[Keys, list[T]] = {}
    for item in items:
        execution = item if isinstance(item, Execution) else item.execution
        lane = partitions[execution.partition].lane(execution.priority)
        grouped.setdefault(lane, []).append(item)
    return grouped


# How many settle calls may be on their way at once. A batch is sent the moment the loop
# turn that ended its runs is over, not after the previous batch's reply: a run whose
# body has ended is a duplicate if the worker dies before its settle lands, so the time
# it waits is kept to one round trip.
SETTLES_IN_FLIGHT = 4


class Settler:
    """Collects settlements as runs end; its loop (``run``, one of the worker's
    ``background`` tasks) sends them, as many at a time as have piled up, without waiting
    for the batch before (up to ``SETTLES_IN_FLIGHT`` on their way)."""

    def __init__(self, worker: Worker, state: WorkerState, background: Tasks) -> None:
        self._worker = worker
        self._state = state
        self._background = background
        self._settlements: list[Settlement] = []
        self._settle_wanted = asyncio.Event()
        self._settle_idle = asyncio.Event()
        self._settle_idle.set()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    def settle(self, settlement: Settlement) -> None:
        self._settlements.append(settlement)
        self._settle_idle.clear()
        self._settle_wanted.set()

    @property
    def busy(self) -> bool:
        """Whether settlements are waiting or on their way to Redis."""
        return bool(self._settlements) or not self._settle_idle.is_set()

    async def flush(self) -> None:
        while self._settlements or not self._settle_idle.is_set():
            if not self._background:
                await self._settle_batch()
                continue
            await self._settle_idle.wait()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._settle_wanted.wait()
                self._settle_wanted.clear()
                if self._failure is not None:
                    raise self._failure
                while self._settlements and len(self._in_flight) < SETTLES_IN_FLIGHT:
                    batch, self._settlements = self._settlements, []
                    # Eager: the call is written to the connection now, in this turn.
                    sending = asyncio.eager_task_factory(loop, self._send(batch))
                    if not sending.done():
                        self._in_flight.add(sending)
                        sending.add_done_callback(self._sent)
                    else:
                        self._sent(sending)
                self._check_idle()
        finally:
            for sending in self._in_flight:
                sending.cancel()

    def _sent(self, sending: asyncio.Task[None]) -> None:
        self._in_flight.discard(sending)
        if not sending.cancelled() and sending.exception() is not None:
            self._failure = sending.exception()
        # Wakes the loop: for the batch that piled up meanwhile, or to raise the failure.
        self._settle_wanted.set()
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._settlements and not self._in_flight:
            self._settle_idle.set()

    async def _settle_batch(self) -> None:
        batch, self._settlements = self._settlements, []
        if not batch:
            self._settle_idle.set()
            return
        await self._send(batch)

    async def _send(self, batch: list[Settlement]) -> None:
        worker = self._worker
        docket = worker.docket
        if docket.engine.results.external:
            await self._store_results(batch)
        first = batch[0].execution
        lane = (first.partition, first.priority)
        if all((item.execution.partition, item.execution.priority) == lane for item in batch):
            # The common case: one partition, one level.
            groups = [(docket.partition_keys[lane[0]].lane(lane[1]), batch)]
        else:
            # Each lane's runs (a partition's level: its own stream) settle in a script
            # call of their own (on a Cluster, the partitions live on different shards);
            # the calls go in one pipeline.
            groups = list(by_lane(docket.partition_keys, batch).items())
        calls = [self._settle_call(items, keys) for keys, items in groups]
        while True:
            try:
                with self._state.internal("docket.settle"):
                    if len(calls) == 1:
                        replies = [await docket.engine.scripts.send(calls[0])]
                    else:
                        replies = await docket.engine.scripts.send_many(calls)
                        for reply in replies:
                            if isinstance(reply, BaseException):
                                raise reply
                break
            except (RedisError, OSError) as error:
                if self._state.stopping and not self._background:
                    raise
                await self._state.trouble.handle(error)
        for (_, items), outcomes in zip(groups, replies, strict=True):
            for item, outcome in zip(items, outcomes, strict=True):
                if int(outcome) == 0:
                    logger.warning(
                        "Lost the lease on %s before settling it; another worker owns it now",
                        item.execution.call_repr(),
                    )

    def _settle_call(self, batch: list[Settlement], keys: Keys) -> scripts.Settle:
        """The settle.lua call for runs of one lane (``keys``: a partition's level)."""
        worker = self._worker
        docket = worker.docket
        return scripts.Settle(
            stream=keys.stream,
            failures=keys.failures,
            group=GROUP,
            worker=worker.name,
            ttl=docket.execution_ttl.total_seconds(),
            events_prefix=keys.events_prefix,
            record_prefix=keys.record_prefix,
            failures_kept=failures.FAILURES_KEPT,
            runs=[
                scripts.SettleRun(
                    record=keys.record(item.execution.key),
                    result_key=keys.result(item.execution.key, item.execution.generation),
                    mid=item.execution.message_id or "",
                    generation=item.execution.generation,
                    deliveries=item.execution.deliveries,
                    state=item.state,
                    error=item.error,
                    result=item.result,
                    traceback=item.traceback,
                )
                for item in batch
            ],
        )

    async def _store_results(self, batch: list[Settlement]) -> None:
        """Put the batch's results in the docket's own result_storage before their final
        states are settled, so a run reads as finished only once its result is there. A
        failed put keeps the final state; the run's record says the result was lost."""
        results = self._worker.docket.engine.results
        pending = [item for item in batch if item.result]
        saved = await asyncio.gather(
            *(results.save(item.execution, item.result) for item in pending)
        )
        for item, (marker, problem) in zip(pending, saved, strict=True):
            item.result = marker
            if problem and item.state == "completed":
                item.error = problem
