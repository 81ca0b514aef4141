"""The lean RESP connection (docket/_redis/wire.py) against real private Redis servers:
replies, concurrency, pipelines, scripts, db and AUTH, reconnects, cancellation, the
stalled-reply watchdog, unix sockets, URL support, argument packing and closing."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import pytest_asyncio
from _redis_server import RedisServer
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from docket._redis.client import Connection
from docket._redis.wire import Wire, pack, wire_supported

pytestmark = pytest.mark.timeout(30)


# --- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests sharing a server never collide."""
    return f"wire-test:{uuid.uuid4().hex}"


@pytest_asyncio.fixture
async def wire(redis_url: str) -> AsyncIterator[Wire]:
    connection = Wire(redis_url, timeout=5.0)
    try:
        yield connection
    finally:
        await connection.aclose()


@asynccontextmanager
async def opened(url: str, *, timeout: float = 5.0) -> AsyncIterator[Wire]:
    connection = Wire(url, timeout=timeout)
    try:
        yield connection
    finally:
        await connection.aclose()


@asynccontextmanager
async def redis_py(server: RedisServer, *, db: int = 0) -> AsyncIterator[Redis]:
    """A plain redis-py client, to check what the Wire did on the server."""
    client = Redis(host=server.host, port=server.port, db=db, password=server.password)
    try:
        yield client
    finally:
        await client.aclose()


def new_script(body: str) -> tuple[str, str]:
    """A script the server has never seen (a unique comment), and its SHA."""
    source = f"-- {uuid.uuid4().hex}\n{body}"
    return hashlib.sha1(source.encode()).hexdigest(), source


# --- replies ----------------------------------------------------------------------------------


async def test_call_round_trips_every_reply_type(wire: Wire, prefix: str) -> None:
    text, number, items = f"{prefix}:text", f"{prefix}:number", f"{prefix}:items"

    assert await wire.call("PING") == b"PONG"  # status
    assert await wire.call("SET", text, "hello") == b"OK"
    assert await wire.call("GET", text) == b"hello"  # bulk
    assert await wire.call("INCRBY", number, 41) == 41  # integer
    assert await wire.call("DECRBY", number, 50) == -9
    assert await wire.call("RPUSH", items, "a", b"b", 3) == 3
    assert await wire.call("LRANGE", items, 0, -1) == [b"a", b"b", b"3"]  # array
    assert await wire.call("LRANGE", f"{prefix}:none", 0, -1) == []
    assert await wire.call("GET", f"{prefix}:missing") is None  # nil bulk
    assert await wire.call("BLPOP", f"{prefix}:missing", 0.01) is None  # nil array
    nested = await wire.call("EVAL", "return {1, {2, 'x'}, 'y'}", 0)
    assert nested == [1, [2, b"x"], b"y"]

    # Binary-safe and large bulks (a reply split across many reads) come back whole.
    binary = bytes(range(256)) + b"\r\n$5\r\n*1\r\n"
    big = uuid.uuid4().bytes * 65536  # 1 MiB
    assert await wire.call("SET", text, binary) == b"OK"
    assert await wire.call("GET", text) == binary
    assert await wire.call("SET", text, big) == b"OK"
    assert await wire.call("GET", text) == big
    assert await wire.call("SET", text, "") == b"OK"
    assert await wire.call("GET", text) == b""
    assert wire.generation == 1


async def test_call_raises_the_servers_error_reply(wire: Wire, prefix: str) -> None:
    key = f"{prefix}:text"
    await wire.call("SET", key, "not a number")

    with pytest.raises(ResponseError, match=r"^ERR value is not an integer or out of range$"):
        await wire.call("INCR", key)
    with pytest.raises(ResponseError, match="unknown command 'NO-SUCH-COMMAND'"):
        await wire.call("NO-SUCH-COMMAND", "x")
    with pytest.raises(ResponseError, match=r"^WRONGTYPE"):
        await wire.call("LPUSH", key, "x")

    # An error reply is just a reply: the connection carries on.
    assert await wire.call("GET", key) == b"not a number"
    assert wire.generation == 1


