"""Claiming: what a read or a reclaim delivered becomes runs, or, when it can never
run, dead letters."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ._messages import PoisonMessage, parse_fields
from ._redis import scripts
from ._redis.keys import GROUP, Keys
from ._worker_reading import Claimed, Entry
from .execution import Execution, ExecutionState, from_entry
from .instrumentation import DEAD_LETTERED, STALE_DROPPED, TASKS_SUPERSEDED

if TYPE_CHECKING:
    from ._worker_state import WorkerState
    from .worker import Worker

logger = logging.getLogger("docket.worker")

# What claim.lua's codes for a stale copy mean, as the log line and the metric say them.
_STALE_REASONS = {
    0: "no task record (it expired, or was never written)",
    1: "superseded by a newer schedule of the key",
    2: "its run is no longer waiting to start (cancelled, finished or running elsewhere)",
}


class Claims:
    def __init__(self, worker: Worker, state: WorkerState) -> None:
        self._worker = worker
        self._state = state
        self._docket = worker.docket
        self._name = worker.name
        self._internal = state.internal

    async def start(self, claimed: list[Claimed], unclaimed: list[Entry], keys: Keys) -> None:
        """Start what a read of ``keys``' lane (a partition's level) claimed; claim the
        rest (``claim``)."""
        poison: list[scripts.DeadMessage] = []
        for mid, fields, started_at in claimed:
            try:
                execution = self._decode(mid, fields, 1, False, keys)
            except Exception as error:
                reason = self._poison_reason(mid, 1, error)
                poison.append(scripts.DeadMessage(mid=mid, reason=reason, deliveries=1))
                continue
            self._start_claimed(execution, started_at)
        if poison:
            await self._dead_letter(poison, keys)
        if unclaimed:
            await self.claim(unclaimed, keys)

    async def claim(self, entries: list[Entry], keys: Keys) -> None:
        """Claim ``entries`` of ``keys``' lane (a partition's level) with claim.lua and
        start those it made RUNNING."""
        docket = self._docket
        runnable: list[Execution] = []
        poison: list[scripts.DeadMessage] = []
        for mid, fields, deliveries, redelivered in entries:
            try:
                runnable.append(self._decode(mid, fields, deliveries, redelivered, keys))
            except Exception as error:
                reason = self._poison_reason(mid, deliveries, error)
                poison.append(scripts.DeadMessage(mid=mid, reason=reason, deliveries=deliveries))
        if poison:
            await self._dead_letter(poison, keys)
        if not runnable:
            return
        claim = scripts.Claim(
            stream=keys.stream,
            group=GROUP,
            worker=self._name,
            events_prefix=keys.events_prefix,
            record_prefix=keys.record_prefix,
            messages=[
                scripts.ClaimMessage(
                    record=keys.record(execution.key),
                    mid=execution.message_id or "",
                    generation=execution.generation,
                    redelivered=int(execution.redelivered),
                    deliveries=execution.deliveries,
                )
                for execution in runnable
            ],
        )
        # Scoped to the script alone: the runs started below must not inherit it.
        with self._internal("docket.claim"):
            started = await docket.engine.scripts.send(claim)
        for execution, started_at in zip(runnable, started, strict=True):
            if isinstance(started_at, int):
                if started_at < 0:
                    logger.warning(
                        "Lost %s to another worker before starting it", execution.call_repr()
                    )
                else:
                    self._dropped(execution, _STALE_REASONS.get(started_at, "stale"))
                continue
            self._start_claimed(execution, started_at)

    def _dropped(self, execution: Execution, reason: str) -> None:
        """A stale copy claim.lua acked away: said and counted, so an operator can tell
        a superseded copy from a task whose record is gone."""
        logger.info(
            "Dropped a stale copy of %s (key %r, generation %d): %s",
            execution.function_name,
            execution.key,
            execution.generation,
            reason,
        )
        labels = self._state.metrics.task_labels(execution.function_name)
        TASKS_SUPERSEDED.add(1, labels)
        STALE_DROPPED.add(1, {**labels, "docket.reason": reason})

    def _start_claimed(self, execution: Execution, started_at: str | bytes) -> None:
        """Start a run claim.lua or take.lua made RUNNING at ``started_at``."""
        execution.state = ExecutionState.RUNNING
        execution.worker = self._name
        execution.started_at = datetime.fromtimestamp(float(started_at), UTC)
        self._state.start(execution)

    def _decode(
        self,
        mid: str,
        fields: dict[bytes, bytes],
        deliveries: int,
        redelivered: bool,
        lane: Keys,
    ) -> Execution:
        raw_name = fields.get(b"function") or b""
        function = self._docket.tasks.get(raw_name.decode(errors="replace"))
        if function is None:
            fallback = self._worker.fallback_task
            if fallback is None:
                # Malformed entries are reported as such, not as an unknown task.
                message = parse_fields(fields)
                raise PoisonMessage(f"unknown task {message.function_name[:200]!r}")
            function = fallback
        execution = from_entry(
            self._docket,
            fields,
            function,
            message_id=mid,
            redelivered=redelivered,
            partition=lane.partition,
            # The stream it was read from says its level, whatever its 'prio' field says:
            # everything that settles it must reach that stream.
            priority=lane.level,
        )
        execution.deliveries = deliveries
        return execution

    @staticmethod
    def _poison_reason(mid: str, deliveries: int, error: Exception) -> str:
        # Whatever goes wrong decoding one entry is that entry's problem alone.
        reason = (
            str(error)
            if isinstance(error, PoisonMessage)
            else f"cannot decode ({type(error).__name__}: {error})"
        )
        logger.error("Dead-lettering message %s (delivery %d): %s", mid, deliveries, reason)
        return reason

    async def _dead_letter(self, poison: list[scripts.DeadMessage], keys: Keys) -> None:
        """Move entries that can never run to their partition's dead-letter stream."""
        docket = self._docket
        with self._internal("docket.dead_letter"):
            await docket.engine.scripts.send(
                scripts.DeadLetter(
                    stream=keys.stream,
                    dead_letters=keys.dead_letters,
                    group=GROUP,
                    worker=self._worker.name,
                    record_prefix=keys.record_prefix,
                    events_prefix=keys.events_prefix,
                    ttl=docket.execution_ttl.total_seconds(),
                    messages=poison,
                )
            )
        DEAD_LETTERED.add(len(poison), self._state.metrics.base)
