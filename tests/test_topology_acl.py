"""The least-privilege ACL of docs/reliability.md on a Redis Cluster and on a Sentinel set.

tests/test_acl.py runs a producer and a worker under that line on one server; here the
same line, defined on every node of a Cluster (ACLs are not propagated between nodes), and
on the primary and the replica of a Sentinel set whose sentinels have a user of their own,
given to docket with ``sentinel_username`` / ``sentinel_password``.

What the rules must allow beyond the data commands, found from the servers' ACL LOG:
on a Cluster only ``CLUSTER SLOTS`` (redis-py reads the slot map with it; ``ASKING``
during a slot move is a ``@connection`` command), which ``+@all -@dangerous`` allows; on
the sentinels only ``SENTINEL MASTERS`` (``PING`` is not needed). A user lacking those
is refused when the docket opens; what it is told is pinned at the end of each part.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from _failover import run_through_fault
from _helpers import fast_worker
from _redis_server import RedisServer
from _redis_topologies import RedisClusterSet, RedisSentinelSet
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from docket import Docket, ExecutionState
from docket._redis.client import TopologyError

ROOT = Path(__file__).resolve().parent.parent
APP_PASSWORD = "s3cret-app"
DATA_ADMIN_PASSWORD = "data-admin"
SENTINEL_ADMIN_PASSWORD = "sentinel-admin"
WATCH_PASSWORD = "s3cret-watch"
# What a sentinel user needs: the client asks the sentinels only SENTINEL MASTERS (to
# check the service name when a docket opens, and to find the primary at each connect).
SENTINEL_USER_RULES = ("+sentinel|masters",)
# The documented line's one refusal (see docs/reliability.md): a stopping worker's
# CLIENT UNBLOCK, which a Cluster client does not send at all.
EXPECTED_REFUSALS = {"client|unblock"}

pytestmark = [pytest.mark.topology, pytest.mark.timeout(120)]


def _documented_acl() -> str:
    """The ACL line as docs/reliability.md prints it (for the docket ``myapp``)."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    (line,) = re.findall(r"^user docket-app .*$", text, flags=re.MULTILINE)
    return line


def _app_rules(docket_name: str, *extra: str) -> list[str]:
    """The documented line's rules for the docket ``docket_name`` (its ``{myapp}``
    patterns renamed), with the test's password and any ``extra`` rules after them."""
    words = _documented_acl().split()[2:]  # after "user docket-app"
    rules = [
        f">{APP_PASSWORD}" if w.startswith(">") else w.replace("{myapp}", f"{{{docket_name}}}")
        for w in words
    ]
    return [*rules, *extra]


def _set_user(nodes: Sequence[RedisServer], user: str, rules: Sequence[str]) -> None:
    for node in nodes:
        assert node.execute_command("ACL", "SETUSER", user, "reset", *rules) == "OK"


def _user() -> str:
    return f"app-{uuid.uuid4().hex[:8]}"


def _refused(nodes: Sequence[RedisServer], user: str) -> set[str]:
    """What the nodes' ACL LOG says they refused ``user`` (commands, keys, channels)."""
    found: set[str] = set()
    for node in nodes:
        for entry in node.execute_command("ACL", "LOG"):
            fields = dict(zip(entry[::2], entry[1::2], strict=True))
            if fields.get(b"username") == user.encode():
                found.add(fields[b"object"].decode())
    return found


async def _noop() -> None:
    pass


