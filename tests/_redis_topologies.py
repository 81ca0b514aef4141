"""Real multi-node Redis topologies for the test suite: a Redis Cluster and a Sentinel set.

Both are made of ``RedisServer`` processes on free loopback ports, so they inherit its
guarantees: nothing here touches a shared Redis, and the processes die with the test
process (tied to it when started from the main thread, stopped at exit otherwise). The
helpers talk to the nodes with ``RedisServer.execute_command`` (plain RESP over a
socket), never through the redis-py client under test.

The constructors and the ``wait_*``, ``restart*``, ``failover`` and migration methods
block until the topology has settled (a failover is complete, a slot has moved on every
node's view); from async code call them through ``asyncio.to_thread``, but construct
the sets on the main thread. Each set holds a lock, so two threads cannot interleave a
kill with a migration.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Self

from _redis_server import HOST, RedisReplyError, RedisServer, RedisServerError, free_port

__all__ = [
    "CLUSTER_SLOTS",
    "ClusterNodeView",
    "RedisClusterSet",
    "RedisSentinelSet",
    "SlotMigration",
    "TopologyError",
    "find_redis_cli",
    "key_slot",
]

CLUSTER_SLOTS = 16384
# Redis listens for the cluster bus on the data port + 10000, so a data port above
# 55535 cannot be a cluster node at all.
_BUS_PORT_OFFSET = 10000
_MAX_CLUSTER_PORT = 65535 - _BUS_PORT_OFFSET
_POLL_INTERVAL = 0.05
_PROBE_TIMEOUT = 1.0
_LOG_TAIL = 1500
# Redis 7 syncs replicas diskless and first waits 5 s for more replicas to join the
# same transfer; every (re)started replica would pay that.
_FAST_SYNC = ("--repl-diskless-sync-delay", "0")


class TopologyError(RedisServerError):
    """A topology did not reach the state asked for; the message says which node and why."""


def find_redis_cli() -> str:
    path = shutil.which("redis-cli")
    if path is None:
        raise TopologyError(
            "redis-cli is not on PATH; the tests need it to create their own Redis Cluster "
            "(on Debian it comes with redis-server: apt-get install redis-server)"
        )
    return path


# --- key slots ------------------------------------------------------------------------------


def _crc16_xmodem(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        crc &= 0xFFFF
    return crc


def key_slot(key: str | bytes) -> int:
    """The cluster slot of ``key``, as CLUSTER KEYSLOT computes it (hash tags included:
    only the part between the first ``{`` and the next ``}`` counts, if it is not empty)."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return _crc16_xmodem(data) % CLUSTER_SLOTS


# --- small helpers --------------------------------------------------------------------------


def _text(reply: Any) -> str:
    if isinstance(reply, bytes):
        return reply.decode()
    return str(reply)


def _parse_info(reply: Any) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in _text(reply).splitlines():
        if line and not line.startswith("#") and ":" in line:
            name, _, value = line.partition(":")
            fields[name] = value
    return fields


def _pairs(reply: Any) -> dict[str, str]:
    """A flat [name, value, name, value, ...] reply (SENTINEL MASTER and friends) as a dict."""
    items = [_text(item) for item in reply]
    return dict(zip(items[::2], items[1::2], strict=True))


def _address(server: RedisServer) -> str:
    return f"{server.host}:{server.port}"


def _describe(server: RedisServer) -> str:
    tail = server._log_tail(_LOG_TAIL)
    return f"--- {server!r}, log tail:\n{tail}"


def _free_port_below(limit: int, *, avoid: Iterable[int], bus_offset: int = 0) -> int:
    """A free loopback port below ``limit`` whose ``port + bus_offset`` is free too."""
    avoided = set(avoid)
    for _ in range(500):
        port = free_port()
        if port >= limit or port in avoided or port + bus_offset in avoided:
            continue
        if bus_offset and not _port_is_free(port + bus_offset):
            continue
        return port
    raise TopologyError(f"found no free loopback port below {limit} with port+{bus_offset} free")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _close_all(servers: Iterable[RedisServer], what: str) -> None:
    """Close every one of ``servers``, the rest even when one fails; then raise."""
    errors: list[BaseException] = []
    for server in servers:
        try:
            server.close()
        except Exception as e:  # the rest must still be stopped
            errors.append(e)
    if errors:
        raise TopologyError(f"could not stop every {what}: {errors!r}")


