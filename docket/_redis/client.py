"""Turning a docket URL into a Redis client.

``redis://``, ``rediss://`` and ``unix://`` go to a real server through one shared
connection pool per docket. ``memory://<id>`` is an in-process Redis-compatible engine
(fakeredis with Lua) that runs the very same scripts: one engine per URL per event loop,
so every docket and worker in a process that names the same URL sees the same data.
"""

from __future__ import annotations

import asyncio
import weakref
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from .wire import Wire, wire_supported

# redis-py's own annotations are unions too broad to use (every reply may be bytes, str,
# int, None...), so the client is typed loosely and replies are checked where decoded.
RedisClient: TypeAlias = Any

# Blocking stream reads wait at most this long, so the socket timeout must exceed it
# (redis-py 8 defaults to 5 s, which would abort longer blocking reads).
BLOCK_SECONDS = 2.0
SOCKET_TIMEOUT = BLOCK_SECONDS + 10.0

SUPPORTED_SCHEMES = ("redis", "rediss", "unix", "memory")


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe for logs and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    # Everything after the last '@' is host[:port], kept verbatim (a malformed port must
    # not turn redaction itself into an error).
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_credentials(url: str, credential_provider: Any) -> None:
    """Refuse credentials in the URL together with a provider: redis-py would only
    object at the first connection, far from the code that passed both."""
    if credential_provider is None:
        return
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ValueError(
            "Pass credentials in the URL or in credential_provider, not both: "
            f"{redact_url(url)!r} has credentials and a credential_provider was given too"
        )


class ActivitySignal:
    """Wakes in-process waiters when something lands in a memory:// docket.

    The in-process engine does not implement blocking reads, so a worker on memory://
    waits on this instead of polling.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        event = self._event
        with suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


@dataclass
class _MemoryEngine:
    server: Any
    activity: ActivitySignal = field(default_factory=ActivitySignal)


_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _MemoryEngine]] = (
    weakref.WeakKeyDictionary()
)


def _memory_engine(url: str) -> _MemoryEngine:
    import fakeredis

    loop = asyncio.get_running_loop()
    per_loop = _engines.setdefault(loop, {})
    engine = per_loop.get(url)
    if engine is None:
        engine = per_loop[url] = _MemoryEngine(server=fakeredis.FakeServer(version=(7, 2)))
    return engine


class Connection:
    """One docket's client, plus what the memory engine needs to stand in for blocking."""

    def __init__(self, url: str, credential_provider: Any = None) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in SUPPORTED_SCHEMES:
            raise ValueError(
                f"Unsupported docket URL {redact_url(url)!r}: the scheme must be one of "
                + ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES)
            )
        check_credentials(url, credential_provider)
        self.url = url
        self.is_memory = scheme == "memory"
        self.activity: ActivitySignal | None = None
        # The lean connection for the hot path, where the URL allows one (see wire.py).
        self.wire: Wire | None = None
        if self.is_memory:
            import fakeredis

            engine = _memory_engine(url)
            self.activity = engine.activity
            self.client: RedisClient = fakeredis.FakeAsyncRedis(server=engine.server)
        else:
            self.client = aioredis.Redis.from_url(
                url,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=5.0,
                health_check_interval=30,
                credential_provider=credential_provider,
                # A pooled connection the server closed while idle fails on first use;
                # a few quick retries on a fresh connection hide that. Only connection
                # errors are retried: every script is safe to run again after one.
                retry=Retry(
                    ExponentialWithJitterBackoff(cap=0.5, base=0.01),
                    3,
                    supported_errors=(RedisConnectionError,),
                ),
            )
            if credential_provider is None and wire_supported(url):
                self.wire = Wire(url, timeout=SOCKET_TIMEOUT)

    def dedicated(self) -> RedisClient:
        """A client holding one connection of the pool, for blocking reads that another
        connection may need to interrupt (``CLIENT UNBLOCK``)."""
        if self.is_memory:
            return self.client
        return aioredis.Redis(
            connection_pool=self.client.connection_pool, single_connection_client=True
        )

    def dedicated_wire(self) -> Wire | None:
        """A lean connection of its own, for a blocking read, or None without the
        lean path."""
        if self.wire is None:
            return None
        return Wire(self.url, timeout=SOCKET_TIMEOUT)

    def notify_activity(self) -> None:
        if self.activity is not None:
            self.activity.notify()

    def __repr__(self) -> str:
        return f"Connection({redact_url(self.url)!r})"

    async def aclose(self) -> None:
        if self.wire is not None:
            await self.wire.aclose()
        await self.client.aclose()
