"""Turning a docket URL into a Redis client.

``redis://``, ``rediss://`` and ``unix://`` go to a real server through one shared
connection pool per docket. ``redis+sentinel://`` finds the primary through the sentinels
(redis-py's Sentinel pool, which asks again after a failover); ``redis+cluster://`` is
redis-py's cluster client (the lean connection follows MOVED, ASK and TRYAGAIN itself,
see wire.py). Every key of a docket shares one hash tag, so on a Cluster the whole docket
is one slot on one shard. ``memory://<id>`` is an in-process Redis-compatible engine
(fakeredis with Lua) that runs the very same scripts: one engine per URL per event loop,
so every docket and worker in a process that names the same URL sees the same data.
"""

from __future__ import annotations

import asyncio
import weakref
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from .topology import SUPPORTED_SCHEMES, Topology, parse_topology, redact_url
from .wire import Wire, options_supported, wire_supported

__all__ = ["SUPPORTED_SCHEMES", "Connection", "TopologyError", "check_credentials", "redact_url"]

# redis-py's own annotations are unions too broad to use (every reply may be bytes, str,
# int, None...), so the client is typed loosely and replies are checked where decoded.
RedisClient: TypeAlias = Any

# Blocking stream reads wait at most this long, so the socket timeout must exceed it
# (redis-py 8 defaults to 5 s, which would abort longer blocking reads).
BLOCK_SECONDS = 2.0
SOCKET_TIMEOUT = BLOCK_SECONDS + 10.0


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


class TopologyError(ConnectionError):
    """The URL's servers are not what its scheme says (a cluster URL reaching a single
    server, a Sentinel service the sentinels do not know)."""


def _retry() -> Retry:
    # A pooled connection the server closed while idle fails on first use; a few quick
    # retries on a fresh connection hide that. Only connection errors are retried: every
    # script is safe to run again after one.
    backoff = ExponentialWithJitterBackoff(cap=0.5, base=0.01)
    return Retry(backoff, 3, supported_errors=(RedisConnectionError,))


_COMMON: dict[str, Any] = {
    "socket_timeout": SOCKET_TIMEOUT,
    "socket_connect_timeout": 5.0,
    "health_check_interval": 30,
}