async def _end_to_end(url: str, docket_name: str, caplog: pytest.LogCaptureFixture) -> None:
    """Add a task and have a worker run it, cancel a scheduled one, and strike a task
    (heard by another docket over pub/sub) so that the worker skips it; nothing along
    the way is refused."""
    caplog.set_level("WARNING", logger="docket")
    ran: list[int] = []

    async def record(n: int) -> int:
        ran.append(n)
        return n * 2

    async def later() -> None:
        raise AssertionError("cancelled before it was due")

    async with (
        Docket(name=docket_name, url=url) as producer,
        Docket(name=docket_name, url=url) as consumer,
    ):
        assert consumer.engine.connection.wire is not None  # the lean path, under the ACL
        consumer.register(record)
        done = await producer.add(record)(21)
        cancelled = await producer.add(later, when=datetime.now(UTC) + timedelta(hours=1))()
        await producer.cancel(cancelled.key)

        await producer.strike("record", "n", "==", 1)
        async with asyncio.timeout(10):
            while not consumer.strike_list.is_stricken("record", {"n": 1}):
                await asyncio.sleep(0.02)
        await producer.add(record)(1)

        async with fast_worker(consumer) as worker:
            await worker.run_until_finished()
            assert [w.name for w in await consumer.workers()] == [worker.name]
        assert await done.get_result() == 42
        assert ran == [21]
        await cancelled.sync()
        assert cancelled.state == ExecutionState.CANCELLED
        await producer.restore("record", "n", "==", 1)
    refused = [r.getMessage() for r in caplog.records if "NOPERM" in r.getMessage()]
    assert refused == []


# --- Cluster --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterSet]:
    """This module's own cluster (3 primaries with a replica each): the tests add users
    to every node, which the suite's shared cluster should not carry."""
    with RedisClusterSet() as cluster:
        yield cluster


def _cluster_url(cluster: RedisClusterSet, user: str) -> str:
    return cluster.url.replace("redis+cluster://", f"redis+cluster://{user}:{APP_PASSWORD}@")


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param((), id="documented"),
        # The one CLUSTER subcommand the client needs, and nothing else of CLUSTER.
        pytest.param(("-cluster", "+cluster|slots"), id="cluster-slots-only"),
    ],
)
async def test_the_documented_acl_on_every_node_runs_a_docket_on_a_cluster(
    cluster: RedisClusterSet,
    docket_name: str,
    caplog: pytest.LogCaptureFixture,
    extra: tuple[str, ...],
) -> None:
    user = _user()
    _set_user(cluster.nodes, user, _app_rules(docket_name, *extra))
    await _end_to_end(_cluster_url(cluster, user), docket_name, caplog)
    assert _refused(cluster.nodes, user) == set()


async def test_the_acl_carries_a_docket_through_a_slot_move(
    cluster: RedisClusterSet, docket_name: str
) -> None:
    # Half-way through, the client hears ASK (and sends ASKING) and TRYAGAIN; then MOVED.
    user = _user()
    _set_user(cluster.nodes, user, _app_rules(docket_name))
    prefix = f"{{{docket_name}}}"
    slot = cluster.slot_of(prefix)
    source = cluster.primary_for_key(prefix)
    target = next(node for node in cluster.primaries() if node is not source)

    async def reshard() -> None:
        migration = await asyncio.to_thread(cluster.begin_migration, slot, target)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(cluster.finish_migration, migration)

    url = _cluster_url(cluster, user)
    ledger = await run_through_fault(url, docket_name, reshard, per_phase=30, replicated=False)
    assert cluster.primary_for_key(prefix) is target
    assert not ledger.lost, f"acknowledged but never run: {sorted(ledger.lost)[:10]}"
    assert _refused(cluster.nodes, user) == set()


async def test_the_acl_keeps_a_cluster_user_out_of_other_dockets(
    cluster: RedisClusterSet, docket_name: str
) -> None:
    user = _user()
    _set_user(cluster.nodes, user, _app_rules(docket_name))
    other = f"{docket_name}-other"
    async with Docket(name=other, url=cluster.url) as theirs:
        await theirs.add(_noop, when=datetime.now(UTC) + timedelta(hours=1), key="theirs")()
    async with Docket(name=docket_name, url=_cluster_url(cluster, user)) as mine:
        client = mine.engine.connection.client
        with pytest.raises(NoPermissionError):
            await client.zrange(f"{{{other}}}:queue", 0, -1)
        with pytest.raises(NoPermissionError):
            await client.publish(f"{{{other}}}:cancel", "theirs")
    owner = cluster.primary_for_key(f"{{{other}}}")
    assert owner.execute_command("ZRANGE", f"{{{other}}}:queue", 0, -1) == [b"theirs"]


