"""Streams that keep task messages the way the dead-letter stream does (the dead letters,
the recent failures): each entry holds the original message's raw fields as
``field:<name>`` beside fields of its own, so that it can be put back on the task stream.

Their ids, their partitions, reading entries by id, requeueing and purging work the same
for both; ``dead_letters`` and ``failures`` each say what their own entries mean.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Protocol

from ._messages import PoisonMessage, parse_fields
from ._redis import scripts

if TYPE_CHECKING:
    from ._redis.keys import Keys
    from .docket import Docket

__all__ = [
    "BATCH",
    "Kept",
    "RequeueResult",
    "RequeueStatus",
    "Source",
    "check_ids",
    "count_entries",
    "entries_by_id",
    "entry_ref",
    "is_entry_id",
    "locate",
    "moment",
    "order",
    "original_fields",
    "problem_of",
    "purge_entries",
    "requeue_entries",
    "text",
    "whole",
]

_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}(@[0-9]{1,4})?")
BATCH = 100
_FIELD_PREFIX = b"field:"

Source = Callable[["Keys"], str]
"""Which stream of a partition's keys holds the entries (``lambda keys: keys.failures``)."""

RequeueStatus = Literal["requeued", "missing", "invalid", "active"]


def is_entry_id(text: str) -> bool:
    """Whether ``text`` is a complete dead-letter (or failure) id: a stream entry id
    (``<milliseconds>-<sequence>``), and in a partitioned docket's partition ``p`` > 0
    ``<milliseconds>-<sequence>@<p>`` (each partition has its own dead-letter and
    failures streams, whose ids may coincide)."""
    return _ENTRY_ID.fullmatch(text) is not None


def entry_ref(partition: int, entry_id: bytes | str) -> str:
    """The id an entry of ``partition``'s stream is known by."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    return f"{entry_id}@{partition}" if partition else entry_id


def locate(docket: Docket, ref: str) -> tuple[Keys, str]:
    """The partition keys and stream id of an entry's id."""
    entry_id, _, partition = ref.partition("@")
    index = int(partition or 0)
    if index >= docket.partitions:
        raise ValueError(
            f"{ref!r} names partition {index}, and docket {docket.name!r} has "
            f"{docket.partitions} partition(s)"
        )
    return docket.partition_keys[index], entry_id


def order(ref: str) -> tuple[int, int, int]:
    """Where an entry's id falls among the entries of every partition: by time, then
    sequence, then partition."""
    entry_id, _, partition = ref.partition("@")
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence), int(partition or 0)


def text(value: bytes | None) -> str:
    return "" if value is None else value.decode(errors="replace")


def original_fields(raw: dict[bytes, bytes]) -> dict[str, bytes]:
    """The original message's raw fields, out of an entry's ``field:<name>`` ones."""
    return {
        text(name[len(_FIELD_PREFIX) :]): value
        for name, value in raw.items()
        if name.startswith(_FIELD_PREFIX)
    }


def whole(value: bytes | None) -> int:
    """A count a script wrote, 0 when it is not one."""
    try:
        return int(value or b"0")
    except ValueError:
        return 0


def moment(value: bytes | None) -> datetime | None:
    """A time a script wrote (epoch seconds as text), None when it is not one."""
    try:
        return datetime.fromtimestamp(float(value or b""), UTC)
    except (ValueError, OverflowError, OSError):
        return None


def problem_of(fields: dict[str, bytes]) -> str | None:
    """Why a message with these raw fields could never run as it is (missing or malformed
    fields), or None when it looks like a task message."""
    try:
        parse_fields({name.encode(): value for name, value in fields.items()})
    except PoisonMessage as error:
        return str(error)
    return None


class Kept(Protocol):
    """What requeueing needs of an entry (a ``DeadLetter``, a ``Failure``)."""

    @property
    def id(self) -> str: ...
    @property
    def key(self) -> str | None: ...
    @property
    def function(self) -> str | None: ...
    @property
    def fields(self) -> dict[str, bytes]: ...


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


async def count_entries(docket: Docket, source: Source) -> int:
    async with docket.redis() as redis:
        if docket.partitions == 1:
            return int(await redis.xlen(source(docket.keys)))
        async with redis.pipeline(transaction=False) as pipe:
            for keys in docket.partition_keys:
                pipe.xlen(source(keys))
            return sum(int(length) for length in await pipe.execute())


def check_ids(ids: Iterable[str], kind: str) -> None:
    """Refuse an id that is not an entry's; ``kind`` names what it should be (``dead-letter
    id``)."""
    for ref in ids:
        if not is_entry_id(ref):
            raise ValueError(f"{ref!r} is not a {kind} (like 1712345678901-0)")