def _wait_until(
    problems: Callable[[], list[str]],
    timeout: float,
    what: str,
    servers: Sequence[RedisServer],
) -> None:
    """Poll ``problems`` until it reports none; on timeout, raise naming the last ones.

    A node that does not answer mid-failover is one more problem to wait out, not an
    error, so the probes' own failures count as problems too."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = problems()
        except (OSError, RedisReplyError, TopologyError) as e:
            found = [f"{type(e).__name__}: {e}"]
        if not found:
            return
        if time.monotonic() >= deadline:
            details = "\n".join(_describe(s) for s in servers)
            raise TopologyError(
                f"{what} did not happen within {timeout:.0f}s; still:\n  "
                + "\n  ".join(found)
                + f"\n{details}"
            )
        time.sleep(_POLL_INTERVAL)


# --- Redis Cluster --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of CLUSTER NODES, as the node that was asked sees that node."""

    node_id: str
    host: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    link_state: str
    slot_ranges: tuple[tuple[int, int], ...]
    # Only on the asking node's own line: slot -> the node id it moves to / from.
    migrating: dict[int, str]
    importing: dict[int, str]

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def is_replica(self) -> bool:
        return "slave" in self.flags

    @property
    def failing(self) -> bool:
        """Flagged failed, or suspected of failing by the asking node."""
        return bool(self.flags & {"fail", "fail?"})

    def owns(self, slot: int) -> bool:
        return any(low <= slot <= high for low, high in self.slot_ranges)

    @property
    def slot_count(self) -> int:
        return sum(high - low + 1 for low, high in self.slot_ranges)

    @classmethod
    def parse(cls, line: str) -> ClusterNodeView:
        # <id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv>
        # <config-epoch> <link-state> <slot> ...
        fields = line.split()
        address = fields[1].split("@", 1)[0]
        host, _, port = address.rpartition(":")
        ranges: list[tuple[int, int]] = []
        migrating: dict[int, str] = {}
        importing: dict[int, str] = {}
        for token in fields[8:]:
            if token.startswith("["):
                body = token.strip("[]")
                if "->-" in body:
                    slot, _, node = body.partition("->-")
                    migrating[int(slot)] = node
                else:
                    slot, _, node = body.partition("-<-")
                    importing[int(slot)] = node
            elif "-" in token:
                low, _, high = token.partition("-")
                ranges.append((int(low), int(high)))
            else:
                ranges.append((int(token), int(token)))
        return cls(
            node_id=fields[0],
            host=host,
            port=int(port or 0),
            flags=frozenset(fields[2].split(",")),
            primary_id=None if fields[3] == "-" else fields[3],
            link_state=fields[7],
            slot_ranges=tuple(ranges),
            migrating=migrating,
            importing=importing,
        )


@dataclass(frozen=True)
class SlotMigration:
    """A slot half-way between two primaries, from ``begin_migration``."""

    slot: int
    source: RedisServer
    target: RedisServer


@dataclass(frozen=True)
class _KilledPrimary:
    node_id: str
    slot_ranges: tuple[tuple[int, int], ...]


