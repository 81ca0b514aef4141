"""Reading new messages from the stream: one ``Reader`` interface, two ways to do it.

Both take new messages with take.lua, which reads a partition's level streams (HIGH,
NORMAL, LOW) in order inside Redis and claims what it read, in one round trip. When
nothing waits, a blocking ``XREADGROUP`` over the three streams waits for work, and a
take.lua call claims what it delivered: pipelined with it on the lean ``Wire``, sent
after it by the redis-py reader (memory://, whose in-process engine cannot block, never
blocks)."""

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
Delivery: TypeAlias = list[tuple[Keys, list[Claimed], list[Entry]]]
"""What one read brought, per level's lane (HIGH first, only those with messages): the
messages it claimed, and those it left to claim."""

RESERVE_EVERY = 10
"""The anti-starvation rule (docs/priorities.md): of every this many slots a reader
reads while a higher level keeps work waiting, one is offered first to each level below
it (NORMAL, then LOW) before the levels are served in order. Each such read of
``count`` slots adds ``count / RESERVE_EVERY`` to the lower level's credit; the level is
offered the whole slots of its credit, spends what it takes, and loses the rest when it
has nothing waiting (no credit piles up while a level is idle, or while everything above
it was drained: then the order alone serves it)."""


class Reader(ABC):
    """Reads one partition's streams (one per priority level) for one consumer of the
    group, on a connection of its own."""

    def __init__(
        self, docket: Docket, consumer: str, watermark: list[str] | None, keys: Keys
    ) -> None:
        self._docket = docket
        self.keys = keys
        self.lanes = keys.lanes()
        self._consumer = consumer
        # Per level, the newest of this worker's pending entries take.lua has looked at:
        # what a blocking read delivers comes after it (see WireReader.read). None until
        # read from the group, at the first read and after the group was recreated; the
        # worker keeps it from one reader to the next.
        self.watermark = watermark
        # Per level, whether entries a blocking read delivered wait after the watermark.
        self._scan = [False] * len(self.lanes)
        self._credit = [0.0] * len(self.lanes)
        # Per level, whether the last read left it with nothing waiting: a level below
        # one that still had work is the one that may starve, and gets credit.
        self._drained = [True] * len(self.lanes)
        # The id CLIENT UNBLOCK needs to end a blocking read; None until one blocks.
        self._client_id: int | None = None
        self._unblocking = False
        # Set once the worker stops: no blocking read is sent after it, and one in
        # flight is ended (see unblock).
        self._stopped = False
        self._blocking = False

    @abstractmethod
    async def read(self, count: int, block: float) -> Delivery:
        """Up to ``count`` new messages, waiting at most ``block`` seconds for them (not
        at all for 0), the higher levels first (within the anti-starvation rule)."""

    @abstractmethod
    async def idle(self, block: float) -> None:
        """Wait for work after a read that found none (reads that block already did)."""

    def group_lost(self) -> None:
        """The consumer group is gone (NOGROUP) and about to be recreated."""
        self.watermark = None
        self._scan = [False] * len(self.lanes)

    def connection_lost(self) -> None:
        """The connection failed: a reconnected one has another client id."""
        self._client_id = None

    def unblock(self) -> None:
        """End the read under way, and send no blocking read after it, so a stopping
        worker need not wait out its block (nor take work it would then start)."""
        self._stopped = True
        if self._client_id is not None and not self._unblocking:
            self._unblocking = True
            asyncio.get_running_loop().create_task(self._unblock(self._client_id))

    async def _unblock(self, client_id: int) -> None:
        # Ends a blocking XREADGROUP early, as if it had timed out, so no delivered message
        # is dropped. A read sent but not yet blocking when CLIENT UNBLOCK arrives is not
        # ended by it, so it is sent again while a read is in flight (for up to a second).
        # Best effort: a least-privilege ACL may forbid CLIENT; then the read simply runs
        # out its block time.
        client = self._docket.engine.connection.client
        try:
            for _ in range(100):
                if not self._blocking or await client.client_unblock(client_id):
                    break
                await asyncio.sleep(0.01)
        except (RedisError, OSError):
            pass
        finally:
            self._unblocking = False

    @abstractmethod
    async def aclose(self) -> None: ...

    # -- take.lua -------------------------------------------------------------------

    def _take(self, count: int, read: bool) -> scripts.Take:
        """take.lua for up to ``count`` messages: after a blocking read (``read``
        False) every level's deliveries are scanned, else those left over, then each
        level is read."""
        assert self.watermark is not None
        reserves = [0] * len(self.lanes)
        if read:
            for level in range(1, len(self.lanes)):
                if all(self._drained[:level]):
                    # Nothing above it was left waiting: the order alone serves it.
                    self._credit[level] = 0.0
                    continue
                self._credit[level] += count / RESERVE_EVERY
                # (The epsilon: ten reads of a tenth make a whole slot.)
                reserves[level] = int(self._credit[level] + 1e-9)
        keys = self.keys
        return scripts.Take(
            group=GROUP,
            worker=self._consumer,
            count=count,
            read=int(read),
            events_prefix=keys.events_prefix,
            record_prefix=keys.record_prefix,
            levels=[
                scripts.TakeLevel(
                    stream=lane.stream,
                    watermark=watermark,
                    scan=int(scan or not read),
                    reserve=reserve,
                )
                for lane, watermark, scan, reserve in zip(
                    self.lanes, self.watermark, self._scan, reserves, strict=True
                )
            ],
        )

    def _taken(self, reply: Any, read: bool) -> Delivery:
        """What take.lua's ``reply`` brought, by lane, HIGH first; notes the watermarks,
        the levels left to scan and the credits spent."""
        marks, more, drained, entries = reply
        self.watermark = [as_text(mark) or "0-0" for mark in marks]
        self._scan = [bool(int(flag)) for flag in more]
        by_level: list[tuple[list[Claimed], list[Entry]]] = [([], []) for _ in self.lanes]
        for raw_level, raw_mid, flat, started in entries:
            claimed, unclaimed = by_level[int(raw_level) - 1]
            mid = as_text(raw_mid) or ""
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            if started is None:
                unclaimed.append((mid, fields, 1, False))
            else:
                claimed.append((mid, fields, as_text(started) or ""))
        if read:
            self._drained = [bool(int(flag)) for flag in drained]
            for level in range(1, len(self.lanes)):
                taken = len(by_level[level][0]) + len(by_level[level][1])
                spent = max(self._credit[level] - taken, 0.0)
                self._credit[level] = 0.0 if self._drained[level] else spent
        return [
            (lane, claimed, unclaimed)
            for lane, (claimed, unclaimed) in zip(self.lanes, by_level, strict=True)
            if claimed or unclaimed
        ]

    def _blocking_read(self, block: float) -> tuple[Any, ...]:
        """An XREADGROUP of one entry per level, blocking up to ``block`` seconds.

        It delivers at most one entry per level, so up to three with fewer free slots
        than that: the take.lua call that follows it claims no more than the read's
        count (HIGH first) and leaves the rest pending after their watermarks, where the
        next read scans them first. So the worker never runs more than its concurrency.
        """
        streams = tuple(lane.stream for lane in self.lanes)
        return (
            "XREADGROUP",
            "GROUP",
            GROUP,
            self._consumer,
            "COUNT",
            1,
            "BLOCK",
            max(int(block * 1000), 1),
            "STREAMS",
            *streams,
            *(">" for _ in streams),
        )

    @staticmethod
    def _last_delivered_of(groups: Any) -> str:
        for flat in groups:
            info = flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))
            name = info.get(b"name", info.get("name"))
            if as_text(name) == GROUP:
                found = info.get(b"last-delivered-id", info.get("last-delivered-id"))
                return as_text(found) or "0-0"
        return "0-0"


