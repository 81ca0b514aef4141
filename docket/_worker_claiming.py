"""Claiming: what a read or a reclaim delivered becomes runs, or, when it can never
run, dead letters."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._messages import PoisonMessage, parse_fields
from ._redis.keys import GROUP
from ._worker_reading import Claimed, Entry
from .execution import Execution, ExecutionState, from_entry
from .instrumentation import DEAD_LETTERED, TASKS_SUPERSEDED

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger("docket.worker")


class Claims:
    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._docket = worker.docket
        self._name = worker.name
        self._internal = worker._internal

    async def start(self, claimed: list[Claimed], unclaimed: list[Entry]) -> None:
        """Start what a read claimed; claim the rest (``claim``)."""
        poison: list[Any] = []
        for mid, fields, started_at in claimed:
            try:
                execution = self._decode(mid, fields, 1, False)
            except Exception as error:
                poison += [mid, self._poison_reason(mid, 1, error), 1]
                continue
            self._start_claimed(execution, started_at)
        if poison:
            await self._dead_letter(poison)
        if unclaimed:
            await self.claim(unclaimed)

    async def claim(self, entries: list[Entry]) -> None:
        """Claim ``entries`` with claim.lua and start those it made RUNNING."""
        docket = self._docket
        keys = docket.keys
        runnable: list[Execution] = []
        poison: list[Any] = []
        for mid, fields, deliveries, redelivered in entries:
            try:
                runnable.append(self._decode(mid, fields, deliveries, redelivered))
            except Exception as error:
                poison += [mid, self._poison_reason(mid, deliveries, error), deliveries]
        if poison:
            await self._dead_letter(poison)
        if not runnable:
            return
        claim_args: list[Any] = [GROUP, self._name, keys.events_prefix, keys.record_prefix]
        for execution in runnable:
            claim_args += [
                execution.message_id,
                execution.generation,
                int(execution.redelivered),
                execution.deliveries,
            ]
        # Scoped to the script alone: the runs started below must not inherit it.
        with self._internal("docket.claim"):
            started = await docket._scripts.run(
                "claim", [keys.stream, *(keys.record(e.key) for e in runnable)], claim_args
            )
        for execution, started_at in zip(runnable, started, strict=True):
            if isinstance(started_at, int):
                if started_at < 0:
                    logger.warning(
                        "Lost %s to another worker before starting it", execution.call_repr()
                    )
                else:
                    # A stale copy (replaced, cancelled or superseded) was acked away.
                    metrics = self._worker._metrics
                    TASKS_SUPERSEDED.add(1, metrics.task_labels(execution.function_name))
                continue
            self._start_claimed(execution, started_at)

    def _start_claimed(self, execution: Execution, started_at: str | bytes) -> None:
        """Start a run claim.lua or claim_delivered.lua made RUNNING at ``started_at``."""
        execution.state = ExecutionState.RUNNING
        execution.worker = self._name
        execution.started_at = datetime.fromtimestamp(float(started_at), UTC)
        self._worker._start(execution)

    def _decode(
        self, mid: str, fields: dict[bytes, bytes], deliveries: int, redelivered: bool
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
            self._docket, fields, function, message_id=mid, redelivered=redelivered
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

    async def _dead_letter(self, poison: list[Any]) -> None:
        """Move entries that can never run to the dead-letter stream: ``poison`` holds
        id, reason and delivery count for each."""
        docket = self._docket
        keys = docket.keys
        with self._internal("docket.dead_letter"):
            await docket._scripts.dead_letter(
                keys=[keys.stream, keys.dead_letters],
                args=[
                    GROUP,
                    self._worker.name,
                    keys.record_prefix,
                    keys.events_prefix,
                    docket.execution_ttl.total_seconds(),
                    *poison,
                ],
            )
        DEAD_LETTERED.add(len(poison) // 3, self._worker._metrics.base)