async def entries_by_id[K: Kept](
    docket: Docket,
    ids: Iterable[str],
    source: Source,
    read: Callable[[bytes | str, dict[bytes, bytes], int], K],
    kind: str,
) -> list[K | str]:
    """Each id's entry (``read`` makes it of the stream entry), or the id itself when there
    is no such entry."""
    found: list[K | str] = []
    async with docket.redis() as redis:
        for ref in ids:
            check_ids([ref], kind)
            keys, entry_id = locate(docket, ref)
            entries = await redis.xrange(source(keys), entry_id, entry_id)
            found.append(read(entries[0][0], entries[0][1], keys.partition) if entries else ref)
    return found


async def requeue_entries(
    docket: Docket, found: Sequence[Kept | str], source: Source, *, attempt: str, what: str
) -> list[RequeueResult]:
    """Put the entries ``found`` (an id instead of an entry: there is none) back on the
    task stream as fresh messages, and remove them from ``source``. ``attempt`` is the
    attempt the new runs start at, '' for the one each message had; ``what`` names an
    entry (``dead letter``) in the results."""
    # In order: a result already known, or the entry the script decides on.
    pending: list[RequeueResult | Kept] = []
    runnable: list[Kept] = []
    for entry in found:
        if isinstance(entry, str):
            pending.append(RequeueResult(entry, "missing", f"no such {what}"))
            continue
        problem = problem_of(entry.fields)
        if problem is not None:
            pending.append(RequeueResult(entry.id, "invalid", problem, entry.function, entry.key))
            continue
        runnable.append(entry)
        pending.append(entry)
    decided: dict[int, RequeueResult] = {}
    by_partition: dict[int, list[Kept]] = {}
    for entry in runnable:
        by_partition.setdefault(locate(docket, entry.id)[0].partition, []).append(entry)
    for partition, here in by_partition.items():
        keys = docket.partition_keys[partition]
        for start in range(0, len(here), BATCH):
            batch = here[start : start + BATCH]
            replies = await docket.engine.scripts.send(
                _requeue_call(docket, keys, source, batch, attempt)
            )
            for entry, (status, detail) in zip(batch, replies, strict=True):
                decided[id(entry)] = _result(entry, text(status), text(detail), what)
    if any(result.status == "requeued" for result in decided.values()):
        docket.engine.connection.notify_activity()
    return [item if isinstance(item, RequeueResult) else decided[id(item)] for item in pending]


def _requeue_call(
    docket: Docket, keys: Keys, source: Source, batch: list[Kept], attempt: str
) -> scripts.Requeue:
    high, stream, low = keys.streams
    return scripts.Requeue(
        stream=stream,
        origin=source(keys),
        generation_counter=keys.generation,
        high_stream=high,
        low_stream=low,
        record_prefix=keys.record_prefix,
        events_prefix=keys.events_prefix,
        attempt=attempt,
        entries=[
            scripts.RequeueEntry(
                record=keys.record(entry.key or ""), id=locate(docket, entry.id)[1]
            )
            for entry in batch
        ],
    )


def _result(entry: Kept, status: str, detail: str, what: str) -> RequeueResult:
    if status == "missing":
        detail = f"no such {what}"
    elif status == "active":
        detail = f"task key {entry.key!r} has a {detail} task now"
    return RequeueResult(
        entry.id,
        status,  # type: ignore[arg-type]
        detail,
        entry.function,
        entry.key,
    )


async def purge_entries(
    docket: Docket, source: Source, ids: Iterable[str], *, all_entries: bool, kind: str, what: str
) -> int:
    """Delete the entries ``ids`` of ``source`` (or every one, with ``all_entries``);
    returns how many were deleted. ``kind`` names their ids (``dead-letter id``), ``what``
    the entries (``dead letters``)."""
    ids = list(ids)
    if all_entries == bool(ids):
        raise ValueError(f"Pass the ids of the {what} to purge, or all_entries=True")
    check_ids(ids, kind)
    purged = 0
    async with docket.redis() as redis:
        if all_entries:
            for keys in docket.partition_keys:
                purged += int(await redis.xtrim(source(keys), maxlen=0, approximate=False))
            return purged
        by_partition: dict[int, list[str]] = {}
        for ref in ids:
            keys, entry_id = locate(docket, ref)
            by_partition.setdefault(keys.partition, []).append(entry_id)
        for partition, entry_ids in by_partition.items():
            purged += int(await redis.xdel(source(docket.partition_keys[partition]), *entry_ids))
        return purged
