"""Reading new messages from the stream: one ``Reader`` interface, two ways to do it.

The lean ``Wire`` reader pipelines ``XREADGROUP`` with claim_delivered.lua, so what it
delivers comes back already claimed; the redis-py reader (and memory://, whose
in-process engine cannot block) only reads, leaving the claiming to claim.lua."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from contextlib import suppress
from typing import Any, TypeAlias

from redis.exceptions import RedisError, ResponseError

from ._redis import scripts
from ._redis.client import RedisClient
from ._redis.keys import GROUP, Keys
from ._redis.wire import Wire
from ._text import as_text
from .docket import Docket

Entry: TypeAlias = tuple[str, dict[bytes, bytes], int, bool]
"""A message still to claim: id, fields, delivery count, whether it is redelivered."""
Claimed: TypeAlias = tuple[str, dict[bytes, bytes], str]
"""A message a read claimed itself: id, fields, and the start time it recorded."""
Delivery: TypeAlias = tuple[list[Claimed], list[Entry]]
"""What one read brought: the messages it claimed, and those it left to claim."""


class Reader(ABC):
    """Reads one partition's stream for one consumer of the group, on a connection of
    its own."""

    def __init__(self, docket: Docket, consumer: str, watermark: str | None, keys: Keys) -> None:
        self._docket = docket
        self.keys = keys
        self._consumer = consumer
        # The newest of this worker's pending entries claim_delivered.lua has looked at:
        # what a read delivers comes after it (see WireReader.read). None until read
        # from the group, at the first read and after the group was recreated; the
        # worker keeps it from one reader to the next.
        self.watermark = watermark
        # The id CLIENT UNBLOCK needs to end a blocking read; None until one blocks.
        self._client_id: int | None = None
        self._unblocking = False

    @abstractmethod
    async def read(self, count: int, block: float) -> Delivery:
        """Up to ``count`` new messages, waiting at most ``block`` seconds for them (not
        at all for 0)."""

    @abstractmethod
    async def idle(self, block: float) -> None:
        """Wait for work after a read that found none (reads that block already did)."""

    def group_lost(self) -> None:
        """The consumer group is gone (NOGROUP) and about to be recreated."""
        self.watermark = None

    def connection_lost(self) -> None:
        """The connection failed: a reconnected one has another client id."""
        self._client_id = None

    def unblock(self) -> None:
        """End the read under way, so a stopping worker need not wait out its block."""
        if self._client_id is not None and not self._unblocking:
            self._unblocking = True
            asyncio.get_running_loop().create_task(self._unblock(self._client_id))

    async def _unblock(self, client_id: int) -> None:
        # Ends a blocking XREADGROUP early, as if it had timed out, so no delivered message
        # is dropped. Best effort: a least-privilege ACL may forbid CLIENT; then the read
        # simply runs out its block time.
        try:
            await self._docket.engine.connection.client.client_unblock(client_id)
        except (RedisError, OSError):
            pass
        finally:
            self._unblocking = False

    @abstractmethod
    async def aclose(self) -> None: ...


def open_reader(docket: Docket, consumer: str, watermark: str | None, keys: Keys) -> Reader:
    """The lean reader of ``keys``' partition where the connection offers it, the
    redis-py one otherwise."""
    connection = docket.engine.connection
    wire = connection.dedicated_wire(keys.prefix)
    if wire is not None:
        return WireReader(docket, consumer, watermark, keys, wire)
    return RedisPyReader(docket, consumer, watermark, keys, connection.dedicated())


class WireReader(Reader):
    def __init__(
        self, docket: Docket, consumer: str, watermark: str | None, keys: Keys, wire: Wire
    ) -> None:
        super().__init__(docket, consumer, watermark, keys)
        self._wire = wire
        self._generation = 0

    async def read(self, count: int, block: float) -> Delivery:
        """Up to ``count`` new messages, read and claimed in one round trip: the claimed
        ones with their start times, and those read but left unclaimed.

        The blocking ``XREADGROUP`` and the script that claims what it delivered
        (``claim_delivered.lua``) are sent together; Redis runs the script the moment the
        read returns, and both replies come back at once.
        """
        wire = self._wire
        if self._client_id is None or self._generation != wire.generation:
            # The id CLIENT UNBLOCK needs, fetched again after any reconnect.
            self._client_id = int(await wire.call("CLIENT", "ID"))
            self._generation = wire.generation
        keys = self.keys
        if self.watermark is None:
            self.watermark = await self._last_delivered()
        read: tuple[Any, ...] = ("XREADGROUP", "GROUP", GROUP, self._consumer, "COUNT", count)
        if block > 0:
            read += ("BLOCK", max(int(block * 1000), 1))
        read += ("STREAMS", keys.stream, ">")
        claim = scripts.ClaimDelivered(
            stream=keys.stream,
            group=GROUP,
            worker=self._consumer,
            watermark=self.watermark,
            count=count,
            events_prefix=keys.events_prefix,
            record_prefix=keys.record_prefix,
        )
        _, reply = await self._docket.engine.scripts.send_after(wire, read, claim)
        watermark, entries = reply
        self.watermark = as_text(watermark) or self.watermark
        claimed: list[Claimed] = []
        unclaimed: list[Entry] = []
        for raw_mid, flat, started in entries:
            mid = as_text(raw_mid) or ""
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            if started is None:
                unclaimed.append((mid, fields, 1, False))
            else:
                claimed.append((mid, fields, as_text(started) or ""))
        return claimed, unclaimed

    async def _last_delivered(self) -> str:
        """The consumer group's last delivered id. Entries pending for this worker's
        name from before it are not this process's deliveries: left to redelivery, which
        counts them, rather than claimed by its reads (a worker restarted under the
        same name must not rerun a crashing task without the count going up)."""
        try:
            groups = await self._wire.call("XINFO", "GROUPS", self.keys.stream)
        except ResponseError as error:
            if "no such key" not in str(error).lower():
                raise
            # The stream is gone (a Redis restart lost it): the read that follows fails
            # with NOGROUP, which recreates the group and asks again.
            return "0-0"
        for flat in groups:
            info = dict(zip(flat[::2], flat[1::2], strict=True))
            if info.get(b"name") == GROUP.encode():
                return as_text(info.get(b"last-delivered-id")) or "0-0"
        return "0-0"

    async def idle(self, block: float) -> None:
        pass  # the read blocked already

    async def aclose(self) -> None:
        await self._wire.aclose()


class RedisPyReader(Reader):
    def __init__(
        self,
        docket: Docket,
        consumer: str,
        watermark: str | None,
        keys: Keys,
        client: RedisClient,
    ) -> None:
        super().__init__(docket, consumer, watermark, keys)
        self._client = client
        # The in-process engine answers at once and cannot block.
        self._memory = docket.engine.connection.is_memory
        # CLIENT UNBLOCK needs the one server the read blocks on (not so on a Cluster,
        # where a stopping worker waits out its block instead).
        self._unblockable = docket.engine.connection.can_unblock

    async def read(self, count: int, block: float) -> Delivery:
        """Up to ``count`` new messages, all left to claim."""
        client = self._client
        stream = self.keys.stream
        if self._memory:
            reply = await client.xreadgroup(GROUP, self._consumer, {stream: ">"}, count=count)
        else:
            if self._client_id is None and self._unblockable:
                self._client_id = int(await client.client_id())
            reply = await client.xreadgroup(
                GROUP,
                self._consumer,
                {stream: ">"},
                count=count,
                block=max(int(block * 1000), 1) if block > 0 else None,
            )
        entries: list[tuple[bytes, dict[bytes, bytes]]] = reply[0][1] if reply else []
        if entries and self._memory:
            # The in-process engine answers without suspending: without this, a steady
            # supply of work (a Perpetual with no interval) would keep the read loop from
            # ever giving the event loop back.
            await asyncio.sleep(0)
        return [], [(as_text(mid) or "", fields, 1, False) for mid, fields in entries]

    async def idle(self, block: float) -> None:
        activity = self._docket.engine.connection.activity
        if self._memory and activity is not None:
            await activity.wait(block)

    async def aclose(self) -> None:
        if self._client is not self._docket.engine.connection.client:
            with suppress(RedisError, OSError):
                await self._client.aclose()