async def test_the_acl_user_must_exist_on_every_node_of_a_cluster(
    cluster: RedisClusterSet, docket_name: str
) -> None:
    # Defined on the docket's own shard only, and the URL names another node: that node
    # refuses the login the client needs to read the slot map, and the docket says so.
    user = _user()
    owner = cluster.primary_for_key(f"{{{docket_name}}}")
    elsewhere = [n for n in cluster.primaries() if n is not owner]
    _set_user([owner], user, _app_rules(docket_name))
    url = f"redis+cluster://{user}:{APP_PASSWORD}@{elsewhere[0].host}:{elsewhere[0].port}"
    with pytest.raises(Exception) as raised:
        async with Docket(name=docket_name, url=url):
            pass
    message = str(raised.value)
    assert "Cannot reach the Redis Cluster" in message, message
    assert "invalid username-password pair" in message, message


async def test_a_cluster_user_without_cluster_slots_is_refused_when_the_docket_opens(
    cluster: RedisClusterSet, docket_name: str
) -> None:
    user = _user()
    _set_user(cluster.nodes, user, _app_rules(docket_name, "-cluster"))
    with pytest.raises(TopologyError) as raised:
        async with Docket(name=docket_name, url=_cluster_url(cluster, user)):
            pass
    assert _refused(cluster.primaries(), user) == {"cluster|slots"}
    # Told what the node said, not "not in cluster mode" (redis-py reports any error
    # reply to CLUSTER SLOTS as "Cluster mode is not enabled on this node").
    message = str(raised.value)
    assert "refused CLUSTER SLOTS" in message and "no permissions" in message, message
    assert "+cluster|slots" in message, message
    assert "not in cluster mode" not in message, message


# --- Sentinel -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentinels() -> Iterator[RedisSentinelSet]:
    """This module's own Sentinel set: the data nodes' default user and the sentinels'
    are protected by passwords of their own (the test's administration, never given to
    docket); the tests add docket's users beside them."""
    with RedisSentinelSet(
        password=DATA_ADMIN_PASSWORD, sentinel_password=SENTINEL_ADMIN_PASSWORD
    ) as sentinels:
        yield sentinels


def _sentinel_url(sentinels: RedisSentinelSet, user: str, watcher: str) -> str:
    hosts = ",".join(f"{s.host}:{s.port}" for s in sentinels.sentinels)
    return (
        f"redis+sentinel://{user}:{APP_PASSWORD}@{hosts}/{sentinels.service}/0"
        f"?sentinel_username={watcher}&sentinel_password={WATCH_PASSWORD}"
    )


def _sentinel_user(sentinels: RedisSentinelSet, *rules: str) -> str:
    watcher = f"watch-{uuid.uuid4().hex[:8]}"
    _set_user(sentinels.sentinels, watcher, ["on", f">{WATCH_PASSWORD}", *rules])
    return watcher


