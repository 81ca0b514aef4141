"""The topology fixtures themselves: a real Redis Cluster and a real Sentinel set, checked
with plain redis-py (never docket), so a failure here points at the harness."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from _redis_server import RedisReplyError, RedisServer
from _redis_topologies import RedisClusterSet, RedisSentinelSet
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

pytestmark = pytest.mark.topology


def _asking_calls(server: RedisServer) -> int:
    """How many ASKING commands ``server`` has run: each is a client following an ASK.
    (Not errorstats on the source: whether redirections count as errors there
    differs between Redis versions.)"""
    info = server.execute_command("INFO", "commandstats").decode()
    match = re.search(r"^cmdstat_asking:calls=(\d+)", info, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _mapped_port(client: RedisCluster, slot: int) -> int:
    """The port of the primary the client's own slot map sends ``slot`` to."""
    return int(client.nodes_manager.slots_cache[slot][0].port)


def _sentinel_client(
    topology: RedisSentinelSet, *, password: str | None = None, sentinel_password: str | None = None
) -> Sentinel:
    sentinel_kwargs = {"password": sentinel_password, "socket_timeout": 2.0}
    # redis-py leaves Sentinel.__init__ unannotated.
    return Sentinel(  # type: ignore[no-untyped-call]
        topology.sentinel_addresses,
        sentinel_kwargs=sentinel_kwargs,
        password=password,
        socket_timeout=2.0,
    )


@pytest_asyncio.fixture
async def cluster_client(redis_cluster: RedisClusterSet) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(redis_cluster.seed_url)
    try:
        yield client
    finally:
        await client.aclose()


# --- Redis Cluster ------------------------------------------------------------------------


def test_cluster_shape(redis_cluster: RedisClusterSet) -> None:
    primaries, replicas = redis_cluster.primaries(), redis_cluster.replicas()
    assert len(primaries) == 3
    assert len(replicas) == 3
    assert set(primaries) | set(replicas) == set(redis_cluster.nodes)
    for node in redis_cluster.nodes:
        assert node.host == "127.0.0.1"
        # The cluster bus listens on port + 10000, so the data port must leave room.
        assert node.port != 6379 and node.port < 55535
    for replica in replicas:
        info = replica.execute_command("INFO", "replication").decode()
        assert "role:slave" in info and "master_link_status:up" in info
    hosts = ",".join(f"127.0.0.1:{p.port}" for p in primaries)
    assert redis_cluster.url == f"redis+cluster://{hosts}"
    assert redis_cluster.seed_url == f"redis://127.0.0.1:{primaries[0].port}"
    for node in redis_cluster.nodes:
        info = node.execute_command("CLUSTER", "INFO").decode()
        assert "cluster_state:ok" in info and "cluster_slots_ok:16384" in info


@pytest.mark.parametrize(
    "key",
    ["foo", "user:1000", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "{bar", "", "é"],
)
def test_slot_of_matches_cluster_keyslot(redis_cluster: RedisClusterSet, key: str) -> None:
    node = redis_cluster.nodes[0]
    assert redis_cluster.slot_of(key) == node.execute_command("CLUSTER", "KEYSLOT", key)
    assert redis_cluster.slot_of(key.encode()) == redis_cluster.slot_of(key)


async def test_key_set_through_the_cluster_lives_on_its_slots_primary(
    redis_cluster: RedisClusterSet, cluster_client: RedisCluster
) -> None:
    key = "topology:owned"
    await cluster_client.set(key, "here")

    owner = redis_cluster.primary_for_slot(redis_cluster.slot_of(key))
    assert owner.execute_command("GET", key) == b"here"
    for other in redis_cluster.primaries():
        if other is not owner:
            with pytest.raises(RedisReplyError, match=rf"^MOVED \d+ 127\.0\.0\.1:{owner.port}$"):
                other.execute_command("GET", key)


async def test_failover_promotes_the_replica_and_the_cluster_answers_again(
    private_redis_cluster: Callable[..., RedisClusterSet],
) -> None:
    # Started on the main thread, not through to_thread: only processes forked there
    # are tied to the test process's life (see _redis_server._can_tie_to_parent).
    cluster = private_redis_cluster()
    client = RedisCluster.from_url(cluster.seed_url)
    try:
        key = "topology:survives"
        owner = cluster.primary_for_slot(cluster.slot_of(key))
        # Replication is asynchronous: make sure the replica has the key before the kill
        # (WAIT counts the replicas that have its own connection's writes, so the write
        # goes on that connection too).
        assert owner.execute_commands(("SET", key, "kept"), ("WAIT", 1, 2000)) == ["OK", 1]
        (replica,) = cluster.replicas_of(owner)

        killed = await asyncio.to_thread(cluster.kill_primary, owner)
        promoted = await asyncio.to_thread(cluster.wait_for_failover, killed)

        assert killed is owner and not killed.running
        assert promoted is replica
        assert cluster.primary_for_slot(cluster.slot_of(key)) is promoted
        assert f"127.0.0.1:{killed.port}" not in cluster.url
        assert await client.get(key) == b"kept"
        await client.set(key, "after")

        await asyncio.to_thread(cluster.restart, killed)
        assert cluster.replicas_of(promoted) == [killed]
        assert "role:slave" in killed.execute_command("INFO", "replication").decode()
        assert await client.get(key) == b"after"
    finally:
        await client.aclose()