# --- concurrency ------------------------------------------------------------------------------


async def test_concurrent_callers_each_get_their_own_replies(wire: Wire, prefix: str) -> None:
    async def incr_then_get(i: int) -> tuple[int, bytes]:
        key = f"{prefix}:{i}"
        counted = await wire.call("INCRBY", key, i + 1)
        read = await wire.call("GET", key)
        return counted, read

    async def pipelined(i: int) -> list[object]:
        return await wire.pipeline([("ECHO", f"p{i}-a"), ("ECHO", f"p{i}-b")])

    pairs, pipelines = await asyncio.gather(
        asyncio.gather(*(incr_then_get(i) for i in range(200))),
        asyncio.gather(*(pipelined(i) for i in range(20))),
    )

    assert pairs == [(i + 1, str(i + 1).encode()) for i in range(200)]
    assert pipelines == [[f"p{i}-a".encode(), f"p{i}-b".encode()] for i in range(20)]
    assert wire.generation == 1, "all of it should share one connection"


# --- pipeline ---------------------------------------------------------------------------------


async def test_pipeline_returns_replies_in_order_with_errors_in_place(
    wire: Wire, redis_client: Redis, prefix: str
) -> None:
    counter, text, items = f"{prefix}:counter", f"{prefix}:text", f"{prefix}:items"
    await redis_client.set(text, "not a number")

    replies = await wire.pipeline(
        [
            ("SET", counter, 1),
            ("INCR", text),  # fails...
            ("INCR", counter),  # ...and the rest still apply
            ("RPUSH", items, "x"),
            ("GET", counter),
            ("GET", f"{prefix}:missing"),
        ]
    )

    assert len(replies) == 6
    assert replies[0] == b"OK"
    assert isinstance(replies[1], ResponseError)
    assert str(replies[1]) == "ERR value is not an integer or out of range"
    assert replies[2:] == [2, 1, b"2", None]
    assert await redis_client.get(counter) == b"2"
    assert await redis_client.get(text) == b"not a number"
    assert await redis_client.llen(items) == 1  # type: ignore[misc]


async def test_empty_pipeline(wire: Wire) -> None:
    assert await wire.pipeline([]) == []


# --- scripts ----------------------------------------------------------------------------------


async def test_evalsha_loads_an_unknown_script_and_again_after_a_flush(
    private_redis: RedisServer, prefix: str
) -> None:
    sha, source = new_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    key = f"{prefix}:counter"
    async with opened(private_redis.url) as wire:
        assert await wire.call("SCRIPT", "EXISTS", sha) == [0]

        assert await wire.evalsha(sha, source, [key], [5]) == 5
        assert await wire.call("SCRIPT", "EXISTS", sha) == [1]

        assert await wire.call("SCRIPT", "FLUSH") == b"OK"
        assert await wire.evalsha(sha, source, [key], [2]) == 7
        assert await wire.evalsha(sha, source, [key], [1]) == 8  # now cached
        assert await wire.call("GET", key) == b"8"  # each run applied exactly once


async def test_evalsha_raises_the_scripts_own_error(wire: Wire) -> None:
    sha, source = new_script("return redis.error_reply('boom: ' .. ARGV[1])")
    with pytest.raises(ResponseError, match=r"^boom: here$"):
        await wire.evalsha(sha, source, [], ["here"])


async def test_evalsha_many_with_a_flushed_cache_runs_each_call_once(
    private_redis: RedisServer, prefix: str
) -> None:
    sha, source = new_script(
        "redis.call('INCR', KEYS[1])\nreturn redis.call('INCRBY', KEYS[2], ARGV[1])"
    )
    runs, wrong_type = f"{prefix}:runs", f"{prefix}:a-list"
    calls: list[tuple[list[str], list[int]]] = [([runs, f"{prefix}:{i}"], [i]) for i in range(20)]
    calls.insert(7, ([runs, wrong_type], [1]))  # one run fails on the server

    async with opened(private_redis.url) as wire:
        await wire.call("RPUSH", wrong_type, "x")

        first = await wire.evalsha_many(sha, source, calls)  # never seen before
        assert await wire.call("GET", runs) == b"21"

        assert await wire.call("SCRIPT", "FLUSH") == b"OK"
        second = await wire.evalsha_many(sha, source, calls)
        assert await wire.call("GET", runs) == b"42", "every call should run exactly once"

        third = await wire.evalsha_many(sha, source, calls)  # cached this time
        assert await wire.call("GET", runs) == b"63"

    for replies, times in ((first, 1), (second, 2), (third, 3)):
        assert len(replies) == 21
        error = replies.pop(7)
        assert isinstance(error, ResponseError)
        assert "WRONGTYPE" in str(error)
        assert replies == [i * times for i in range(20)]


