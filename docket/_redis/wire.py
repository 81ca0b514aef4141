"""A lean RESP connection for the hot path: enqueue, read, claim and settle.

redis-py spends most of a round trip in Python (command packing, retry and timeout
wrappers, connection-pool bookkeeping); on a loopback Redis that is more than the round
trip itself. A ``Wire`` is one socket with a hiredis reply parser and a queue of waiting
futures, so any number of coroutines pipeline through it just by calling it: requests go
out in call order and replies come back in the same order.

It serves ``redis://`` and ``unix://`` URLs whose options it understands, and the primary
of a ``redis+sentinel://`` URL (asking the sentinels where it is at each connect, and
connecting again when a failover made it a replica), and the shard serving the docket's
slot on a ``redis+cluster://`` URL (following MOVED, ASK and TRYAGAIN itself); anything
else (TLS, credential providers, exotic options) keeps using redis-py, as do the memory engine,
pub/sub and every command off the hot path. Errors are redis-py's exception types, so the
callers' handling is the same whichever path a command took.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    ExecAbortError,
    MovedError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# URL options a Wire honours itself (db) or that only concern redis-py's pool or its
# own sockets; any other option means the URL asks for something only redis-py does.
_ACCEPTED_OPTIONS = frozenset(
    {
        "db",
        "max_connections",
        "health_check_interval",
        "socket_connect_timeout",
        "socket_keepalive",
        "retry_on_timeout",
    }
)
_SCHEMES = ("redis", "unix")

Locate = Callable[[], Awaitable[tuple[str, int]]]
"""Where the server is now (a Sentinel-watched primary moves on a failover)."""


def wire_supported(url: str) -> bool:
    """Whether a Wire can serve ``url`` exactly as redis-py would."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        return False
    return options_supported(parse_qs(parts.query))


def options_supported(query: dict[str, list[str]]) -> bool:
    """Whether a Wire honours every one of a URL's query options."""
    return set(query) <= _ACCEPTED_OPTIONS


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        raise TypeError("a bool is not a Redis argument; pass an int or a string")
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, float):
        return repr(value).encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"cannot send a {type(value).__name__} to Redis")


def pack(args: Sequence[Any]) -> bytes:
    """One command in RESP, as bytes."""
    # The hottest Python in a worker (a settle carries ~8 arguments per task): exact type
    # checks first, the general conversion only for the rare rest.
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        kind = type(arg)
        if kind is str:
            data = arg.encode()
        elif kind is bytes:
            data = arg
        elif kind is int:
            data = b"%d" % arg
        else:
            data = _encode(arg)
        append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


# Replies redis-py raises as their own classes (its parser's table), so code that catches
# OutOfMemoryError or NoPermissionError hears them from the lean connection too.
_TYPED_ERRORS: tuple[tuple[str, type[ResponseError]], ...] = (
    ("OOM ", OutOfMemoryError),
    ("NOPERM ", NoPermissionError),
    ("READONLY ", ReadOnlyError),
    ("EXECABORT ", ExecAbortError),
)


# A Cluster's redirections, built as redis-py builds them (from the message after the
# prefix, which MovedError and AskError parse for the slot and the address).
_CLUSTER_ERRORS: tuple[tuple[str, type[ResponseError]], ...] = (
    ("MOVED ", MovedError),
    ("ASK ", AskError),
    ("TRYAGAIN ", TryAgainError),
    ("CLUSTERDOWN ", ClusterDownError),
)


def _typed(error: ResponseError) -> ResponseError | AuthenticationError:
    """The error class redis-py raises for the same reply."""
    message = str(error)
    for prefix, kind in _CLUSTER_ERRORS:
        if message.startswith(prefix):
            return kind(message[len(prefix) :])
    if message.startswith(("WRONGPASS", "NOAUTH", "invalid password", "invalid username")):
        return AuthenticationError(message)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    for prefix, kind in _TYPED_ERRORS:
        if message.startswith(prefix):
            return kind(message)
    if message.startswith("ERR Protocol error: unauthenticated"):
        # A server that wants a password refuses a large request before it gets as far
        # as NOAUTH (redis-py's smaller first command would have heard NOAUTH).
        return AuthenticationError(f"Authentication required. ({message})")
    return error


def is_noscript(reply: Any) -> bool:
    """Whether ``reply`` is the server's answer to a script it does not know."""
    return isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT")


class _Pending:
    """What waits for the next reply (or, for a pipeline, the next ``count`` replies):
    one future per pipeline, however long, keeps a batch's cost off the event loop."""

    __slots__ = ("count", "future", "replies", "sent_at")

    def __init__(self, future: asyncio.Future[Any], sent_at: float, count: int) -> None:
        self.future = future
        self.sent_at = sent_at
        self.count = count
        self.replies: list[Any] | None = [] if count > 1 else None