def open_reader(docket: Docket, consumer: str, watermark: list[str] | None, keys: Keys) -> Reader:
    """The lean reader of ``keys``' partition where the connection offers it, the
    redis-py one otherwise."""
    connection = docket.engine.connection
    wire = connection.dedicated_wire(keys.prefix)
    if wire is not None:
        return WireReader(docket, consumer, watermark, keys, wire)
    return RedisPyReader(docket, consumer, watermark, keys, connection.dedicated())


class WireReader(Reader):
    def __init__(
        self,
        docket: Docket,
        consumer: str,
        watermark: list[str] | None,
        keys: Keys,
        wire: Wire,
    ) -> None:
        super().__init__(docket, consumer, watermark, keys)
        self._wire = wire
        self._generation = 0

    async def read(self, count: int, block: float) -> Delivery:
        """Up to ``count`` new messages, read and claimed by take.lua in one round trip
        when any are waiting: the claimed ones with their start times, and those read
        but left unclaimed.

        When none are, and ``block`` allows, a blocking ``XREADGROUP`` over every
        level's stream and the take.lua call that claims what it delivered are sent
        together; Redis runs the script the moment the read returns, and both replies
        come back at once.
        """
        wire = self._wire
        if self._client_id is None or self._generation != wire.generation:
            # The id CLIENT UNBLOCK needs, fetched again after any reconnect.
            self._client_id = int(await wire.call("CLIENT", "ID"))
            self._generation = wire.generation
        if self.watermark is None:
            self.watermark = [await self._last_delivered(lane.stream) for lane in self.lanes]
        take = self._take(count, read=True)
        keys, args = take.flatten()
        delivery = self._taken(await wire.evalsha(take.sha, take.source, keys, args), True)
        if delivery or block <= 0 or self._stopped:
            return delivery
        claim = self._take(count, read=False)
        self._blocking = True
        try:
            _, reply = await self._docket.engine.scripts.send_after(
                wire, self._blocking_read(block), claim
            )
        finally:
            self._blocking = False
        return self._taken(reply, False)

    async def _last_delivered(self, stream: str) -> str:
        """The consumer group's last delivered id. Entries pending for this worker's
        name from before it are not this process's deliveries: left to redelivery, which
        counts them, rather than claimed by its reads (a worker restarted under the
        same name must not rerun a crashing task without the count going up)."""
        try:
            groups = await self._wire.call("XINFO", "GROUPS", stream)
        except ResponseError as error:
            if "no such key" not in str(error).lower():
                raise
            # The stream is gone (a Redis restart lost it): the read that follows fails
            # with NOGROUP, which recreates the group and asks again.
            return "0-0"
        return self._last_delivered_of(groups)

    async def idle(self, block: float) -> None:
        pass  # the read blocked already

    async def aclose(self) -> None:
        await self._wire.aclose()


