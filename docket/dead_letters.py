"""The dead-letter stream: list, requeue and purge messages that workers could not run.

A worker moves a message it cannot run (undecodable, unknown task, bad signature, or
delivered ``max_deliveries`` times without finishing) to the docket's dead-letter stream
with the reason, its delivery count and all of its raw fields. From here an operator can
look at them, put them back on the task stream once the cause is fixed (the task is
deployed, the signing key is set), or throw them away::

    async with Docket("orders", url) as docket:
        for letter in await list_dead_letters(docket):
            print(letter.id, letter.function, letter.reason)
        await requeue(docket, [letter.id])
        await purge(docket, all_entries=True)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ._kept_messages import (
    BATCH,
    RequeueResult,
    RequeueStatus,
    count_entries,
    entries_by_id,
    entry_ref,
    is_entry_id,
    moment,
    order,
    original_fields,
    problem_of,
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
    "DeadLetter",
    "RequeueResult",
    "RequeueStatus",
    "count_dead_letters",
    "is_entry_id",
    "list_dead_letters",
    "purge",
    "requeue",
]

_KIND = "dead-letter id"


def _source(keys: Keys) -> str:
    return keys.dead_letters


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter stream."""

    id: str
    """Its id in the dead-letter stream (what ``requeue`` and ``purge`` take)."""
    reason: str
    deliveries: int
    stream_id: str
    """The id the message had on the task stream."""
    worker: str
    """The worker that dead-lettered it."""
    dead_lettered_at: datetime | None
    fields: dict[str, bytes] = field(default_factory=dict)
    """The original message's raw fields, exactly as they were on the task stream."""

    @property
    def key(self) -> str | None:
        raw = self.fields.get("key")
        return None if raw is None else text(raw)

    @property
    def function(self) -> str | None:
        raw = self.fields.get("function")
        return None if raw is None else text(raw)

    @classmethod
    def from_entry(
        cls, entry_id: bytes | str, raw: dict[bytes, bytes], partition: int = 0
    ) -> DeadLetter:
        return cls(
            id=entry_ref(partition, entry_id),
            reason=text(raw.get(b"reason")),
            deliveries=whole(raw.get(b"deliveries")),
            stream_id=text(raw.get(b"stream_id")),
            worker=text(raw.get(b"worker")),
            dead_lettered_at=moment(raw.get(b"dead_lettered_at")),
            fields=original_fields(raw),
        )

    def problem(self) -> str | None:
        """Why this message could never run as it is (missing or malformed fields),
        or None when it looks like a task message."""
        return problem_of(self.fields)


async def count_dead_letters(docket: Docket) -> int:
    return await count_entries(docket, _source)


async def list_dead_letters(
    docket: Docket, *, count: int | None = None, start: str = "-", end: str = "+"
) -> list[DeadLetter]:
    """Dead letters oldest first, at most ``count``, with ids from ``start`` to ``end``
    (inclusive; prefix an id with ``(`` to exclude it, as in ``XRANGE``). A partitioned
    docket's partitions are merged in time order, the bounds applying to each."""
    if count is not None and count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    start, end = start.partition("@")[0], end.partition("@")[0]
    letters: list[DeadLetter] = []
    async with docket.redis() as redis:
        for keys in docket.partition_keys:
            entries = await redis.xrange(keys.dead_letters, start, end, count=count)
            letters += [
                DeadLetter.from_entry(entry_id, raw, keys.partition) for entry_id, raw in entries
            ]
    if docket.partitions > 1:
        letters.sort(key=lambda letter: order(letter.id))
    return letters if count is None else letters[:count]


async def _every_letter(docket: Docket) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    async with docket.redis() as redis:
        for keys in docket.partition_keys:
            # Bounded by the newest entry when we start: a requeued message that a worker
            # dead-letters again lands after it and is not picked up a second time.
            newest = await redis.xrevrange(keys.dead_letters, "+", "-", count=1)
            if not newest:
                continue
            last: bytes | str = newest[0][0]
            cursor = "-"
            while True:
                entries = await redis.xrange(keys.dead_letters, cursor, last, count=BATCH)
                letters += [
                    DeadLetter.from_entry(entry_id, raw, keys.partition)
                    for entry_id, raw in entries
                ]
                if len(entries) < BATCH:
                    break
                cursor = f"({as_text(entries[-1][0])}"
    return letters


async def requeue(
    docket: Docket, ids: Iterable[str] = (), *, all_entries: bool = False
) -> list[RequeueResult]:
    """Put the dead letters ``ids`` (or every one, with ``all_entries``) back on the task
    stream as fresh messages, and remove them from the dead-letter stream.

    Messages that could never run (no task key, malformed fields) and messages whose
    task key has another task scheduled, queued or running stay where they are; the
    results say which and why, one per entry, in order.
    """
    ids = list(ids)
    if all_entries == bool(ids):
        raise ValueError("Pass the ids of the dead letters to requeue, or all_entries=True")
    letters: list[DeadLetter | str] = (
        list(await _every_letter(docket))
        if all_entries
        else await entries_by_id(docket, ids, _source, DeadLetter.from_entry, _KIND)
    )
    return await requeue_entries(docket, letters, _source, attempt="", what="dead letter")


async def purge(docket: Docket, ids: Iterable[str] = (), *, all_entries: bool = False) -> int:
    """Delete the dead letters ``ids`` (or every one, with ``all_entries``); returns how
    many were deleted."""
    return await purge_entries(
        docket, _source, ids, all_entries=all_entries, kind=_KIND, what="dead letters"
    )
