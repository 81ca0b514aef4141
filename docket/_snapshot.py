"""What a docket holds right now, as ``Docket.snapshot()``, ``workers()`` and
``task_workers()`` report it: its scheduled, queued and running tasks and its live
workers, read from Redis without changing anything."""

from __future__ import annotations

import copy
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from ._redis.keys import GROUP, Keys
from ._text import as_text
from .execution import Execution, ExecutionState

if TYPE_CHECKING:
    from .docket import Docket

# Records fetched per pipelined round trip when a snapshot reads many at once.
SNAPSHOT_BATCH = 1000


@dataclass
class WorkerInfo:
    name: str
    last_seen: datetime
    tasks: set[str] = field(default_factory=set)


@dataclass
class DocketSnapshot:
    taken: datetime
    total_tasks: int
    future: list[Execution]
    running: list[Execution]
    workers: list[WorkerInfo]


class RunningExecution(Execution):
    """A task a worker is running, as ``snapshot().running`` lists it: an ``Execution``
    whose ``worker`` is set, with ``started`` (its ``started_at``) as released."""

    worker: str | None

    @classmethod
    def of(cls, execution: Execution) -> RunningExecution:
        running = copy.copy(execution)
        # A subclass that adds no state, so the copy's attributes are all it needs.
        running.__class__ = cls
        return running  # type: ignore[return-value]

    @property
    def started(self) -> datetime | None:
        return self.started_at


async def snapshot(docket: Docket) -> DocketSnapshot:
    taken = datetime.now(UTC)
    future: list[Execution] = []
    running: list[Execution] = []
    for keys in docket.partition_keys:
        await _partition(docket, keys, future, running)
    future.sort(key=lambda e: e.when)
    workers = await docket.workers()
    return DocketSnapshot(taken, len(future) + len(running), future, running, workers)


async def _partition(
    docket: Docket, keys: Keys, future: list[Execution], running: list[Execution]
) -> None:
    """Add one partition's scheduled, queued and running tasks to the lists."""
    client = docket.engine.connection.client
    scheduled = [as_text(member) or "" for member in await client.zrange(keys.queue, 0, -1)]
    for key, record in zip(scheduled, await _records(docket, scheduled), strict=True):
        if record:
            future.append(await Execution.from_record(docket, key, record))
    for stream in keys.streams:
        await _stream(docket, stream, future, running)


async def _stream(
    docket: Docket, stream: str, future: list[Execution], running: list[Execution]
) -> None:
    """Add one level's stream's queued and running tasks to the lists."""
    client = docket.engine.connection.client
    pending_ids: set[str] = set()
    with suppress(RedisError):
        for entry in await client.xpending_range(stream, GROUP, "-", "+", 10_000):
            pending_ids.add(as_text(entry["message_id"]) or "")
    entries = [
        (mid, fields, stream_key)
        for mid, fields in await client.xrange(stream, "-", "+")
        if (stream_key := as_text(fields.get(b"key"))) is not None
    ]
    records = await _records(docket, [entry_key for _, _, entry_key in entries])
    for (mid, fields, entry_key), record in zip(entries, records, strict=True):
        if not record or as_text(record.get(b"gen")) != as_text(fields.get(b"gen")):
            continue
        execution = await Execution.from_record(docket, entry_key, record, fields)
        if as_text(mid) in pending_ids and execution.state == ExecutionState.RUNNING:
            running.append(RunningExecution.of(execution))
        elif execution.state == ExecutionState.QUEUED:
            future.append(execution)


async def _records(docket: Docket, keys: list[str]) -> list[dict[bytes, bytes]]:
    """The records of ``keys``, in order, fetched in pipelined batches rather than one
    round trip each (a snapshot may cover many thousands)."""
    records: list[dict[bytes, bytes]] = []
    client = docket.engine.connection.client
    for start in range(0, len(keys), SNAPSHOT_BATCH):
        async with client.pipeline(transaction=False) as pipe:
            for key in keys[start : start + SNAPSHOT_BATCH]:
                pipe.hgetall(docket.keys_for(key).record(key))
            records.extend(await pipe.execute())
    return records


async def workers(docket: Docket) -> list[WorkerInfo]:
    client = docket.engine.connection.client
    seconds, micros = await client.time()
    now = seconds + micros / 1_000_000
    window = docket.heartbeat_interval.total_seconds() * docket.missed_heartbeats
    members = await client.zrangebyscore(docket.keys.workers, now - window, "+inf", withscores=True)
    names = [as_text(member) or "" for member, _ in members]
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.smembers(docket.keys.worker_tasks(name))
        task_sets = await pipe.execute() if names else []
    return [
        WorkerInfo(name, datetime.fromtimestamp(score, UTC), {as_text(t) or "" for t in tasks})
        for name, (_, score), tasks in zip(names, members, task_sets, strict=True)
    ]