# --- db selection and AUTH --------------------------------------------------------------------


@pytest.mark.parametrize("form", ["path", "query"])
async def test_db_in_the_url_is_selected(redis_server: RedisServer, prefix: str, form: str) -> None:
    address = f"redis://{redis_server.host}:{redis_server.port}"
    url = f"{address}/3" if form == "path" else f"{address}?db=3"
    key = f"{prefix}:where"
    async with opened(url) as wire:
        assert await wire.call("SET", key, "db3") == b"OK"
        assert wire.generation == 1

    async with redis_py(redis_server, db=3) as db3, redis_py(redis_server, db=0) as db0:
        assert await db3.get(key) == b"db3"
        assert await db0.get(key) is None


@pytest.fixture
def password() -> str:
    return "pw-" + uuid.uuid4().hex


@pytest.fixture
def secured_redis(redis_server_factory: Callable[..., RedisServer], password: str) -> RedisServer:
    return redis_server_factory(["--requirepass", password])


@pytest.mark.parametrize("user", ["", "default"], ids=["password", "user-and-password"])
async def test_auth_with_requirepass(
    secured_redis: RedisServer, password: str, user: str, prefix: str
) -> None:
    url = f"redis://{user}:{password}@127.0.0.1:{secured_redis.port}/2"
    key = f"{prefix}:authed"
    async with opened(url) as wire:
        assert await wire.call("ACL", "WHOAMI") == b"default"
        assert await wire.call("SET", key, "yes") == b"OK"
    async with redis_py(secured_redis, db=2) as client:
        assert await client.get(key) == b"yes"


async def test_a_wrong_or_missing_password_fails_clearly(
    secured_redis: RedisServer,
) -> None:
    where = f"127.0.0.1:{secured_redis.port}"
    async with opened(f"redis://:wrong-password@{where}/0") as wire:
        for _ in range(2):  # and keeps failing the same way, without hanging
            started = time.monotonic()
            with pytest.raises((ResponseError, RedisConnectionError), match="WRONGPASS"):
                await wire.call("PING")
            assert time.monotonic() - started < 1.0

    async with opened(f"redis://{where}/0") as wire:
        with pytest.raises((ResponseError, RedisConnectionError), match="NOAUTH"):
            await wire.call("PING")


async def test_auth_as_an_acl_user(
    redis_server_factory: Callable[..., RedisServer], password: str
) -> None:
    server = redis_server_factory(["--user", "alice", "on", f">{password}", "~*", "&*", "+@all"])
    where = f"127.0.0.1:{server.port}"

    async with opened(f"redis://alice:{password}@{where}/0") as wire:
        assert await wire.call("ACL", "WHOAMI") == b"alice"

    async with opened(f"redis://alice:not-{password}@{where}/0") as wire:
        with pytest.raises((ResponseError, RedisConnectionError), match="WRONGPASS"):
            await wire.call("PING")


async def test_calls_during_auth_still_go_to_the_urls_db(
    secured_redis: RedisServer, password: str, prefix: str
) -> None:
    url = f"redis://:{password}@127.0.0.1:{secured_redis.port}/3"
    async with opened(url) as wire:
        # Callers keep arriving, one per loop turn, while the first call connects.
        calls = [asyncio.create_task(wire.call("SET", f"{prefix}:0", 0))]
        while not calls[0].done() or len(calls) < 20:
            calls.append(asyncio.create_task(wire.call("SET", f"{prefix}:{len(calls)}", 0)))
            await asyncio.sleep(0)
        assert set(await asyncio.gather(*calls)) == {b"OK"}

    async with redis_py(secured_redis, db=3) as db3, redis_py(secured_redis, db=0) as db0:
        assert await db0.dbsize() == 0, "some calls ran on db 0"
        assert await db3.dbsize() == len(calls)