async def test_migration_in_halves_asks_then_moves(
    redis_cluster: RedisClusterSet, cluster_client: RedisCluster
) -> None:
    key = "topology:moving"
    slot = redis_cluster.slot_of(key)
    await cluster_client.set(key, "v")  # the client now maps the slot to its owner
    source = redis_cluster.primary_for_slot(slot)
    target = next(p for p in redis_cluster.primaries() if p is not source)
    askings = _asking_calls(target)

    migration = await asyncio.to_thread(redis_cluster.begin_migration, slot, target)
    try:
        # The key has moved but the slot has not: the source sends the client on with
        # ASK, and the client asks the target for that one command, keeping its map.
        assert redis_cluster.primary_for_slot(slot) is source
        with pytest.raises(RedisReplyError, match=rf"^ASK {slot} 127\.0\.0\.1:{target.port}$"):
            source.execute_command("GET", key)
        assert await cluster_client.get(key) == b"v"
        assert _asking_calls(target) > askings
        assert _mapped_port(cluster_client, slot) == source.port

        await asyncio.to_thread(redis_cluster.finish_migration, migration)

        # Now the source answers MOVED, and the client follows it and remaps the slot.
        assert redis_cluster.primary_for_slot(slot) is target
        with pytest.raises(RedisReplyError, match=rf"^MOVED {slot} 127\.0\.0\.1:{target.port}$"):
            source.execute_command("GET", key)
        assert await cluster_client.get(key) == b"v"
        assert _mapped_port(cluster_client, slot) == target.port
        assert target.execute_command("GET", key) == b"v"
    finally:
        # The cluster is shared by the process's tests: give the slot back.
        if redis_cluster.primary_for_slot(slot) is target:
            await asyncio.to_thread(redis_cluster.migrate_slot, slot, source)
        else:
            await asyncio.to_thread(redis_cluster.finish_migration, migration)
            await asyncio.to_thread(redis_cluster.migrate_slot, slot, source)
    assert redis_cluster.primary_for_slot(slot) is source
    assert await cluster_client.get(key) == b"v"


# --- Redis Sentinel -----------------------------------------------------------------------


async def test_sentinel_shape(redis_sentinel: RedisSentinelSet) -> None:
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in redis_sentinel.sentinels)
    assert redis_sentinel.url == f"redis+sentinel://{hosts}/mymaster"
    primary, replica = redis_sentinel.primary, redis_sentinel.replica
    assert redis_sentinel.current_primary_address() == ("127.0.0.1", primary.port)
    assert "role:master" in primary.execute_command("INFO", "replication").decode()
    assert "role:slave" in replica.execute_command("INFO", "replication").decode()
    assert all(n.port != 6379 for n in (*redis_sentinel.data_nodes, *redis_sentinel.sentinels))

    sentinel = _sentinel_client(redis_sentinel)
    assert await sentinel.discover_master("mymaster") == ("127.0.0.1", primary.port)
    assert await sentinel.discover_slaves("mymaster") == [("127.0.0.1", replica.port)]
    client = sentinel.master_for("mymaster")
    try:
        await client.set("topology:sentinel", "1")
        assert primary.execute_command("GET", "topology:sentinel") == b"1"
    finally:
        await client.aclose()


async def test_sentinel_failover_changes_the_primary(
    private_redis_sentinel: Callable[..., RedisSentinelSet],
) -> None:
    # With passwords on both the data nodes and the Sentinels, to cover those options.
    topology = private_redis_sentinel(password="data-secret", sentinel_password="sentinel-secret")
    sentinel = _sentinel_client(
        topology, password="data-secret", sentinel_password="sentinel-secret"
    )
    client = sentinel.master_for("mymaster")
    try:
        first = topology.current_primary_address()
        # On one connection: WAIT waits for that connection's own writes.
        assert topology.primary.execute_commands(("SET", "k", "before"), ("WAIT", 1, 2000)) == [
            "OK",
            1,
        ]

        await asyncio.to_thread(topology.kill_primary)
        second = await asyncio.to_thread(topology.wait_for_failover)

        assert second != first
        assert await sentinel.discover_master("mymaster") == second
        assert await client.get("k") == b"before"

        await asyncio.to_thread(topology.restart_old_primary)
        assert topology.replica.port == first[1]
        await client.set("k", "after")
        # Replication is asynchronous: under load the restarted replica may not have
        # the write yet, and a failover to it would lose it (that is Redis, not us).
        await _replicated(topology.replica, "k", b"after")

        # A graceful failover hands the primary back to the restarted node.
        third = await asyncio.to_thread(topology.failover)
        assert third == first
        assert topology.primary.port == first[1]
        assert await client.get("k") == b"after"
    finally:
        await client.aclose()
        for connection in sentinel.sentinels:
            await connection.aclose()


async def _replicated(replica: RedisServer, key: str, value: bytes, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while replica.execute_command("GET", key) != value:
        assert time.monotonic() < deadline, f"{replica!r} never got {key}={value!r}"
        await asyncio.sleep(0.05)