class RedisClusterSet:
    """A Redis Cluster of ``primaries`` primaries with ``replicas_per_primary`` replicas
    each, started by the constructor and created with ``redis-cli --cluster create``.

    Node roles change under failovers, so ``primaries()``, ``replicas()`` and
    ``primary_for_slot()`` read CLUSTER NODES live instead of remembering the layout.
    The nodes keep their ports and ``nodes.conf`` across ``restart()``, so a killed
    node rejoins as itself (a killed primary that was failed over comes back as a
    replica of its successor).
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        *,
        node_timeout_ms: int = 1500,
        extra_args: Iterable[str] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        if primaries < 3:
            # redis-cli --cluster create refuses fewer, and failure detection needs a
            # majority of primaries that survives losing one.
            raise TopologyError(f"a Redis Cluster needs at least 3 primaries, not {primaries}")
        if replicas_per_primary < 0:
            raise TopologyError(f"replicas_per_primary must be >= 0, not {replicas_per_primary}")
        self.redis_cli = find_redis_cli()
        self.primary_count = primaries
        self.replicas_per_primary = replicas_per_primary
        self.node_timeout_ms = node_timeout_ms
        self.startup_timeout = startup_timeout
        # A failover takes the node timeout to detect plus an election of a second or two.
        self.failover_timeout = 15.0 + 4 * node_timeout_ms / 1000
        self._lock = threading.RLock()
        self._reserved_ports: set[int] = set()
        self._node_ids: dict[int, str] = {}
        self._killed: dict[int, _KilledPrimary] = {}
        self._closed = False
        node_args = (
            "--cluster-enabled", "yes",
            # Relative: redis-server runs in the node's own directory, which restart()
            # keeps, so the node remembers its identity and its epoch.
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            *_FAST_SYNC,
            *extra_args,
        )  # fmt: skip
        count = primaries * (1 + replicas_per_primary)
        self._nodes = tuple(
            RedisServer(node_args, port_picker=self._pick_port, startup_timeout=startup_timeout)
            for _ in range(count)
        )
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _pick_port(self) -> int:
        with self._lock:
            port = _free_port_below(
                _MAX_CLUSTER_PORT, avoid=self._reserved_ports, bus_offset=_BUS_PORT_OFFSET
            )
            self._reserved_ports.update((port, port + _BUS_PORT_OFFSET))
            return port

    def _create(self) -> None:
        started = time.monotonic()
        for node in self._nodes:
            node.start()
        command = [
            self.redis_cli,
            "--cluster", "create",
            *(_address(node) for node in self._nodes),
            "--cluster-replicas", str(self.replicas_per_primary),
            "--cluster-yes",
        ]  # fmt: skip
        remaining = max(1.0, self.startup_timeout - (time.monotonic() - started))
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=remaining,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise TopologyError(
                f"redis-cli --cluster create did not finish within {remaining:.0f}s.\n"
                f"command: {shlex.join(command)}\n"
                # TimeoutExpired carries bytes even when the run asked for text.
                f"output:\n{_text(e.stdout or b'')}{_text(e.stderr or b'')}"
            ) from e
        if result.returncode != 0:
            raise TopologyError(
                f"redis-cli --cluster create failed with code {result.returncode}.\n"
                f"command: {shlex.join(command)}\noutput:\n{result.stdout}{result.stderr}"
            )
        for node in self._nodes:
            self._node_ids[node.port] = _text(node.execute_command("CLUSTER", "MYID"))
        remaining = max(1.0, self.startup_timeout - (time.monotonic() - started))
        _wait_until(self._layout_problems, remaining, "the new cluster settling", self._nodes)

    # --- what it looks like --------------------------------------------------------------

    @property
    def nodes(self) -> tuple[RedisServer, ...]:
        """Every node, primaries and replicas alike, in the order they were created."""
        return self._nodes

    @property
    def url(self) -> str:
        """``redis+cluster://h:p,h:p,...`` naming the current primaries."""
        return "redis+cluster://" + ",".join(_address(node) for node in self.primaries())

    @property
    def seed_url(self) -> str:
        """``redis://h:p`` of one current primary: the form redis-py's
        ``RedisCluster.from_url`` takes (it discovers the other nodes itself)."""
        return f"redis://{_address(self.primaries()[0])}"

    def node_id(self, node: RedisServer) -> str:
        return self._node_ids[node.port]

    def node_by_id(self, node_id: str) -> RedisServer:
        for node in self._nodes:
            if self._node_ids.get(node.port) == node_id:
                return node
        raise TopologyError(f"no node of this cluster has the id {node_id}")

    def _node_at(self, port: int) -> RedisServer | None:
        for node in self._nodes:
            if node.port == port:
                return node
        return None

    def cluster_nodes(self, via: RedisServer | None = None) -> list[ClusterNodeView]:
        """CLUSTER NODES as ``via`` (by default the first node that answers) sees it."""
        candidates = [via] if via is not None else [n for n in self._nodes if n.running]
        failures: list[str] = []
        for node in candidates:
            try:
                reply = node.execute_command("CLUSTER", "NODES", timeout=_PROBE_TIMEOUT)
            except (OSError, RedisReplyError) as e:
                failures.append(f"{_address(node)}: {e!r}")
                continue
            return [ClusterNodeView.parse(line) for line in _text(reply).splitlines() if line]
        raise TopologyError("no cluster node answered CLUSTER NODES: " + "; ".join(failures))

    def primaries(self) -> list[RedisServer]:
        """The running primaries that serve slots, ordered by their lowest slot."""
        views = [
            v for v in self.cluster_nodes() if v.is_primary and not v.failing and v.slot_ranges
        ]
        views.sort(key=lambda v: min(low for low, _ in v.slot_ranges))
        return [n for n in (self._node_at(v.port) for v in views) if n is not None and n.running]

    def replicas(self) -> list[RedisServer]:
        """The running replicas, in creation order."""
        ports = {v.port for v in self.cluster_nodes() if v.is_replica and not v.failing}
        return [n for n in self._nodes if n.port in ports and n.running]

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        primary_id = self.node_id(primary)
        ports = {v.port for v in self.cluster_nodes() if v.primary_id == primary_id}
        return [n for n in self._nodes if n.port in ports and n.running]

    @staticmethod
    def slot_of(key: str | bytes) -> int:
        return key_slot(key)

    def primary_for_slot(self, slot: int) -> RedisServer:
        """The primary that owns ``slot`` (during a migration: the source, until it ends)."""
        for view in self.cluster_nodes():
            if view.is_primary and view.owns(slot):
                node = self._node_at(view.port)
                if node is not None:
                    return node
        raise TopologyError(f"no primary owns slot {slot}")

    def primary_for_key(self, key: str | bytes) -> RedisServer:
        return self.primary_for_slot(key_slot(key))

    def __repr__(self) -> str:
        ports = ",".join(str(node._port) for node in self._nodes)
        return f"<RedisClusterSet ports={ports}{' closed' if self._closed else ''}>"

    # --- health ----------------------------------------------------------------------------

    def _health_problems(self) -> list[str]:
        """Why the running nodes are not yet one settled cluster (empty once they are)."""
        problems: list[str] = []
        running = [n for n in self._nodes if n.running]
        running_ports = {n.port for n in running}
        layouts: dict[str, list[int]] = {}
        for node in running:
            where = _address(node)
            try:
                info = _parse_info(node.execute_command("CLUSTER", "INFO", timeout=_PROBE_TIMEOUT))
                reply = node.execute_command("CLUSTER", "NODES", timeout=_PROBE_TIMEOUT)
            except (OSError, RedisReplyError) as e:
                problems.append(f"{where} does not answer: {e!r}")
                continue
            views = [ClusterNodeView.parse(line) for line in _text(reply).splitlines() if line]
            if info.get("cluster_state") != "ok":
                problems.append(f"{where} reports cluster_state:{info.get('cluster_state')}")
            if info.get("cluster_slots_ok") != str(CLUSTER_SLOTS):
                problems.append(f"{where} reports cluster_slots_ok:{info.get('cluster_slots_ok')}")
            if len(views) != len(self._nodes):
                problems.append(f"{where} knows {len(views)} of {len(self._nodes)} nodes")
            for view in views:
                if view.flags & {"handshake", "noaddr"}:
                    problems.append(f"{where} sees {view.host}:{view.port} as {sorted(view.flags)}")
                elif view.port in running_ports and view.failing:
                    problems.append(f"{where} flags running {view.host}:{view.port} as failing")
                if "myself" in view.flags and view.is_replica:
                    replication = _parse_info(
                        node.execute_command("INFO", "replication", timeout=_PROBE_TIMEOUT)
                    )
                    if replication.get("master_link_status") != "up":
                        problems.append(f"{where} is a replica whose link to its primary is down")
            # Roles spread by gossip: a node that has just become a replica is still a
            # primary without slots to the others for a while, so compare whole layouts,
            # not only the slot owners.
            layout = sorted((v.port, v.is_replica, v.primary_id, v.slot_ranges) for v in views)
            layouts.setdefault(repr(layout), []).append(node.port)
        if len(layouts) > 1:
            groups = " vs ".join(str(ports) for ports in layouts.values())
            problems.append(f"the nodes disagree on roles or slot owners: {groups}")
        return problems

    def _layout_problems(self) -> list[str]:
        """Why the new cluster is not yet the asked-for primaries with their replicas."""
        views = self.cluster_nodes()
        serving = [v for v in views if v.is_primary and v.slot_ranges]
        problems = self._health_problems()
        if len(serving) != self.primary_count:
            problems.append(f"{len(serving)} primaries serve slots, not {self.primary_count}")
        for primary in serving:
            replicas = [v for v in views if v.primary_id == primary.node_id]
            if len(replicas) != self.replicas_per_primary:
                problems.append(
                    f"{primary.host}:{primary.port} has {len(replicas)} replicas, "
                    f"not {self.replicas_per_primary}"
                )
        return problems

    def _wait_healthy(self, timeout: float, what: str) -> None:
        _wait_until(self._health_problems, timeout, what, self._nodes)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Block until every running node reports cluster_state:ok, all slots are
        covered, the running nodes agree on roles and slot owners and see each other as up,
        and every running replica is linked to its primary."""
        with self._lock:
            self._wait_healthy(timeout, "the cluster settling")

    def ensure_running(self) -> None:
        """Undo whatever a test left behind: resume paused nodes, start stopped ones."""
        with self._lock:
            changed = False
            for node in self._nodes:
                if node.paused or not node.running:
                    node.ensure_running()
                    changed = True
            if changed:
                self._killed.clear()
                self._wait_healthy(self.failover_timeout, "the cluster healing")

    # --- faults ----------------------------------------------------------------------------

    def kill_primary(self, node: RedisServer | None = None) -> RedisServer:
        """SIGKILL a primary (by default the one owning slot 0) and return it. Its
        replica takes over after the node timeout; ``wait_for_failover`` waits for that."""
        with self._lock:
            views = {v.port: v for v in self.cluster_nodes()}
            if node is None:
                node = self.primary_for_slot(0)
            view = views.get(node.port)
            if view is None or not view.is_primary or not view.slot_ranges:
                raise TopologyError(f"{node!r} is not a primary that serves slots")
            replicas = [v for v in views.values() if v.primary_id == view.node_id and not v.failing]
            if not replicas:
                raise TopologyError(
                    f"{node!r} has no live replica, so killing it would leave its slots "
                    "uncovered for good"
                )
            self._killed[node.port] = _KilledPrimary(view.node_id, view.slot_ranges)
            node.kill()
            return node

    def wait_for_failover(
        self, old_primary: RedisServer, timeout: float | None = None
    ) -> RedisServer:
        """Block until a replica of ``old_primary`` owns all its slots on every running
        node's view, reports role:master, and the cluster is healthy again; return it."""
        with self._lock:
            killed = self._killed.get(old_primary.port)
            if killed is None:
                raise TopologyError(
                    f"{old_primary!r} was not killed with kill_primary(), so which slots "
                    "it served is unknown"
                )
            first_slot = killed.slot_ranges[0][0]
            successor: list[RedisServer] = []

            def problems() -> list[str]:
                successor.clear()
                owner = self.primary_for_slot(first_slot)
                if owner is old_primary:
                    return [f"{_address(old_primary)} still owns slot {first_slot}"]
                views = {v.port: v for v in self.cluster_nodes(owner)}
                if views[owner.port].slot_ranges != killed.slot_ranges:
                    return [f"{_address(owner)} does not own all of {killed.slot_ranges}"]
                role = _parse_info(owner.execute_command("INFO", "replication")).get("role")
                if role != "master":
                    return [f"{_address(owner)} reports role:{role}"]
                found = self._health_problems()
                if not found:
                    successor.append(owner)
                return found

            limit = self.failover_timeout if timeout is None else timeout
            _wait_until(problems, limit, f"failover from {_address(old_primary)}", self._nodes)
            return successor[0]

    def restart(self, node: RedisServer, timeout: float | None = None) -> None:
        """Start a killed or stopped node again on its port and wait until it has
        rejoined: a primary that was failed over comes back as its successor's replica."""
        with self._lock:
            node.start()
            self._killed.pop(node.port, None)
            limit = self.failover_timeout if timeout is None else timeout
            self._wait_healthy(limit, f"{_address(node)} rejoining")

    # --- slot migration --------------------------------------------------------------------

    def begin_migration(
        self, slot: int, to_node: RedisServer, *, move_keys: bool = True, batch: int = 100
    ) -> SlotMigration:
        """Mark ``slot`` MIGRATING on its owner and IMPORTING on ``to_node`` and, unless
        ``move_keys`` is false, move its keys. Until ``finish_migration`` the owner
        answers ASK for every key of the slot it no longer has."""
        with self._lock:
            source = self.primary_for_slot(slot)
            if source is to_node:
                raise TopologyError(f"slot {slot} already belongs to {to_node!r}")
            if to_node not in self.primaries():
                raise TopologyError(f"{to_node!r} is not a running primary")
            to_node.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source))
            source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(to_node))
            migration = SlotMigration(slot, source, to_node)
            if move_keys:
                self._move_keys(migration, batch)
            return migration

    def finish_migration(
        self, migration: SlotMigration, *, batch: int = 100, timeout: float = 15.0
    ) -> None:
        """Move the slot's remaining keys, give the slot to the target on every primary,
        and wait until every running node's view agrees (clients now get MOVED)."""
        with self._lock:
            self._move_keys(migration, batch)
            target_id = self.node_id(migration.target)
            # The target first: a source that let go first would answer MOVED towards
            # a target still merely importing, which sends the client back with ASK
            # until gossip catches up.
            others = [
                n
                for n in self.primaries()
                if n is not migration.target and n is not migration.source
            ]
            for node in (migration.target, migration.source, *others):
                node.execute_command("CLUSTER", "SETSLOT", migration.slot, "NODE", target_id)

            def problems() -> list[str]:
                found: list[str] = []
                for node in self._nodes:
                    if not node.running:
                        continue
                    for view in self.cluster_nodes(node):
                        if view.port == migration.target.port and not view.owns(migration.slot):
                            found.append(f"{_address(node)} does not see slot on the target")
                        if migration.slot in view.migrating or migration.slot in view.importing:
                            found.append(f"{_address(node)} still marks the slot as moving")
                return found or self._health_problems()

            _wait_until(problems, timeout, f"slot {migration.slot} moving", self._nodes)

    def migrate_slot(self, slot: int, to_node: RedisServer, *, batch: int = 100) -> None:
        """Move ``slot`` and its keys to the primary ``to_node``, all the way."""
        with self._lock:
            self.finish_migration(self.begin_migration(slot, to_node, batch=batch), batch=batch)

    def _move_keys(self, migration: SlotMigration, batch: int) -> None:
        source, target = migration.source, migration.target
        while True:
            keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", migration.slot, batch)
            if not keys:
                return
            source.execute_command(
                "MIGRATE", target.host, target.port, "", 0, 5000, "REPLACE", "KEYS", *keys
            )

    # --- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every node and remove their directories."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            _close_all(self._nodes, "cluster node")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- Redis Sentinel -------------------------------------------------------------------------