# --- reconnecting -----------------------------------------------------------------------------


async def test_reconnects_after_the_server_kills_the_connection(
    wire: Wire, redis_client: Redis
) -> None:
    first_id = await wire.call("CLIENT", "ID")
    assert wire.generation == 1
    client_list = await redis_client.execute_command("CLIENT", "LIST", "ID", first_id)
    assert f"id={first_id} ".encode() in client_list

    assert await redis_client.execute_command("CLIENT", "KILL", "ID", first_id) == 1

    assert await wire.call("PING") == b"PONG"
    second_id = await wire.call("CLIENT", "ID")
    assert second_id != first_id
    assert wire.generation == 2

    # Killed again, this time with the Wire idle long enough to notice on its own.
    await redis_client.execute_command("CLIENT", "KILL", "ID", second_id)
    await asyncio.sleep(0.05)
    assert await wire.call("ECHO", "back") == b"back"
    assert wire.generation == 3


async def test_a_connection_closed_unnoticed_is_retried_on_a_fresh_one(
    wire: Wire, redis_server: RedisServer
) -> None:
    old_id = await wire.call("CLIENT", "ID")
    # Killed from a blocking socket, so the event loop does not run in between: the
    # Wire still thinks its connection is open, writes to it, and must then retry.
    assert redis_server.execute_command("CLIENT", "KILL", "ID", old_id) == 1

    assert await wire.call("INCR", f"wire-test:{uuid.uuid4().hex}") == 1
    assert await wire.call("CLIENT", "ID") != old_id
    assert wire.generation == 2


async def test_a_stopped_server_fails_fast_and_a_restarted_one_works(
    private_redis: RedisServer,
) -> None:
    async with opened(private_redis.url) as wire:
        assert await wire.call("PING") == b"PONG"

        await asyncio.to_thread(private_redis.stop)
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(RedisConnectionError):
                await wire.call("PING")
            assert time.monotonic() - started < 1.0

        await asyncio.to_thread(private_redis.start)
        assert await wire.call("PING") == b"PONG"
        assert wire.generation == 2


# --- cancellation -----------------------------------------------------------------------------


async def test_a_cancelled_caller_does_not_take_another_callers_reply(
    wire: Wire, redis_client: Redis, prefix: str
) -> None:
    blocker = f"{prefix}:blocker"
    await wire.call("PING")
    # BLPOP holds every later reply on this connection back, so all of these are
    # certainly still waiting when two of them are cancelled.
    blocked = asyncio.create_task(wire.call("BLPOP", blocker, 5))
    echoes = {name: asyncio.create_task(wire.call("ECHO", name)) for name in "abcdef"}
    await asyncio.sleep(0.05)
    assert not blocked.done()

    for name in "bd":
        echoes[name].cancel()
    for name in "bd":
        with pytest.raises(asyncio.CancelledError):
            await echoes[name]
    late = asyncio.create_task(wire.call("ECHO", "late"))
    await asyncio.sleep(0.01)

    await redis_client.lpush(blocker, "x")

    assert await blocked == [blocker.encode(), b"x"]
    for name in "acef":
        assert await echoes[name] == name.encode()
    assert await late == b"late"
    assert await wire.call("ECHO", "after") == b"after"
    assert wire.generation == 1


async def test_cancelling_in_flight_calls_leaves_the_others_intact(wire: Wire) -> None:
    await wire.call("PING")
    tasks = [asyncio.create_task(wire.call("ECHO", f"m{i}")) for i in range(60)]
    await asyncio.sleep(0)  # every call is written and waiting for its reply
    cancelled = set(range(0, 60, 3))
    for i in cancelled:
        tasks[i].cancel()

    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    for i, outcome in enumerate(outcomes):
        if i in cancelled:
            assert isinstance(outcome, asyncio.CancelledError)
        else:
            assert outcome == f"m{i}".encode()
    assert await wire.call("ECHO", "next") == b"next"