async def test_the_documented_acl_runs_a_docket_on_sentinel(
    sentinels: RedisSentinelSet, docket_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    user = _user()
    _set_user(sentinels.data_nodes, user, _app_rules(docket_name))
    watcher = _sentinel_user(sentinels, *SENTINEL_USER_RULES)
    await _end_to_end(_sentinel_url(sentinels, user, watcher), docket_name, caplog)
    assert _refused(sentinels.data_nodes, user) <= EXPECTED_REFUSALS
    assert _refused(sentinels.sentinels, watcher) == set()


async def test_the_sentinel_user_can_do_nothing_but_find_the_primary(
    sentinels: RedisSentinelSet,
) -> None:
    watcher = _sentinel_user(sentinels, *SENTINEL_USER_RULES)
    sentinel = sentinels.sentinels[0]
    client = Redis(
        host=sentinel.host, port=sentinel.port, username=watcher, password=WATCH_PASSWORD
    )
    try:
        assert sentinels.service in await client.sentinel_masters()
        for command in (
            ("SENTINEL", "FAILOVER", sentinels.service),
            ("SENTINEL", "SET", sentinels.service, "quorum", "1"),
            ("SENTINEL", "REMOVE", sentinels.service),
            ("ACL", "LIST"),
        ):
            with pytest.raises(NoPermissionError):
                await client.execute_command(*command)
    finally:
        await client.aclose()


async def test_the_users_on_both_data_nodes_carry_a_docket_through_a_failover(
    sentinels: RedisSentinelSet, docket_name: str
) -> None:
    user = _user()
    _set_user(sentinels.data_nodes, user, _app_rules(docket_name))
    watcher = _sentinel_user(sentinels, *SENTINEL_USER_RULES)
    old = sentinels.current_primary_address()

    async def fail_over() -> None:
        await asyncio.to_thread(sentinels.failover)

    url = _sentinel_url(sentinels, user, watcher)
    ledger = await run_through_fault(url, docket_name, fail_over, per_phase=30)
    assert sentinels.current_primary_address() != old
    assert not ledger.lost, f"acknowledged but never run: {sorted(ledger.lost)[:10]}"
    assert _refused(sentinels.data_nodes, user) <= EXPECTED_REFUSALS
    assert _refused(sentinels.sentinels, watcher) == set()


async def test_a_sentinel_user_without_sentinel_masters_is_refused_when_the_docket_opens(
    sentinels: RedisSentinelSet, docket_name: str
) -> None:
    # get-master-addr-by-name is what other clients ask; this one asks SENTINEL MASTERS.
    user = _user()
    _set_user(sentinels.data_nodes, user, _app_rules(docket_name))
    watcher = _sentinel_user(sentinels, "+sentinel|get-master-addr-by-name", "+ping")
    with pytest.raises(ConnectionError) as raised:
        async with Docket(name=docket_name, url=_sentinel_url(sentinels, user, watcher)):
            pass
    assert _refused(sentinels.sentinels, watcher) == {"sentinel|masters"}
    # Every sentinel answered (NOPERM): told so, not "No sentinel answered".
    message = str(raised.value)
    assert "refused SENTINEL MASTERS" in message and "+sentinel|masters" in message, message
    assert "No sentinel answered" not in message, message


@pytest.mark.parametrize(
    "rules, password",
    [
        pytest.param(("+sentinel|get-master-addr-by-name",), WATCH_PASSWORD, id="noperm"),
        pytest.param(SENTINEL_USER_RULES, "wrong", id="wrongpass"),
    ],
)
async def test_a_refused_sentinel_user_is_told_what_the_sentinels_said(
    sentinels: RedisSentinelSet, docket_name: str, rules: tuple[str, ...], password: str
) -> None:
    user = _user()
    _set_user(sentinels.data_nodes, user, _app_rules(docket_name))
    watcher = _sentinel_user(sentinels, *rules)
    url = _sentinel_url(sentinels, user, watcher).replace(
        f"sentinel_password={WATCH_PASSWORD}", f"sentinel_password={password}"
    )
    with pytest.raises(Exception) as raised:
        async with Docket(name=docket_name, url=url):
            pass
    # What a sentinel answered, not what the URL says (it names sentinel_password).
    message = str(raised.value).replace(url, "").replace("sentinel_password", "")
    said = ("NOPERM", "no permissions", "WRONGPASS", "invalid username-password")
    assert any(words in message for words in said), message


async def test_a_data_user_missing_on_the_replica_fails_after_a_failover(
    sentinels: RedisSentinelSet, docket_name: str
) -> None:
    """The documentation's "define the user on the primary and on every replica", shown:
    the user defined on the primary alone is refused by the promoted replica."""
    user = _user()
    _set_user([sentinels.primary], user, _app_rules(docket_name))
    watcher = _sentinel_user(sentinels, *SENTINEL_USER_RULES)
    async with Docket(name=docket_name, url=_sentinel_url(sentinels, user, watcher)) as docket:
        await docket.add(_noop)()
    await asyncio.to_thread(sentinels.failover)
    with pytest.raises(Exception) as raised:
        async with Docket(name=docket_name, url=_sentinel_url(sentinels, user, watcher)) as d:
            await d.add(_noop)()
    message = str(raised.value)
    assert "WRONGPASS" in message or "invalid username-password" in message, message