class RedisSentinelSet:
    """A primary, one replica and (by default) three Sentinels watching them under
    ``service``, started by the constructor.

    ``password`` protects the two data nodes (``--requirepass`` and ``--masterauth``;
    the Sentinels get ``sentinel auth-pass``); ``sentinel_password`` protects the
    Sentinels themselves (``requirepass``, which they also use with each other).
    Neither appears in ``url``.
    """

    def __init__(
        self,
        service: str = "mymaster",
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        startup_timeout: float = 30.0,
    ) -> None:
        if not 1 <= quorum <= sentinels:
            raise TopologyError(f"a quorum of {quorum} needs 1 to {sentinels} Sentinels")
        self.service = service
        self.password = password
        self.sentinel_password = sentinel_password
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.startup_timeout = startup_timeout
        # Detection (down-after) plus the election and the promotion; a failed election
        # is retried after twice the failover timeout, so leave room for one retry.
        self.failover_wait = 10.0 + down_after_ms / 1000 + 2 * failover_timeout_ms / 1000
        self._lock = threading.RLock()
        self._closed = False
        self._old_primary: RedisServer | None = None
        auth = () if password is None else ("--requirepass", password, "--masterauth", password)
        self._data_args = (*_FAST_SYNC, *auth)
        self._data_nodes = (
            RedisServer(self._data_args, startup_timeout=startup_timeout),
            RedisServer(self._data_args, startup_timeout=startup_timeout),
        )
        sentinel_auth = () if sentinel_password is None else ("--requirepass", sentinel_password)
        self._sentinels = tuple(
            RedisServer(
                ("--sentinel", *sentinel_auth),
                config_file="sentinel.conf",
                startup_timeout=startup_timeout,
            )
            for _ in range(sentinels)
        )
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        started = time.monotonic()
        primary, replica = self._data_nodes
        primary.start()
        replica.extra_args = (*self._data_args, "--replicaof", primary.host, str(primary.port))
        replica.start()
        # The Sentinels learn the replica from the primary's INFO, which they ask for
        # at once and then only every 10 s: link the replica first.
        _wait_until(
            lambda: self._replication_problems(primary, replica),
            self.startup_timeout,
            "the replica linking to the primary",
            self._data_nodes,
        )
        for sentinel in self._sentinels:
            (sentinel.directory / "sentinel.conf").write_text(self._sentinel_config(primary))
            sentinel.start()
        remaining = max(1.0, self.startup_timeout - (time.monotonic() - started))
        _wait_until(
            lambda: self._sentinel_problems(primary, [replica]),
            remaining,
            "the Sentinels discovering the primary, the replica and each other",
            self._all,
        )

    def _sentinel_config(self, primary: RedisServer) -> str:
        lines = [
            # Addresses stay IPs, so no lookup can slow down or confuse a failover.
            "sentinel resolve-hostnames no",
            f"sentinel monitor {self.service} {primary.host} {primary.port} {self.quorum}",
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {self.service} 1",
        ]
        if self.password is not None:
            lines.append(f"sentinel auth-pass {self.service} {self.password}")
        return "\n".join(lines) + "\n"

    @property
    def _all(self) -> tuple[RedisServer, ...]:
        return (*self._data_nodes, *self._sentinels)

    # --- what it looks like --------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+sentinel://h:p,h:p,h:p/<service>`` naming the Sentinels."""
        hosts = ",".join(_address(s) for s in self._sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    @property
    def sentinels(self) -> tuple[RedisServer, ...]:
        return self._sentinels

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``[(host, port), ...]``: what ``redis.asyncio.sentinel.Sentinel`` takes."""
        return [(s.host, s.port) for s in self._sentinels]

    @property
    def data_nodes(self) -> tuple[RedisServer, ...]:
        return self._data_nodes

    @property
    def primary(self) -> RedisServer:
        """The data node the Sentinels currently name as primary."""
        return self._data_node_at(self.current_primary_address())

    @property
    def replica(self) -> RedisServer:
        """The data node that is not the current primary."""
        primary = self.primary
        return next(n for n in self._data_nodes if n is not primary)

    def _data_node_at(self, address: tuple[str, int]) -> RedisServer:
        for node in self._data_nodes:
            if (node.host, node.port) == address:
                return node
        raise TopologyError(f"the Sentinels name {address}, which is none of the data nodes")

    def current_primary_address(self, via: RedisServer | None = None) -> tuple[str, int]:
        """``(host, port)`` from SENTINEL get-master-addr-by-name, asked of ``via`` or of
        the first Sentinel that answers."""
        candidates = [via] if via is not None else [s for s in self._sentinels if s.running]
        failures: list[str] = []
        for sentinel in candidates:
            try:
                reply = sentinel.execute_command(
                    "SENTINEL", "get-master-addr-by-name", self.service, timeout=_PROBE_TIMEOUT
                )
            except (OSError, RedisReplyError) as e:
                failures.append(f"{_address(sentinel)}: {e!r}")
                continue
            if reply is None:
                failures.append(f"{_address(sentinel)} does not monitor {self.service!r}")
                continue
            host, port = (_text(part) for part in reply)
            return host, int(port)
        raise TopologyError(
            f"no Sentinel named the primary of {self.service!r}: " + "; ".join(failures)
        )

    def __repr__(self) -> str:
        ports = ",".join(str(node._port) for node in self._all)
        return f"<RedisSentinelSet {self.service} ports={ports}{' closed' if self._closed else ''}>"

    # --- health ----------------------------------------------------------------------------

    @staticmethod
    def _replication_problems(primary: RedisServer, replica: RedisServer) -> list[str]:
        try:
            role = _parse_info(primary.execute_command("INFO", "replication", timeout=1.0))
            link = _parse_info(replica.execute_command("INFO", "replication", timeout=1.0))
        except (OSError, RedisReplyError) as e:
            return [f"a data node does not answer: {e!r}"]
        problems: list[str] = []
        if role.get("role") != "master":
            problems.append(f"{_address(primary)} reports role:{role.get('role')}")
        if link.get("master_port") != str(primary.port):
            problems.append(f"{_address(replica)} replicates port {link.get('master_port')}")
        if link.get("master_link_status") != "up":
            problems.append(
                f"{_address(replica)} has master_link_status:{link.get('master_link_status')}"
            )
        return problems

    def _sentinel_problems(
        self, primary: RedisServer, replicas: Sequence[RedisServer], *, linked: bool = True
    ) -> list[str]:
        """Why the running Sentinels do not all agree that ``primary`` is a healthy
        primary with ``replicas`` up (and, if ``linked``, reported linked to it), and
        know every other running Sentinel.

        A Sentinel asks a replica for INFO only every 10 s, so right after a failover
        it may still hold the demoted node's old role; ``linked=False`` does not wait
        for that."""
        problems: list[str] = []
        running = [s for s in self._sentinels if s.running]
        for sentinel in running:
            where = _address(sentinel)
            try:
                master = _pairs(
                    sentinel.execute_command("SENTINEL", "MASTER", self.service, timeout=1.0)
                )
                known_replicas = [
                    _pairs(r)
                    for r in sentinel.execute_command(
                        "SENTINEL", "REPLICAS", self.service, timeout=1.0
                    )
                ]
                peers = [
                    _pairs(p)
                    for p in sentinel.execute_command(
                        "SENTINEL", "SENTINELS", self.service, timeout=1.0
                    )
                ]
            except (OSError, RedisReplyError) as e:
                problems.append(f"{where} does not answer: {e!r}")
                continue
            if (master.get("ip"), master.get("port")) != (primary.host, str(primary.port)):
                problems.append(f"{where} names {master.get('ip')}:{master.get('port')}")
            if master.get("flags") != "master":
                problems.append(f"{where} flags the primary {master.get('flags')}")
            up = {
                r.get("port")
                for r in known_replicas
                if r.get("flags") == "slave" and (not linked or r.get("master-link-status") == "ok")
            }
            for replica in replicas:
                if str(replica.port) not in up:
                    state = "a linked replica" if linked else "a replica that is up"
                    problems.append(f"{where} does not see {_address(replica)} as {state}")
            peer_ports = {p.get("port") for p in peers if "s_down" not in p.get("flags", "")}
            for other in running:
                if other is not sentinel and str(other.port) not in peer_ports:
                    problems.append(f"{where} does not know Sentinel {_address(other)}")
        return problems

    def _role_problems(self, node: RedisServer, role: str) -> list[str]:
        try:
            info = _parse_info(node.execute_command("INFO", "replication", timeout=1.0))
        except (OSError, RedisReplyError) as e:
            return [f"{_address(node)} does not answer: {e!r}"]
        if info.get("role") != role:
            return [f"{_address(node)} reports role:{info.get('role')}, not {role}"]
        return []

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Block until every running data node follows the Sentinels' primary and every
        running Sentinel agrees on it, sees the running replica linked, and knows its peers."""
        with self._lock:
            self._wait_healthy(timeout, "the Sentinel set settling")

    def _wait_healthy(self, timeout: float, what: str) -> None:
        def problems() -> list[str]:
            primary = self.primary
            replicas = [n for n in self._data_nodes if n is not primary and n.running]
            found = self._role_problems(primary, "master")
            for replica in replicas:
                found += self._replication_problems(primary, replica)
            return found or self._sentinel_problems(primary, replicas)

        _wait_until(problems, timeout, what, self._all)

    def ensure_running(self) -> None:
        """Undo whatever a test left behind: resume paused nodes, start stopped ones
        (a data node comes back as a replica of the current primary)."""
        with self._lock:
            changed = False
            for node in self._all:
                if node.paused:
                    node.resume()
                    changed = True
            for sentinel in self._sentinels:
                if not sentinel.running:
                    sentinel.start()
                    changed = True
            for node in self._data_nodes:
                if not node.running:
                    self._start_as_replica(node)
                    changed = True
            if changed:
                self._old_primary = None
                self._wait_healthy(self.failover_wait, "the Sentinel set healing")

    # --- faults ----------------------------------------------------------------------------

    def kill_primary(self) -> RedisServer:
        """SIGKILL the current primary and return it; the Sentinels notice after
        ``down_after_ms`` and promote the replica (see ``wait_for_failover``)."""
        with self._lock:
            primary = self.primary
            primary.kill()
            self._old_primary = primary
            return primary

    def wait_for_failover(
        self, old_address: tuple[str, int] | None = None, timeout: float | None = None
    ) -> tuple[str, int]:
        """Block until every running Sentinel names a primary other than ``old_address``
        (by default the one ``kill_primary`` killed) and that node reports role:master;
        return its address."""
        with self._lock:
            if old_address is None:
                if self._old_primary is None:
                    raise TopologyError("no primary was killed; pass old_address")
                old_address = (self._old_primary.host, self._old_primary.port)
            limit = self.failover_wait if timeout is None else timeout
            return self._wait_for_new_primary(old_address, limit)

    def _wait_for_new_primary(
        self, old_address: tuple[str, int], timeout: float
    ) -> tuple[str, int]:
        result: list[tuple[str, int]] = []

        def problems() -> list[str]:
            result.clear()
            found: list[str] = []
            named: set[tuple[str, int]] = set()
            for sentinel in self._sentinels:
                if sentinel.running:
                    try:
                        named.add(self.current_primary_address(sentinel))
                    except TopologyError as e:
                        found.append(str(e))
            if found:
                return found
            if len(named) != 1:
                return [f"the Sentinels name different primaries: {sorted(named)}"]
            (address,) = named
            if address == old_address:
                return [f"the Sentinels still name {address}"]
            new_primary = self._data_node_at(address)
            found = self._role_problems(new_primary, "master")
            if found:
                return found
            replicas = [n for n in self._data_nodes if n is not new_primary and n.running]
            for replica in replicas:
                self._demote_if_stale(replica, new_primary)
                found += self._replication_problems(new_primary, replica)
            found = found or self._sentinel_problems(new_primary, replicas, linked=False)
            if not found:
                result.append(address)
            return found

        _wait_until(problems, timeout, f"failover away from {old_address}", self._all)
        return result[0]

    def failover(self, timeout: float | None = None) -> tuple[str, int]:
        """Ask a Sentinel for a graceful SENTINEL FAILOVER and return the new primary's
        address once every Sentinel names it. Retries while the Sentinel has no replica
        it trusts yet (NOGOODSLAVE) or is still busy with a previous failover (INPROG)."""
        with self._lock:
            limit = self.failover_wait if timeout is None else timeout
            deadline = time.monotonic() + limit
            old_address = self.current_primary_address()
            sentinel = next(s for s in self._sentinels if s.running)
            while True:
                try:
                    sentinel.execute_command("SENTINEL", "FAILOVER", self.service)
                    break
                except RedisReplyError as e:
                    transient = str(e).startswith(("NOGOODSLAVE", "INPROG"))
                    if not transient or time.monotonic() >= deadline:
                        raise TopologyError(
                            f"SENTINEL FAILOVER on {_address(sentinel)} failed: {e}"
                        ) from e
                    time.sleep(0.2)
            remaining = max(1.0, deadline - time.monotonic())
            return self._wait_for_new_primary(old_address, remaining)

    def restart_old_primary(self, timeout: float | None = None) -> RedisServer:
        """Start the primary ``kill_primary`` killed again, as a replica of the current
        primary, and wait until the Sentinels see it linked; return it."""
        with self._lock:
            if self._old_primary is None:
                raise TopologyError("no primary was killed, so there is none to restart")
            node = self._old_primary
            self._start_as_replica(node)
            self._old_primary = None
            limit = self.failover_wait if timeout is None else timeout
            self._wait_healthy(limit, f"{_address(node)} rejoining as a replica")
            return node

    def _demote_if_stale(self, node: RedisServer, primary: RedisServer) -> None:
        # After SENTINEL FAILOVER the old primary stays a primary until a Sentinel,
        # which re-reads replicas' INFO only every 10 s and then waits 8 s more,
        # converts it. Do now what it would do then, so the set settles at once.
        info = _parse_info(node.execute_command("INFO", "replication", timeout=_PROBE_TIMEOUT))
        if info.get("role") == "master":
            node.execute_command("REPLICAOF", primary.host, primary.port)

    def _start_as_replica(self, node: RedisServer) -> None:
        # Started with --replicaof the current primary, so the node never serves as a
        # stale primary: Sentinel would only demote it after about 8 s.
        host, port = self.current_primary_address()
        node.extra_args = (*self._data_args, "--replicaof", host, str(port))
        node.start()

    # --- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process and remove their directories."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # Sentinels first, so none starts a failover while the data nodes go down.
            _close_all((*self._sentinels, *self._data_nodes), "process of the set")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
