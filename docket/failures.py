"""The recent failures: runs that ended failed, kept with their tracebacks and messages.

When a run raises and is not retried (no ``Retry``, or its attempts are used up), the
worker records it failed, and, while the docket keeps records (``execution_ttl`` > 0),
adds it to the partition's failures stream (``{name}:failures``): the task key, function,
error, formatted traceback, attempt, worker and time, and every raw field of the run's
message (as the dead-letter stream keeps them), so that it can be run again. Each stream
keeps about ``FAILURES_KEPT`` entries, and none older than ``execution_ttl`` (the age of
the records they describe). Runs that never got to run (dead letters) are in
``docket.dead_letters`` instead::

    async with Docket("orders", url) as docket:
        for failure in await list_failures(docket, task="charge"):
            print(failure.id, failure.key, failure.error)
        await retry(docket, [failure.id])
        await purge_failures(docket, all_entries=True)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._kept_messages import (
    BATCH,
    RequeueResult,
    check_ids,
    count_entries,
    entries_by_id,
    entry_ref,
    moment,
    order,
    original_fields,
    purge_entries,
    requeue_entries,
    text,
    whole,
)
from ._text import as_text

if TYPE_CHECKING:
    from ._redis.keys import Keys
    from .docket import Docket

__all__ = [
    "FAILURES_KEPT",
    "Failure",
    "RequeueResult",
    "count_failures",
    "get_failure",
    "list_failures",
    "purge_failures",
    "retry",
]

FAILURES_KEPT = 1000
"""About how many failures each partition's failures stream keeps (Redis trims it
approximately, in whole stream nodes, so some more may be there)."""

_KIND = "failure id"


def _source(keys: Keys) -> str:
    return keys.failures


@dataclass(frozen=True)
class Failure:
    """One run that ended failed, as the failures stream keeps it."""

    id: str
    """Its id in the failures stream (what ``retry``, ``purge_failures`` and
    ``list_failures(before=...)`` take): a stream entry id, ``<id>@<p>`` in partition
    ``p`` > 0 of a partitioned docket."""
    key: str
    function: str
    error: str
    """``ExceptionType: message``, as the record's error."""
    traceback: str
    """The formatted traceback (its last 16,000 characters when longer)."""
    attempt: int
    """The attempt that failed (0 when its record had none)."""
    worker: str
    """The worker that ran it."""
    failed_at: datetime | None
    fields: dict[str, bytes] = field(default_factory=dict)
    """The run's message's raw fields, exactly as they were on the task stream."""

    @classmethod
    def from_entry(
        cls, entry_id: bytes | str, raw: dict[bytes, bytes], partition: int = 0
    ) -> Failure:
        return cls(
            id=entry_ref(partition, entry_id),
            key=text(raw.get(b"key")),
            function=text(raw.get(b"function")),
            error=text(raw.get(b"error")),
            traceback=text(raw.get(b"traceback")),
            attempt=whole(raw.get(b"attempt")),
            worker=text(raw.get(b"worker")),
            failed_at=moment(raw.get(b"failed_at")),
            fields=original_fields(raw),
        )


async def count_failures(docket: Docket) -> int:
    """How many failures the docket keeps (every partition's)."""
    return await count_entries(docket, _source)


async def list_failures(
    docket: Docket, *, count: int = 50, before: str | None = None, task: str | None = None
) -> list[Failure]:
    """Failures newest first, at most ``count``, only those older than the failure
    ``before`` (the last id of the page before: pass it to get the next page), only of the
    task function named ``task`` when given. A partitioned docket's partitions are merged
    in time order.

    With ``task``, the streams are read on past the entries of other tasks until a page is
    full, so a page may hold fewer than ``count`` only when it is the last; that reads up
    to every kept entry (about ``FAILURES_KEPT`` per partition) when ``task`` rarely fails.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if before is not None:
        check_ids([before], _KIND)
    failures: list[Failure] = []
    for keys in docket.partition_keys:
        failures += await _newest(docket, keys, count, _upper_bound(keys, before), task)
    if docket.partitions > 1:
        failures.sort(key=lambda failure: order(failure.id), reverse=True)
    return failures[:count]


def _upper_bound(keys: Keys, before: str | None) -> str:
    """The highest id of ``keys``' failures stream a page after ``before`` may start at."""
    if before is None:
        return "+"
    entry_id, _, partition = before.partition("@")
    # Partitions merge by (time, sequence, partition), so in a partition below before's
    # an entry with before's very id comes after it.
    return entry_id if keys.partition < int(partition or 0) else f"({entry_id}"


async def _newest(
    docket: Docket, keys: Keys, count: int, bound: str, task: str | None
) -> list[Failure]:
    chosen: list[Failure] = []
    size = count if task is None else max(count, BATCH)
    async with docket.redis() as redis:
        while len(chosen) < count:
            entries: list[Any] = await redis.xrevrange(keys.failures, bound, "-", count=size)
            chosen += [
                Failure.from_entry(entry_id, raw, keys.partition)
                for entry_id, raw in entries
                if task is None or text(raw.get(b"function")) == task
            ]
            if len(entries) < size:
                break
            bound = f"({as_text(entries[-1][0])}"
    return chosen[:count]


async def get_failure(docket: Docket, failure_id: str) -> Failure | None:
    """The failure ``failure_id``, or None when it is not kept (any more)."""
    [found] = await entries_by_id(docket, [failure_id], _source, Failure.from_entry, _KIND)
    return None if isinstance(found, str) else found


async def retry(docket: Docket, ids: Iterable[str]) -> list[RequeueResult]:
    """Run the failures ``ids`` again: each one's message goes back on the task stream
    as a fresh run of its key (a new generation, with the original arguments) and leaves
    the failures stream, exactly as a requeued dead letter does.

    The new run starts at attempt 1: an operator's retry is a fresh start, so a ``Retry``
    dependency gets all of its attempts again (the failure's own ``attempt`` says where
    the last one ended). A failure whose task key has a scheduled, queued or running task
    now is left where it is (``active``), and so is one whose message could never run
    (``invalid``); the results say which and why, one per id, in order.
    """
    found = await entries_by_id(docket, list(ids), _source, Failure.from_entry, _KIND)
    return await requeue_entries(docket, found, _source, attempt="1", what="failure")


async def purge_failures(
    docket: Docket, ids: Iterable[str] = (), *, all_entries: bool = False
) -> int:
    """Delete the failures ``ids`` (or every one, with ``all_entries``); returns how many
    were deleted. The tasks' records keep their errors and tracebacks."""
    return await purge_entries(
        docket, _source, ids, all_entries=all_entries, kind=_KIND, what="failures"
    )
