"""The least-privilege ACL docs/reliability.md gives for one docket, on a real server: a
producer and a worker do all their work under it (add, schedule, run, retry, cancel,
results, strikes, snapshots, following a task), and it keeps them out of every other
docket's keys and channels and away from FLUSHALL."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from _helpers import fast_worker
from _redis_server import RedisServer
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from docket import Docket, ExecutionState, Retry

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-app"

pytestmark = pytest.mark.timeout(60)


def _documented_acl() -> str:
    """The ACL line as docs/reliability.md prints it (for the docket ``myapp``)."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    (line,) = re.findall(r"^user docket-app .*$", text, flags=re.MULTILINE)
    return line


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer.start_new() as server:
        words = _documented_acl().split()[1:]
        words = [f">{PASSWORD}" if word.startswith(">") else word for word in words]
        assert server.execute_command("ACL", "SETUSER", *words) == "OK"
        yield server


@pytest.fixture
async def admin(server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()


def _app_url(server: RedisServer) -> str:
    return f"redis://docket-app:{PASSWORD}@{server.host}:{server.port}/0"


async def test_the_documented_acl_is_the_one_tested() -> None:
    assert _documented_acl().startswith("user docket-app on >")
    assert "~{myapp}:*" in _documented_acl() and "&{myapp}:*" in _documented_acl()


async def test_a_producer_and_a_worker_do_all_their_work_under_the_acl(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="docket")
    attempts: list[int] = []

    async def flaky(n: int, retry: Retry = Retry(attempts=2)) -> int:
        attempts.append(n)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return n * 2

    async def later() -> None:
        raise AssertionError("cancelled before it was due")

    async with Docket(name="myapp", url=_app_url(server)) as docket:
        done = await docket.add(flaky)(21)
        cancelled = await docket.add(later, when=datetime.now(UTC) + timedelta(hours=1))()
        await docket.cancel(cancelled.key)
        await docket.strike("never_added")
        await docket.restore("never_added")
        snapshot = await docket.snapshot()
        assert [e.key for e in snapshot.future] == [done.key]
        async with fast_worker(docket) as worker:
            await worker.run_until_finished()
            assert [w.name for w in await docket.workers()] == [worker.name]
        assert await done.get_result() == 42
        assert attempts == [21, 21]
        await cancelled.sync()
        assert cancelled.state == ExecutionState.CANCELLED
        assert await docket.clear() == 0
    # Nothing the worker's loops do (heartbeats, leases, the scheduler, cancellation)
    # was refused along the way, either.
    refused = [r.getMessage() for r in caplog.records if "NOPERM" in r.getMessage()]
    assert refused == []


async def test_the_acl_keeps_the_app_out_of_other_dockets_and_flushall(
    server: RedisServer, admin: Redis
) -> None:
    async with Docket(name="other", url=server.url) as other:
        await other.add(_noop, when=datetime.now(UTC) + timedelta(hours=1), key="theirs")()
    app = Redis.from_url(_app_url(server))
    try:
        with pytest.raises(NoPermissionError):
            await app.hgetall("{other}:task:theirs")
        with pytest.raises(NoPermissionError):
            await app.zadd("{other}:queue", {"planted": 0})
        with pytest.raises(NoPermissionError):
            await app.publish("{other}:cancel", "theirs")
        with pytest.raises(NoPermissionError):
            await app.flushall()
        with pytest.raises(NoPermissionError):
            await app.execute_command("KEYS", "*")
    finally:
        await app.aclose()
    # The other docket is as it was.
    assert await admin.zrange("{other}:queue", 0, -1) == [b"theirs"]
    async with Docket(name="myapp", url=_app_url(server)) as mine:
        with pytest.raises(NoPermissionError):
            await mine.engine.connection.client.get("{other}:queue")


async def _noop() -> None:
    pass


def _documented_partition_pattern() -> str:
    """The key pattern docs/production.md adds for a partitioned ``myapp``."""
    text = (ROOT / "docs" / "production.md").read_text()
    (pattern,) = re.findall(r"add\s+`(~\{myapp/\*)`", text)
    return pattern


async def test_a_partitioned_docket_works_under_the_acl_with_its_partition_pattern() -> None:
    ran: list[int] = []

    async def job(n: int) -> None:
        ran.append(n)

    with RedisServer.start_new() as server:
        words = _documented_acl().split()[1:]
        words = [f">{PASSWORD}" if word.startswith(">") else word for word in words]
        narrow = ["docket-narrow" if w == "docket-app" else w for w in words]
        assert server.execute_command("ACL", "SETUSER", *narrow) == "OK"
        assert server.execute_command("ACL", "SETUSER", *words) == "OK"
        assert (
            server.execute_command("ACL", "SETUSER", "docket-app", _documented_partition_pattern())
            == "OK"
        )
        async with Docket(name="myapp", url=_app_url(server), partitions=3) as docket:
            for n in range(12):
                await docket.add(job, key=f"job-{n}")(n)
            assert len({docket.keys_for(f"job-{n}").partition for n in range(12)}) == 3
            async with fast_worker(docket) as worker:
                await worker.run_until_finished()
        assert sorted(ran) == list(range(12))
        # Without the pattern, the other partitions are out of reach.
        narrow_url = _app_url(server).replace("docket-app", "docket-narrow")
        with pytest.raises(ConnectionError, match=r"refused docket 'myapp'.*~\{myapp/\*"):
            async with Docket(name="myapp", url=narrow_url, partitions=3):
                pass