# --- the stalled-reply watchdog ---------------------------------------------------------------


async def test_a_held_reply_times_out_and_the_wire_recovers(redis_url: str, prefix: str) -> None:
    async with opened(redis_url, timeout=0.3) as wire:
        await wire.call("PING")

        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await wire.call("BLPOP", f"{prefix}:never", 5)
        elapsed = time.monotonic() - started
        assert 0.3 <= elapsed < 1.5, f"timed out after {elapsed:.2f}s"

        assert await wire.call("PING") == b"PONG"
        assert wire.generation == 2


async def test_the_watchdog_spares_replies_within_the_timeout(redis_url: str, prefix: str) -> None:
    async with opened(redis_url, timeout=0.3) as wire:
        assert await wire.call("BLPOP", f"{prefix}:never", 0.1) is None
        await asyncio.sleep(0.4)  # idle for longer than the timeout is fine too
        assert await wire.call("PING") == b"PONG"
        assert wire.generation == 1


async def test_a_frozen_server_times_out_then_works_once_resumed(
    private_redis: RedisServer,
) -> None:
    async with opened(private_redis.url, timeout=0.3) as wire:
        await wire.call("PING")
        private_redis.pause()
        try:
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await wire.call("PING")
            assert time.monotonic() - started < 1.5
        finally:
            private_redis.resume()
        assert await wire.call("PING") == b"PONG"


# --- unix sockets -----------------------------------------------------------------------------


async def test_unix_socket(redis_server: RedisServer, prefix: str) -> None:
    # The private test servers always listen on a unix socket too.
    assert redis_server.unix_socket.exists()
    key = f"{prefix}:over-unix"
    async with opened(f"unix://{redis_server.unix_socket}?db=2") as wire:
        assert await wire.call("PING") == b"PONG"
        assert await wire.call("SET", key, "yes") == b"OK"
        assert "redis.sock" in repr(wire)
    async with redis_py(redis_server, db=2) as client:
        assert await client.get(key) == b"yes"


# --- which URLs get a Wire --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost",
        "redis://localhost:6400/3",
        "redis://user:secret@localhost:6400/0",
        "redis://localhost:6400/0?db=2&max_connections=10",
        "redis://localhost?health_check_interval=30&socket_connect_timeout=2",
        "unix:///tmp/redis.sock",
        "unix:///tmp/redis.sock?db=1&max_connections=5",
    ],
)
def test_wire_supported(url: str) -> None:
    assert wire_supported(url) is True


@pytest.mark.parametrize(
    "url",
    [
        "rediss://localhost:6400/0",
        "rediss://localhost:6400/0?ssl_cert_reqs=none",
        "memory://some-docket",
        "http://localhost:6400",
        "redis://localhost:6400/0?ssl_cert_reqs=none",
        "redis://localhost:6400/0?protocol=3",
        "redis://localhost:6400/0?db=1&frobnicate=yes",
        # Options the Wire would not honour itself keep the URL on redis-py.
        "redis://localhost?socket_timeout=3",
        "redis://localhost?client_name=x",
        "unix:///tmp/redis.sock?password=secret",
    ],
)
def test_wire_not_supported(url: str) -> None:
    assert wire_supported(url) is False


async def test_connection_uses_a_wire_only_where_supported(redis_server: RedisServer) -> None:
    cases = {
        redis_server.url: True,
        redis_server.unix_url: True,
        f"rediss://127.0.0.1:{redis_server.port}/0": False,
        f"redis://127.0.0.1:{redis_server.port}/0?protocol=3": False,
        f"memory://{uuid.uuid4()}": False,
    }
    for url, expected in cases.items():
        connection = Connection(url)
        try:
            assert (connection.wire is not None) is expected, url
        finally:
            await connection.aclose()


# --- pack -------------------------------------------------------------------------------------


