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

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from ._messages import PoisonMessage, parse_fields
from ._redis import scripts
from ._text import as_text

if TYPE_CHECKING:
    from ._redis.keys import Keys
    from .docket import Docket

__all__ = [
    "DeadLetter",
    "RequeueResult",
    "count_dead_letters",
    "is_entry_id",
    "list_dead_letters",
    "purge",
    "requeue",
]

_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}(@[0-9]{1,4})?")
_BATCH = 100
_FIELD_PREFIX = b"field:"

RequeueStatus = Literal["requeued", "missing", "invalid", "active"]


def is_entry_id(text: str) -> bool:
    """Whether ``text`` is a complete dead-letter id: a stream entry id
    (``<milliseconds>-<sequence>``), and in a partitioned docket's partition ``p`` > 0
    ``<milliseconds>-<sequence>@<p>`` (each partition has its own dead-letter stream,
    whose ids may coincide)."""
    return _ENTRY_ID.fullmatch(text) is not None


def _letter_id(partition: int, entry_id: str) -> str:
    return f"{entry_id}@{partition}" if partition else entry_id


def _locate(docket: Docket, letter_id: str) -> tuple[Keys, str]:
    """The partition keys and stream id of a dead letter's id."""
    entry_id, _, partition = letter_id.partition("@")
    index = int(partition or 0)
    if index >= docket.partitions:
        raise ValueError(
            f"{letter_id!r} names partition {index}, and docket {docket.name!r} has "
            f"{docket.partitions} partition(s)"
        )
    return docket.partition_keys[index], entry_id


def _order(letter: DeadLetter) -> tuple[int, int, int]:
    entry_id, _, partition = letter.id.partition("@")
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence), int(partition or 0)


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode(errors="replace")


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
        return None if raw is None else _text(raw)

    @property
    def function(self) -> str | None:
        raw = self.fields.get("function")
        return None if raw is None else _text(raw)

    @classmethod
    def from_entry(
        cls, entry_id: bytes | str, raw: dict[bytes, bytes], partition: int = 0
    ) -> DeadLetter:
        original: dict[str, bytes] = {}
        for name, value in raw.items():
            if name.startswith(_FIELD_PREFIX):
                original[_text(name[len(_FIELD_PREFIX) :])] = value
        try:
            deliveries = int(raw.get(b"deliveries", b"0"))
        except ValueError:
            deliveries = 0
        try:
            when: datetime | None = datetime.fromtimestamp(
                float(raw.get(b"dead_lettered_at", b"")), UTC
            )
        except (ValueError, OverflowError, OSError):
            when = None
        return cls(
            id=_letter_id(
                partition, entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            ),
            reason=_text(raw.get(b"reason")),
            deliveries=deliveries,
            stream_id=_text(raw.get(b"stream_id")),
            worker=_text(raw.get(b"worker")),
            dead_lettered_at=when,
            fields=original,
        )

    def problem(self) -> str | None:
        """Why this message could never run as it is (missing or malformed fields),
        or None when it looks like a task message."""
        try:
            parse_fields({name.encode(): value for name, value in self.fields.items()})
        except PoisonMessage as error:
            return str(error)
        return None


@dataclass(frozen=True)
class RequeueResult:
    id: str
    status: RequeueStatus
    """``requeued``; ``missing`` (no such entry); ``invalid`` (the message could never
    run: missing or malformed fields); ``active`` (its task key has a scheduled, queued
    or running task now, which a stale copy must not disturb)."""
    detail: str = ""
    """The new stream id when requeued, otherwise why not."""
    function: str | None = None
    key: str | None = None


async def count_dead_letters(docket: Docket) -> int:
    async with docket.redis() as redis:
        if docket.partitions == 1:
            return int(await redis.xlen(docket.keys.dead_letters))
        async with redis.pipeline(transaction=False) as pipe:
            for keys in docket.partition_keys:
                pipe.xlen(keys.dead_letters)
            return sum(int(length) for length in await pipe.execute())


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
        letters.sort(key=_order)
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
                entries = await redis.xrange(keys.dead_letters, cursor, last, count=_BATCH)
                letters += [
                    DeadLetter.from_entry(entry_id, raw, keys.partition)
                    for entry_id, raw in entries
                ]
                if len(entries) < _BATCH:
                    break
                cursor = f"({as_text(entries[-1][0])}"
    return letters