class RedisPyReader(Reader):
    def __init__(
        self,
        docket: Docket,
        consumer: str,
        watermark: list[str] | None,
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
        """Up to ``count`` new messages, taken as WireReader takes them; a blocking read
        and the claim of what it delivered go one after the other (the in-process engine
        of memory:// never blocks)."""
        client = self._client
        send = self._docket.engine.scripts.send
        if self.watermark is None:
            self.watermark = [await self._last_delivered(lane.stream) for lane in self.lanes]
        delivery = self._taken(await send(self._take(count, read=True)), True)
        if delivery and self._memory:
            # The in-process engine answers without suspending: without this, a steady
            # supply of work (a Perpetual with no interval) would keep the read loop from
            # ever giving the event loop back.
            await asyncio.sleep(0)
        if delivery or block <= 0 or self._memory or self._stopped:
            return delivery
        if self._client_id is None and self._unblockable:
            self._client_id = int(await client.client_id())
        command = self._blocking_read(block)
        self._blocking = True
        try:
            await client.execute_command(*command)
        finally:
            self._blocking = False
        return self._taken(await send(self._take(count, read=False)), False)

    async def _last_delivered(self, stream: str) -> str:
        try:
            groups = await self._docket.engine.connection.client.xinfo_groups(stream)
        except ResponseError as error:
            if "no such key" not in str(error).lower():
                raise
            return "0-0"
        return self._last_delivered_of(groups)

    async def idle(self, block: float) -> None:
        activity = self._docket.engine.connection.activity
        if self._memory and activity is not None:
            await activity.wait(block)

    async def aclose(self) -> None:
        if self._client is not self._docket.engine.connection.client:
            with suppress(RedisError, OSError):
                await self._client.aclose()