def test_pack_encodes_bytes_str_int_and_float() -> None:
    assert pack(["SET", b"k\r\n", 42, -7, 1.5, "é"]) == (
        b"*6\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n42\r\n$2\r\n-7\r\n$3\r\n1.5\r\n$2\r\n\xc3\xa9\r\n"
    )
    assert pack([]) == b"*0\r\n"
    assert pack([""]) == b"*1\r\n$0\r\n\r\n"
    assert pack([0.1]) == b"*1\r\n$3\r\n0.1\r\n"  # shortest round-tripping form


async def test_packed_floats_read_back_exactly(wire: Wire, prefix: str) -> None:
    key = f"{prefix}:float"
    for value in (0.1, 1 / 3, 1e20, -2.5e-7):
        await wire.call("SET", key, value)
        assert float(await wire.call("GET", key)) == value


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(True, "bool"), (False, "bool"), (None, "NoneType"), ([1], "list"), (object(), "object")],
)
def test_pack_refuses_other_types_naming_them(value: object, type_name: str) -> None:
    with pytest.raises(TypeError, match=rf"\b{type_name}\b"):
        pack(["SET", "k", value])


# --- aclose -----------------------------------------------------------------------------------


async def test_aclose_fails_pending_and_later_calls(redis_url: str, prefix: str) -> None:
    wire = Wire(redis_url, timeout=5.0)
    await wire.call("PING")
    blocked = asyncio.create_task(wire.call("BLPOP", f"{prefix}:never", 5))
    queued = asyncio.create_task(wire.call("ECHO", "queued"))
    await asyncio.sleep(0.05)

    started = time.monotonic()
    await wire.aclose()
    for pending in (blocked, queued):
        with pytest.raises(RedisConnectionError):
            await pending
    assert time.monotonic() - started < 1.0

    with pytest.raises(RedisConnectionError):
        await wire.call("PING")
    with pytest.raises(RedisConnectionError):
        await wire.pipeline([("PING",)])
    await wire.aclose()  # closing twice is harmless


async def test_a_wire_closed_before_it_connected_never_connects(redis_url: str) -> None:
    wire = Wire(redis_url, timeout=5.0)
    await wire.aclose()
    with pytest.raises(RedisConnectionError):
        await wire.call("PING")
    assert wire.generation == 0


async def test_aclose_while_connecting_fails_the_pending_call(redis_url: str) -> None:
    wire = Wire(redis_url, timeout=5.0)
    pending = asyncio.create_task(wire.call("PING"))
    await asyncio.sleep(0)  # the call is now connecting
    try:
        await wire.aclose()
        with pytest.raises(RedisConnectionError):
            await pending
        with pytest.raises(RedisConnectionError):
            await wire.call("PING")
    finally:
        if not pending.done():
            pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        await wire.aclose()  # closes the connection the bug leaves open


async def test_out_of_memory_and_no_permission_replies_are_redis_pys_own_classes(
    prefix: str,
) -> None:
    # Code that catches OutOfMemoryError (a full Redis under noeviction) or
    # NoPermissionError (an ACL) must hear them from the lean connection as from redis-py.
    with RedisServer.start_new(
        ["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]
    ) as server:
        server.execute_command("ACL", "SETUSER", "narrow", "on", ">pw", "~mine:*", "+@all")
        wire = Wire(server.url, timeout=5.0)
        narrow = Wire(f"redis://narrow:pw@{server.host}:{server.port}/0", timeout=5.0)
        try:
            with pytest.raises(OutOfMemoryError, match=r"^OOM command not allowed"):
                for n in range(10_000):
                    await wire.call("SET", f"{prefix}:{n}", "x" * 4096)
            replies = await wire.pipeline([("SET", f"{prefix}:more", "x" * 4096), ("PING",)])
            assert isinstance(replies[0], OutOfMemoryError) and replies[1] in (b"PONG", "PONG")
            with pytest.raises(NoPermissionError, match=r"^NOPERM"):
                await narrow.call("GET", "theirs:key")
            assert await narrow.call("GET", "mine:key") is None  # its own keys it may read
        finally:
            await wire.aclose()
            await narrow.aclose()