async def _letters_by_id(docket: Docket, ids: Iterable[str]) -> list[DeadLetter | str]:
    """Each id's entry, or the id itself when there is no such entry."""
    found: list[DeadLetter | str] = []
    async with docket.redis() as redis:
        for letter_id in ids:
            if not is_entry_id(letter_id):
                raise ValueError(f"{letter_id!r} is not a dead-letter id (like 1712345678901-0)")
            keys, entry_id = _locate(docket, letter_id)
            entries = await redis.xrange(keys.dead_letters, entry_id, entry_id)
            found.append(
                DeadLetter.from_entry(entries[0][0], entries[0][1], keys.partition)
                if entries
                else letter_id
            )
    return found


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
        list(await _every_letter(docket)) if all_entries else await _letters_by_id(docket, ids)
    )
    # In order: a result already known, or the letter the script decides on.
    pending: list[RequeueResult | DeadLetter] = []
    runnable: list[DeadLetter] = []
    for letter in letters:
        if isinstance(letter, str):
            pending.append(RequeueResult(letter, "missing", "no such dead letter"))
            continue
        problem = letter.problem()
        if problem is not None:
            pending.append(
                RequeueResult(letter.id, "invalid", problem, letter.function, letter.key)
            )
            continue
        runnable.append(letter)
        pending.append(letter)
    decided: dict[int, RequeueResult] = {}
    by_partition: dict[int, list[DeadLetter]] = {}
    for letter in runnable:
        by_partition.setdefault(_locate(docket, letter.id)[0].partition, []).append(letter)
    for partition, letters_here in by_partition.items():
        await _requeue_partition(docket, docket.partition_keys[partition], letters_here, decided)
    if any(result.status == "requeued" for result in decided.values()):
        docket.engine.connection.notify_activity()
    return [item if isinstance(item, RequeueResult) else decided[id(item)] for item in pending]


async def _requeue_partition(
    docket: Docket, keys: Keys, runnable: list[DeadLetter], decided: dict[int, RequeueResult]
) -> None:
    for start in range(0, len(runnable), _BATCH):
        batch = runnable[start : start + _BATCH]
        high, stream, low = keys.streams
        replies = await docket.engine.scripts.send(
            scripts.DeadLetterRequeue(
                stream=stream,
                dead_letters=keys.dead_letters,
                generation_counter=keys.generation,
                high_stream=high,
                low_stream=low,
                record_prefix=keys.record_prefix,
                events_prefix=keys.events_prefix,
                entries=[
                    scripts.RequeueEntry(
                        record=keys.record(letter.key or ""), id=_locate(docket, letter.id)[1]
                    )
                    for letter in batch
                ],
            )
        )
        for letter, (status, detail) in zip(batch, replies, strict=True):
            status_text = _text(status)
            detail_text = _text(detail)
            if status_text == "missing":
                detail_text = "no such dead letter"
            elif status_text == "active":
                detail_text = f"task key {letter.key!r} has a {detail_text} task now"
            decided[id(letter)] = RequeueResult(
                letter.id,
                status_text,  # type: ignore[arg-type]
                detail_text,
                letter.function,
                letter.key,
            )


async def purge(docket: Docket, ids: Iterable[str] = (), *, all_entries: bool = False) -> int:
    """Delete the dead letters ``ids`` (or every one, with ``all_entries``); returns how
    many were deleted."""
    ids = list(ids)
    if all_entries == bool(ids):
        raise ValueError("Pass the ids of the dead letters to purge, or all_entries=True")
    for entry_id in ids:
        if not is_entry_id(entry_id):
            raise ValueError(f"{entry_id!r} is not a dead-letter id (like 1712345678901-0)")
    purged = 0
    async with docket.redis() as redis:
        if all_entries:
            for keys in docket.partition_keys:
                purged += int(await redis.xtrim(keys.dead_letters, maxlen=0, approximate=False))
            return purged
        by_partition: dict[int, list[str]] = {}
        for letter_id in ids:
            keys, entry_id = _locate(docket, letter_id)
            by_partition.setdefault(keys.partition, []).append(entry_id)
        for partition, entry_ids in by_partition.items():
            dead_letters = docket.partition_keys[partition].dead_letters
            purged += int(await redis.xdel(dead_letters, *entry_ids))
        return purged
