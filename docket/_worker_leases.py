"""Leases: this worker's runs keep their messages (renew), and messages whose worker
stopped answering are taken over (reclaim) or, after too many tries, dead-lettered."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from ._redis import scripts
from ._redis.keys import GROUP, Keys
from ._text import as_text
from ._worker_loops import Trouble, poll, seconds
from ._worker_reading import Entry
from ._worker_settling import by_lane
from .instrumentation import DEAD_LETTERED

if TYPE_CHECKING:
    from ._worker_claiming import Claims
    from ._worker_state import WorkerState
    from .worker import Worker

logger = logging.getLogger("docket.worker")


def _group_gone(error: BaseException) -> bool:
    # A stream lost with its group (Redis restarted): the read loop says so and
    # recreates it; until then there is nothing to reclaim.
    return isinstance(error, ResponseError) and "NOGROUP" in str(error)


class Leases:
    def __init__(self, worker: Worker, state: WorkerState, claims: Claims) -> None:
        self._worker = worker
        self._state = state
        self._claims = claims
        # Where each lane's (partition, level) next XAUTOCLAIM scan starts.
        self._reclaim_cursors: dict[tuple[int, int], str] = {}

    async def reclaim_loop(self) -> None:
        worker = self._worker
        interval = max(min(seconds(worker.redelivery_timeout) / 4, 5.0), 0.05)
        trouble = replace(self._state.trouble, ignored=_group_gone)
        await poll(self._reclaim, trouble, every=interval, until=lambda: self._state.stopping)

    async def _reclaim(self) -> None:
        for keys in self._worker.docket.partition_keys:
            for lane in keys.lanes():
                await self._reclaim_lane(lane)

    async def _reclaim_lane(self, keys: Keys) -> None:
        """Reclaim the lost runs of one lane: a partition's level's stream."""
        worker = self._worker
        free = worker.concurrency - len(self._state.active)
        if free <= 0 or self._state.stopping:
            return
        docket = worker.docket
        with self._state.internal("docket.reclaim"):
            reclaim = scripts.Reclaim(
                stream=keys.stream,
                dead_letters=keys.dead_letters,
                group=GROUP,
                worker=worker.name,
                min_idle_ms=int(seconds(worker.redelivery_timeout) * 1000),
                cursor=self._reclaim_cursors.get((keys.partition, keys.level), "0-0"),
                count=self._state.claim_budget(free),
                max_deliveries=worker.max_deliveries,
                record_prefix=keys.record_prefix,
                events_prefix=keys.events_prefix,
                ttl=docket.execution_ttl.total_seconds(),
            )
            cursor, claimed, deleted, dead = await docket.engine.scripts.send(reclaim)
        self._reclaim_cursors[keys.partition, keys.level] = as_text(cursor) or "0-0"
        if int(dead):
            DEAD_LETTERED.add(int(dead), self._state.metrics.base)
            logger.error("Dead-lettered %d message(s) that kept failing to finish", int(dead))
        for mid in deleted:
            logger.debug("Pending message %s was deleted before it finished", as_text(mid))
        entries: list[Entry] = []
        for item in claimed:
            mid, deliveries, *flat = item
            fields = {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}
            entries.append((as_text(mid) or "", fields, int(deliveries), True))
        if entries:
            logger.warning("Redelivering %d task(s) from unresponsive workers", len(entries))
            await self._claims.claim(entries, keys)

    async def renew_loop(self) -> None:
        worker = self._worker
        interval = max(seconds(worker.redelivery_timeout) / 4, 0.01)
        trouble = Trouble("Could not renew leases: %(error)s", worker.name)
        await poll(self._renew, trouble, every=interval)

    async def _renew(self) -> None:
        worker = self._worker
        active = self._state.active
        if not active:
            return
        docket = worker.docket
        running = [execution for execution, _ in list(active.values())]
        for lane, executions in by_lane(docket.partition_keys, running).items():
            renew = scripts.Renew(
                stream=lane.stream,
                group=GROUP,
                worker=worker.name,
                messages=[
                    scripts.RenewMessage(
                        mid=execution.message_id or "", deliveries=execution.deliveries
                    )
                    for execution in executions
                ],
            )
            with self._state.internal("docket.renew"):
                lost = await docket.engine.scripts.send(renew)
            if not lost:
                continue
            by_mid = {execution.message_id: execution for execution in executions}
            for mid in lost:
                taken = by_mid.get(as_text(mid))
                if taken is not None:
                    logger.warning(
                        "Lease on %s was taken over by another worker", taken.call_repr()
                    )