class Connection:
    """One docket's client, plus what the memory engine needs to stand in for blocking."""

    def __init__(self, url: str, credential_provider: Any = None, *, slot_key: str = "") -> None:
        topology = parse_topology(url)
        # A key in the docket's hash slot: on a Cluster, which shard serves the docket.
        self.slot_key = slot_key or "{docket}"
        check_credentials(url, credential_provider)
        self.url = url
        self.topology = topology
        self.is_memory = topology.kind == "memory"
        self.is_cluster = topology.kind == "cluster"
        # CLIENT UNBLOCK names a connection of one server; a cluster client's connections
        # are spread over several, and the memory engine does not block at all.
        self.can_unblock = topology.kind in ("standalone", "sentinel")
        self.activity: ActivitySignal | None = None
        self._credential_provider = credential_provider
        self._sentinel: Sentinel | None = None
        self._node_clients: dict[str, RedisClient] = {}
        # Lean connections to other partitions' shards (a partitioned docket on a Cluster).
        self._wires: dict[str, Wire | None] = {}
        self._shard_known = False
        if topology.kind == "memory":
            import fakeredis

            engine = _memory_engine(url)
            self.activity = engine.activity
            self.client: RedisClient = fakeredis.FakeAsyncRedis(server=engine.server)
        elif topology.kind == "standalone":
            self.client = aioredis.Redis.from_url(
                url, credential_provider=credential_provider, retry=_retry(), **_COMMON
            )
        elif topology.kind == "sentinel":
            self.client = self._sentinel_client(topology)
        else:
            self.client = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in topology.hosts],
                credential_provider=credential_provider,
                retry=_retry(),
                **{**_COMMON, **topology.options},
            )
        # The lean connection for the hot path, where the URL allows one (see wire.py).
        self.wire: Wire | None = self._new_wire()

    def _sentinel_client(self, topology: Topology) -> RedisClient:
        options = {**_COMMON, **topology.options}
        sentinel_options = {
            "socket_timeout": 5.0,
            "socket_connect_timeout": 5.0,
            **topology.sentinel_options,
        }
        self._sentinel = Sentinel(list(topology.hosts), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
        return self._sentinel.master_for(
            topology.service,
            redis_class=aioredis.Redis,
            db=topology.db,
            credential_provider=self._credential_provider,
            retry=_retry(),
            **options,
        )

    def _new_wire(self, slot_key: str | None = None) -> Wire | None:
        """A lean connection, where the URL allows one (see wire.py); on a Cluster, to
        the shard serving ``slot_key`` (by default the docket's)."""
        topology = self.topology
        if self._credential_provider is not None:
            return None
        if topology.kind == "standalone" and wire_supported(self.url):
            return Wire(self.url, timeout=SOCKET_TIMEOUT)
        if topology.kind == "sentinel" and not topology.tls and options_supported(topology.query):
            credentials = topology.userinfo + "@" if topology.userinfo else ""
            return Wire(
                f"redis://{credentials}primary/{topology.db}",
                timeout=SOCKET_TIMEOUT,
                locate=self._primary,
            )
        if topology.kind == "cluster" and not topology.tls and options_supported(topology.query):
            credentials = topology.userinfo + "@" if topology.userinfo else ""
            key = slot_key or self.slot_key

            async def locate() -> tuple[str, int]:
                return await self._shard(key)

            return Wire(f"redis://{credentials}shard/0", timeout=SOCKET_TIMEOUT, locate=locate)
        return None

    def wire_for(self, key: str) -> Wire | None:
        """The lean connection that serves ``key``: the one connection, except on a
        Cluster, where each hash tag other than the docket's gets one to its shard."""
        if not self.is_cluster or self.wire is None or key.startswith(self.slot_key):
            return self.wire
        tag = key[: key.find("}") + 1]
        if tag not in self._wires:
            self._wires[tag] = self._new_wire(tag)
        return self._wires[tag]

    async def _shard(self, slot_key: str) -> tuple[str, int]:
        """The primary serving ``slot_key``'s slot. Asked again after a lost connection,
        when a failover may have promoted another: the slot map is read afresh then."""
        client = self.client
        if self._shard_known:
            await client.nodes_manager.initialize()
        else:
            await client.initialize()
        self._shard_known = True
        node = client.get_node_from_key(slot_key)
        return str(node.host), int(node.port)

    async def _primary(self) -> tuple[str, int]:
        assert self._sentinel is not None
        try:
            host, port = await self._sentinel.discover_master(self.topology.service)
        except MasterNotFoundError as error:
            raise RedisConnectionError(
                f"No primary for the service {self.topology.service!r} from the sentinels "
                f"at {self._sentinel_hosts()} ({error}); a failover may be under way"
            ) from error
        return str(host), int(port)

    def _sentinel_hosts(self) -> str:
        return ", ".join(f"{h}:{p}" for h, p in self.topology.hosts)

    async def check(self) -> None:
        """Make sure the servers are what the URL says, with an error that says what
        they are instead. Nothing to check for one server or the memory engine."""
        if self.topology.kind == "sentinel":
            await self._check_service()
        elif self.topology.kind == "cluster":
            try:
                await self.client.initialize()
            except RedisClusterException as error:
                message = str(error)
                if "cluster mode is not enabled" in message.lower():
                    # redis-py says so of any error reply to CLUSTER SLOTS.
                    refusal = await self._cluster_slots_refusal()
                    if refusal is not None:
                        raise TopologyError(
                            f"The Redis Cluster at {redact_url(self.url)!r} refused CLUSTER "
                            f"SLOTS ({refusal}): a Cluster client reads the slot map with "
                            "it, so the user needs +cluster|slots (as +@all -@dangerous "
                            "allows)"
                        ) from error
                    raise TopologyError(
                        f"{redact_url(self.url)!r} names a Redis Cluster, but the server "
                        "there is not in cluster mode (cluster_enabled:0); use redis:// for "
                        "a single server"
                    ) from error
                raise TopologyError(
                    f"Cannot reach the Redis Cluster at {redact_url(self.url)!r}: {message}"
                ) from error

    async def _cluster_slots_refusal(self) -> str | None:
        """What a startup node answered CLUSTER SLOTS, when it refused the user (not when
        it is simply not in cluster mode)."""
        host, port = self.topology.hosts[0]
        options = {**_COMMON, **self.topology.options}
        options.pop("max_connections", None)
        probe = aioredis.Redis(
            host=host, port=port, credential_provider=self._credential_provider, **options
        )
        try:
            await probe.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        except (NoPermissionError, AuthenticationError) as error:
            return str(error)
        except (RedisError, OSError):
            return None
        finally:
            await probe.aclose()
        return None

    async def _check_service(self) -> None:
        """A service name the sentinels do not watch is a mistake in the URL; one whose
        primary is down right now is a failover, left to the reconnecting. Sentinels that
        answer but refuse the sentinel user are a mistake too, said as they said it."""
        assert self._sentinel is not None
        service = self.topology.service
        refusals: list[str] = []
        for sentinel, (host, port) in zip(
            self._sentinel.sentinels, self.topology.hosts, strict=True
        ):
            try:
                masters = await sentinel.sentinel_masters()
            except (NoPermissionError, AuthenticationError) as error:
                refusals.append(f"{host}:{port}: {error}")
                continue
            except (RedisError, OSError):
                continue
            # A mapping by name (RESP2's parsed reply) or a list of masters' fields.
            names = sorted(
                str(name)
                for name in (
                    masters if isinstance(masters, dict) else (m.get("name") for m in masters)
                )
            )
            if service in names:
                return
            watched = ", ".join(repr(name) for name in names) or "none"
            raise TopologyError(
                f"The sentinels at {self._sentinel_hosts()} watch no service named "
                f"{service!r} (they watch: {watched}); check the service name in "
                f"{redact_url(self.url)!r}"
            )
        if refusals:
            raise TopologyError(
                f"The sentinels refused SENTINEL MASTERS ({'; '.join(refusals)}): check "
                "sentinel_username and sentinel_password in the URL; the sentinel user "
                "needs +sentinel|masters"
            )
        raise RedisConnectionError(f"No sentinel answered at {self._sentinel_hosts()}")

    def dedicated(self) -> RedisClient:
        """A client holding one connection of the pool, for blocking reads that another
        connection may need to interrupt (``CLIENT UNBLOCK``)."""
        if self.is_memory or self.is_cluster:
            # A cluster client routes each read to the docket's shard on a connection of
            # that shard's pool, held for the read's duration.
            return self.client
        return aioredis.Redis(
            connection_pool=self.client.connection_pool, single_connection_client=True
        )

    def dedicated_wire(self, slot_key: str | None = None) -> Wire | None:
        """A lean connection of its own, for a blocking read (on a Cluster, to the shard
        serving ``slot_key``), or None without the lean path."""
        if self.wire is None:
            return None
        return self._new_wire(slot_key)

    def pubsub(self) -> Any:
        """A pub/sub connection. On a Cluster, PUBLISH reaches every node, so any node
        hears the docket's channels; the one serving the docket's slot is asked for,
        again for each new pub/sub (after a failover, the slot map names the new one)."""
        if not self.is_cluster:
            return self.client.pubsub()
        node = self.client.get_node_from_key(self.slot_key)
        name = f"{node.host}:{node.port}"
        client = self._node_clients.get(name)
        if client is None:
            options = {**_COMMON, **self.topology.options}
            options.pop("max_connections", None)
            client = self._node_clients[name] = aioredis.Redis(
                host=node.host,
                port=node.port,
                credential_provider=self._credential_provider,
                retry=_retry(),
                **options,
            )
        return client.pubsub()

    def notify_activity(self) -> None:
        if self.activity is not None:
            self.activity.notify()

    def __repr__(self) -> str:
        return f"Connection({redact_url(self.url)!r})"

    async def aclose(self) -> None:
        if self.wire is not None:
            await self.wire.aclose()
        for wire in self._wires.values():
            if wire is not None:
                await wire.aclose()
        for client in self._node_clients.values():
            await client.aclose()
        await self.client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()