class _Protocol(asyncio.Protocol):
    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._reader = hiredis.Reader(replyError=ResponseError)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._wire._waiting
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as error:
                self._wire._fail(RedisConnectionError(f"Redis protocol error: {error}"))
                if self.transport is not None:
                    self.transport.abort()
                return
            if reply is False:
                return
            if not waiting:
                continue  # a reply nobody waits for (its caller was cancelled)
            pending = waiting[0]
            replies = pending.replies
            if replies is None:
                waiting.popleft()
                result: Any = reply
            else:
                replies.append(reply)
                if len(replies) < pending.count:
                    continue
                waiting.popleft()
                result = replies
            if not pending.future.done():
                pending.future.set_result(result)

    def connection_lost(self, exc: Exception | None) -> None:
        self._wire._lost(self, exc)


# How many times a command that meets a slot migration is tried again before its error is
# raised (the migration moves keys in batches; TRYAGAIN lasts until they are all moved).
_MIGRATION_TRIES = 50


def _at(error: AskError) -> Locate:
    address = (str(error.host), int(error.port))

    async def locate() -> tuple[str, int]:
        return address

    return locate


class Wire:
    """One connection to a real Redis server; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        connect_timeout: float = 5.0,
        locate: Locate | None = None,
    ) -> None:
        # With ``locate``, the URL gives the credentials and database and ``locate`` the
        # address, asked again at every connect (unless a MOVED reply just said it).
        self._locate = locate
        self._redirect: tuple[str, int] | None = None
        self._url = url
        options = parse_url(url)
        self._host: str = options.get("host", "localhost")
        self._port: int = int(options.get("port", 6379))
        self._path: str | None = options.get("path")
        self._db = int(options.get("db", 0) or 0)
        self._username: str | None = options.get("username")
        self._password: str | None = options.get("password")
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._waiting: collections.deque[_Pending] = collections.deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        # Counts connections made, so a holder of per-connection state (a client id for
        # CLIENT UNBLOCK) can tell when a reconnect made it stale.
        self.generation = 0

    # -- connection ---------------------------------------------------------------------

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None:
                return self._protocol
            if self._closed:
                raise RedisConnectionError("this connection was closed")
            loop = asyncio.get_running_loop()
            if self._redirect is not None:
                (self._host, self._port), self._redirect = self._redirect, None
            elif self._locate is not None:
                try:
                    self._host, self._port = await self._locate()
                except (OSError, TimeoutError) as error:
                    raise RedisConnectionError(f"Cannot find the Redis primary: {error}") from error
            try:
                if self._path:
                    connecting = loop.create_unix_connection(lambda: _Protocol(self), self._path)
                else:
                    connecting = loop.create_connection(
                        lambda: _Protocol(self), self._host, self._port
                    )
                _, protocol = await asyncio.wait_for(connecting, self._connect_timeout)
            except (OSError, TimeoutError) as error:
                where = self._path or f"{self._host}:{self._port}"
                raise RedisConnectionError(f"Error connecting to {where}: {error}") from error
            try:
                # Published only once authenticated and on its database: a call made
                # meanwhile waits on the lock instead of running on db 0.
                if self._password is not None:
                    auth = (
                        ("AUTH", self._username, self._password)
                        if self._username
                        else ("AUTH", self._password)
                    )
                    await self._request(protocol, auth)
                if self._db:
                    await self._request(protocol, ("SELECT", self._db))
                if self._closed:
                    raise RedisConnectionError("this connection was closed")
            except BaseException:
                self._drop(protocol)
                raise
            self._protocol = protocol
            self.generation += 1
            return protocol

    def _drop(self, protocol: _Protocol) -> None:
        if protocol.transport is not None:
            protocol.transport.abort()
        if self._protocol is protocol:
            self._protocol = None

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if self._protocol is protocol:
            self._protocol = None
        reason = f": {exc}" if exc else ""
        self._fail(RedisConnectionError(f"Connection to Redis lost{reason}"))

    def _fail(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, collections.deque()
        for pending in waiting:
            if not pending.future.done():
                pending.future.set_exception(error)

    def _arm_watchdog(self) -> None:
        if self._watchdog is None and self._timeout > 0:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(self._timeout / 4, self._check_stalled)

    def _check_stalled(self) -> None:
        """A reply overdue by the socket timeout means the server or the network hung:
        fail everything waiting and drop the connection (the next call reconnects)."""
        self._watchdog = None
        if not self._waiting:
            return
        if time.monotonic() - self._waiting[0].sent_at > self._timeout:
            protocol = self._protocol
            self._fail(RedisTimeoutError(f"No reply from Redis in {self._timeout:g}s"))
            if protocol is not None:
                self._drop(protocol)
            return
        self._arm_watchdog()

    # -- requests -----------------------------------------------------------------------

    def _send(self, protocol: _Protocol, data: bytes, count: int) -> asyncio.Future[Any]:
        """Write ``count`` commands; the future gets the reply (``count`` == 1) or the
        list of replies in order, error replies included as exception objects."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(future, time.monotonic(), count))
        assert protocol.transport is not None
        protocol.transport.write(data)
        self._arm_watchdog()
        return future

    async def _request(self, protocol: _Protocol, args: Sequence[Any]) -> Any:
        reply = await self._send(protocol, pack(args), 1)
        if isinstance(reply, ResponseError):
            raise _typed(reply)
        return reply

    async def _protocol_now(self) -> _Protocol:
        protocol = self._protocol
        if protocol is None or protocol.transport is None or protocol.transport.is_closing():
            protocol = await self._connect()
        return protocol

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply (an error reply is raised)."""
        for attempt in range(3):
            protocol = await self._protocol_now()
            try:
                return await self._request(protocol, args)
            except RedisConnectionError:
                # A connection the server closed while idle fails on first use; every
                # command sent here is safe to send again on a fresh one.
                if attempt == 2:
                    raise
            except (ReadOnlyError, MovedError) as error:
                if not self._moved(protocol, error) or attempt == 2:
                    raise
            except (AskError, TryAgainError) as error:
                if self._locate is None:
                    raise
                return await self._migrating(args, error)
        raise AssertionError("unreachable")

    async def _migrating(self, args: Sequence[Any], error: ResponseError) -> Any:
        """A command that met the docket's slot half-way to another shard: sent there
        with ASKING (ASK), or again here after a moment (TRYAGAIN: its keys are split
        between the two for now), or to the new owner once the move is done (MOVED).
        Raises what the last try answered."""
        for attempt in range(_MIGRATION_TRIES):
            if isinstance(error, MovedError):
                if self._protocol is not None:
                    self._moved(self._protocol, error)
                reply = await self._send_once(args)
            elif isinstance(error, AskError):
                target = Wire(self._url, timeout=self._timeout, locate=_at(error))
                try:
                    _, reply = await target.pipeline([("ASKING",), args])
                finally:
                    await target.aclose()
            else:
                await asyncio.sleep(0.01 * (attempt + 1))
                reply = await self._send_once(args)
            if not isinstance(reply, (AskError, TryAgainError)):
                if isinstance(reply, BaseException):
                    raise reply
                return reply
            error = reply
        raise error

    async def _send_once(self, args: Sequence[Any]) -> Any:
        """One command's reply, an error reply typed and returned, not raised."""
        reply = await self._send(await self._protocol_now(), pack(args), 1)
        return _typed(reply) if isinstance(reply, ResponseError) else reply

    def _moved(self, protocol: _Protocol, error: ResponseError) -> bool:
        """A located server that answers READONLY was demoted by a failover, and one that
        answers MOVED no longer serves the slot: drop the connection, so the next attempt
        goes where the reply said or asks where the primary is now. Whether to try again
        (a fixed server that is read-only stays so)."""
        if self._locate is None:
            return False
        if isinstance(error, MovedError):
            self._redirect = (str(error.host), int(error.port))
        self._drop(protocol)
        return True

    async def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send commands in one write; replies (error replies as exception objects, not
        raised) in order."""
        if not commands:
            return []
        data = b"".join(pack(args) for args in commands)
        count = len(commands)
        for attempt in range(3):
            protocol = await self._protocol_now()
            try:
                replies = await self._send(protocol, data, count)
            except RedisConnectionError:
                if attempt == 2:
                    raise
                continue
            replies = [replies] if count == 1 else replies
            # Typed as call() raises them, so a pipeline's OOM is an OutOfMemoryError too.
            typed = [_typed(r) if isinstance(r, ResponseError) else r for r in replies]
            moved = next((r for r in typed if isinstance(r, (ReadOnlyError, MovedError))), None)
            # A demoted primary ran none of the writes, and a node that lost the slot none
            # of its commands: all go again, as after a lost connection.
            if attempt < 2 and moved is not None and self._moved(protocol, moved):
                continue
            if self._locate is not None:
                for i, reply in enumerate(typed):
                    if isinstance(reply, (AskError, TryAgainError)):
                        try:
                            typed[i] = await self._migrating(commands[i], reply)
                        except ResponseError as error:
                            typed[i] = error
            return typed
        raise AssertionError("unreachable")

    async def evalsha(self, sha: str, source: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a script by its SHA, loading it first when the server does not know it."""
        command = ("EVALSHA", sha, len(keys), *keys, *args)
        try:
            return await self.call(*command)
        except ResponseError as error:
            if not is_noscript(error):
                raise
        await self.call("SCRIPT", "LOAD", source)
        return await self.call(*command)

    async def evalsha_many(
        self, sha: str, source: str, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
    ) -> list[Any]:
        """Many runs of one script in one pipeline; a per-call error reply is returned
        in its place."""
        commands = [("EVALSHA", sha, len(keys), *keys, *args) for keys, args in calls]
        replies = await self.pipeline(commands)
        missing = [i for i, reply in enumerate(replies) if is_noscript(reply)]
        if missing:
            # Only those that did not run are sent again, once the script is loaded.
            await self.call("SCRIPT", "LOAD", source)
            again = await self.pipeline([commands[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = NoScriptError(str(reply)) if is_noscript(reply) else reply
        return replies

    async def aclose(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        protocol = self._protocol
        self._protocol = None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        self._fail(RedisConnectionError("this connection was closed"))

    def __repr__(self) -> str:
        where = self._path or f"{self._host}:{self._port}"
        return f"Wire({where!r}, db={self._db})"
