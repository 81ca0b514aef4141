"""Read what a docket holds page by page, for dashboards and admin tools.

``Docket.snapshot()`` reads everything at once, which is right for a CLI and wrong for a
page that must stay quick with 100,000 tasks queued. These readers fetch one page at a
time, at a cost that depends on the page size and not on how much is queued::

    async with Docket("orders", url) as docket:
        counts = await count_states(docket)
        page = await list_queued(docket, count=50)
        while page.next is not None:
            page = await list_queued(docket, count=50, after=page.next)

A page's ``next`` is an opaque token for the one after it. Lists are live: a task that
starts or becomes due between two pages moves from one list to another, as in any task
queue's browser. A partitioned docket's partitions (and a stream's priority levels) are
merged, so the pages read as one list.

Filtering by ``task`` reads entries until a page is full or ``budget`` entries were
looked at; a page cut short by the budget says so (``Page.budget_spent``), and its
``next`` goes on from where it stopped.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._redis.keys import GROUP
from ._text import as_text
from .execution import Execution, ExecutionState

if TYPE_CHECKING:
    from .docket import Docket

__all__ = [
    "DEFAULT_BUDGET",
    "Page",
    "StateCounts",
    "count_states",
    "list_queued",
    "list_running",
    "list_scheduled",
]

DEFAULT_BUDGET = 5000
"""Entries a filtered page looks at, at most, before it returns what it found."""

_MAX_COUNT = 500


@dataclass(frozen=True)
class StateCounts:
    """How many tasks a docket holds in each live state, and its dead letters."""

    scheduled: int
    queued: int
    running: int
    dead_letters: int

    @property
    def total(self) -> int:
        return self.scheduled + self.queued + self.running


@dataclass
class Page:
    """One page of a list: its executions, and the token of the next page."""

    executions: list[Execution]
    next: str | None
    """Pass as ``after`` for the next page; None when this page reached the end."""
    scanned: int = 0
    """Entries looked at to fill this page (more than its size when filtered)."""
    budget_spent: bool = False
    """The page stopped at the scan budget before it was full: there may be more."""
    tasks: set[str] = field(default_factory=set)
    """The task names seen while scanning (for a filter's choices)."""


async def count_states(docket: Docket) -> StateCounts:
    """The scheduled, queued and running counts and the dead letters, in one round trip
    per partition. Queued counts what waits in the streams, running what workers hold."""
    scheduled = queued = running = dead = 0
    async with docket.redis() as redis:
        for keys in docket.partition_keys:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zcard(keys.queue)
                pipe.xlen(keys.dead_letters)
                for stream in keys.streams:
                    pipe.xlen(stream)
                    pipe.xpending(stream, GROUP)
                replies = await pipe.execute(raise_on_error=False)
            scheduled += _int(replies[0])
            dead += _int(replies[1])
            for length, pending in zip(replies[2::2], replies[3::2], strict=True):
                held = _pending_count(pending)
                running += held
                queued += max(_int(length) - held, 0)
    return StateCounts(scheduled, queued, running, dead)


def _int(reply: Any) -> int:
    return 0 if isinstance(reply, BaseException) else int(reply or 0)


def _pending_count(reply: Any) -> int:
    # XPENDING's summary; an error when the stream or its group does not exist yet.
    if isinstance(reply, dict):
        return int(reply.get("pending") or 0)
    return 0


# -- tokens ---------------------------------------------------------------------------
# A token holds one cursor per source (a partition's schedule, or a stream), so the
# next page resumes each source exactly where this one stopped taking from it.


def _encode(cursors: Sequence[str | int | None]) -> str:
    raw = json.dumps(list(cursors), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str | None, sources: int) -> list[Any]:
    if not token:
        return [None] * sources
    try:
        padded = token + "=" * (-len(token) % 4)
        cursors = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        cursors = None
    if not isinstance(cursors, list) or len(cursors) != sources:
        raise ValueError(
            f"{token!r} is not a page token of this list (pass a Page.next of the same "
            "list and docket, or nothing for the first page)"
        )
    return cursors


def _check_count(count: int) -> None:
    if not 1 <= count <= _MAX_COUNT:
        raise ValueError(f"count must be from 1 to {_MAX_COUNT}, got {count}")


# -- merging ----------------------------------------------------------------------------


@dataclass(order=True)
class _Item:
    order: tuple[Any, ...]
    cursor: Any = field(compare=False)
    """The source's cursor once this item is taken."""
    key: str = field(compare=False)
    record: dict[bytes, bytes] = field(compare=False)
    entry: dict[bytes, bytes] | None = field(compare=False, default=None)
    function: str = field(compare=False, default="")


_Fetch = Callable[[Any, int], Awaitable[tuple[list[_Item], bool]]]
"""Read up to n items of one source after a cursor: the items, and whether it ended."""


async def _merge(
    docket: Docket,
    fetches: list[_Fetch],
    after: str | None,
    count: int,
    task: str | None,
    budget: int,
    keep: Callable[[_Item], bool],
) -> Page:
    """A page of the sources merged in order, resuming each from the token's cursor."""
    _check_count(count)
    cursors = _decode(after, len(fetches))
    buffers: list[list[_Item]] = [[] for _ in fetches]
    ended = [False] * len(fetches)
    batch = count + 1
    taken: list[_Item] = []
    seen: set[str] = set()
    scanned = 0
    heap: list[tuple[_Item, int]] = []

    async def refill(index: int) -> None:
        items, done = await fetches[index](cursors[index], batch)
        ended[index] = done
        buffers[index] = items
        if items:
            heapq.heappush(heap, (items.pop(0), index))

    for index in range(len(fetches)):
        await refill(index)
    while heap and len(taken) < count and scanned < budget:
        item, index = heapq.heappop(heap)
        cursors[index] = item.cursor
        scanned += 1
        if item.function:
            seen.add(item.function)
        if keep(item) and (task is None or item.function == task):
            taken.append(item)
        if buffers[index]:
            heapq.heappush(heap, (buffers[index].pop(0), index))
        elif not ended[index]:
            if task is not None:
                batch = min(batch * 2, 1000)
            await refill(index)
    more = bool(heap) or any(buffers) or not all(ended)
    executions = [
        await Execution.from_record(docket, item.key, item.record, item.entry) for item in taken
    ]
    return Page(
        executions,
        _encode(cursors) if more else None,
        scanned,
        budget_spent=more and len(taken) < count,
        tasks=seen,
    )


async def _records(docket: Docket, keys: list[str]) -> list[dict[bytes, bytes]]:
    if not keys:
        return []
    async with docket.redis() as redis, redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(docket.keys_for(key).record(key))
        return list(await pipe.execute())


async def _entry_items(
    docket: Docket,
    level: int,
    ids: list[str],
    fields_of: list[dict[bytes, bytes]],
    task: str | None,
) -> list[_Item]:
    """The items of stream entries ``ids`` (with their fields), their records read in
    one pipelined round trip: only those of ``task``'s entries when filtering, as the
    others are passed over unread."""
    keys = [as_text(fields.get(b"key")) or "" for fields in fields_of]
    wanted = [
        key if task is None or as_text(fields.get(b"function")) == task else ""
        for key, fields in zip(keys, fields_of, strict=True)
    ]
    found = iter(await _records(docket, [key for key in wanted if key]))
    records = [next(found) if key else {} for key in wanted]
    return [
        _Item(
            _entry_order(level, entry_id),
            entry_id,
            key,
            record if key else {},
            fields,
            as_text(fields.get(b"function")) or "",
        )
        for entry_id, key, fields, record in zip(ids, keys, fields_of, records, strict=True)
    ]


# -- the lists ---------------------------------------------------------------------------


async def list_scheduled(
    docket: Docket,
    *,
    count: int = 50,
    after: str | None = None,
    task: str | None = None,
    budget: int = DEFAULT_BUDGET,
) -> Page:
    """Tasks due in the future, soonest first."""

    def source(partition: int) -> _Fetch:
        keys = docket.partition_keys[partition]

        async def fetch(cursor: Any, n: int) -> tuple[list[_Item], bool]:
            offset = int(cursor or 0)
            async with docket.redis() as redis:
                members = await redis.zrange(keys.queue, offset, offset + n - 1, withscores=True)
            names = [as_text(member) or "" for member, _ in members]
            records = await _records(docket, names)
            items = [
                _Item(
                    (score, name),
                    offset + position + 1,
                    name,
                    record,
                    function=as_text(record.get(b"function")) or "",
                )
                for position, ((_, score), name, record) in enumerate(
                    zip(members, names, records, strict=True)
                )
            ]
            return items, len(members) < n

        return fetch

    return await _merge(
        docket,
        [source(p) for p in range(docket.partitions)],
        after,
        count,
        task,
        budget,
        keep=lambda item: bool(item.record) and b"payload" in item.record,
    )


def _streams(docket: Docket) -> list[tuple[int, str, int]]:
    """(level, stream, partition) of every stream, in the order a worker reads them."""
    return [
        (lane.level, lane.stream, keys.partition)
        for keys in docket.partition_keys
        for lane in keys.lanes()
    ]


def _entry_order(level: int, entry_id: str) -> tuple[int, int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return -level, int(milliseconds), int(sequence or 0)


async def list_queued(
    docket: Docket,
    *,
    count: int = 50,
    after: str | None = None,
    task: str | None = None,
    budget: int = DEFAULT_BUDGET,
) -> Page:
    """Tasks due now and waiting for a worker, in the order workers take them: higher
    priority first, then oldest first."""

    def source(level: int, stream: str) -> _Fetch:
        async def fetch(cursor: Any, n: int) -> tuple[list[_Item], bool]:
            start = f"({cursor}" if cursor else "-"
            async with docket.redis() as redis:
                entries = await redis.xrange(stream, start, "+", count=n)
            ids = [as_text(entry_id) or "" for entry_id, _ in entries]
            items = await _entry_items(docket, level, ids, [fields for _, fields in entries], task)
            return items, len(entries) < n

        return fetch

    def waiting(item: _Item) -> bool:
        # A stream holds running tasks' messages too, and superseded runs' until a
        # worker drops them: only the current generation, still queued, is waiting.
        record, entry = item.record, item.entry or {}
        return as_text(record.get(b"state")) == ExecutionState.QUEUED.value and as_text(
            record.get(b"gen")
        ) == as_text(entry.get(b"gen"))

    return await _merge(
        docket,
        [source(level, stream) for level, stream, _ in _streams(docket)],
        after,
        count,
        task,
        budget,
        keep=waiting,
    )


async def list_running(
    docket: Docket,
    *,
    count: int = 50,
    after: str | None = None,
    task: str | None = None,
    budget: int = DEFAULT_BUDGET,
) -> Page:
    """Tasks a worker is running now, in the order they were taken."""

    def source(level: int, stream: str) -> _Fetch:
        async def fetch(cursor: Any, n: int) -> tuple[list[_Item], bool]:
            start = f"({cursor}" if cursor else "-"
            async with docket.redis() as redis:
                try:
                    pending = await redis.xpending_range(stream, GROUP, start, "+", n)
                except Exception:  # no such stream or group yet: nothing runs there
                    return [], True
                ids = [as_text(entry["message_id"]) or "" for entry in pending]
                async with redis.pipeline(transaction=False) as pipe:
                    for entry_id in ids:
                        pipe.xrange(stream, entry_id, entry_id)
                    found = await pipe.execute() if ids else []
            # A message deleted since (settled, cancelled) has no fields, and no record.
            fields_of = [entries[0][1] if entries else {} for entries in found]
            return await _entry_items(docket, level, ids, fields_of, task), len(pending) < n

        return fetch

    def running(item: _Item) -> bool:
        return as_text(item.record.get(b"state")) == ExecutionState.RUNNING.value and as_text(
            item.record.get(b"gen")
        ) == as_text((item.entry or {}).get(b"gen"))

    return await _merge(
        docket,
        [source(level, stream) for level, stream, _ in _streams(docket)],
        after,
        count,
        task,
        budget,
        keep=running,
    )
