"""The partition count a docket was made with, kept in its control partition, and the
check every process makes against it when it opens the docket.

A task key's partition follows from the count, so two processes that disagree on it
would look for the same key in different places: idempotency, cancel and
``get_execution`` would stop meaning what they say. A count that differs from the
stored one is therefore refused, not adopted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._text import as_text

if TYPE_CHECKING:
    from .docket import Docket


class PartitionMismatch(ValueError):
    """The docket in Redis is laid out for another partition count than this one's."""


async def check(docket: Docket) -> None:
    """Refuse to open ``docket`` when Redis holds it with another partition count;
    record the count when this is the first partitioned process to open it."""
    client = docket.engine.connection.client
    keys = docket.keys
    wanted = docket.partitions
    stored = _count(await client.get(keys.partition_count))
    if stored is None and wanted > 1:
        # A docket used unpartitioned until now keeps its tasks under the control
        # partition only, where most of their keys no longer map.
        async with client.pipeline(transaction=False) as pipe:
            for stream in keys.streams:
                pipe.xlen(stream)
            pipe.zcard(keys.queue)
            *lengths, scheduled = await pipe.execute()
        queued = sum(int(length) for length in lengths)
        if int(queued) or int(scheduled):
            raise PartitionMismatch(
                f"Docket {docket.name!r} holds {int(queued) + int(scheduled)} task(s) laid "
                f"out for 1 partition, so it cannot be opened with partitions={wanted}: "
                "let its workers drain it (or clear() it) first, or keep partitions=1"
            )
        if await client.set(keys.partition_count, str(wanted), nx=True):
            return
        stored = _count(await client.get(keys.partition_count))
    stored = 1 if stored is None else stored
    if stored != wanted:
        raise PartitionMismatch(
            f"Docket {docket.name!r} was made with partitions={stored}, and this process "
            f"asks for partitions={wanted}. A task key's partition follows from the count, "
            f"so every producer and worker of a docket must use the same one: set "
            f"partitions={stored} (or DOCKET_PARTITIONS={stored}). Changing the count of a "
            "live docket is not supported; drain it, clear() it and delete its "
            f"{keys.partition_count!r} key to lay it out afresh"
        )


def _count(raw: bytes | str | None) -> int | None:
    text = as_text(raw)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return None
