"""The test infrastructure itself: private servers, their faults, and the URL fixtures."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from _redis_server import HOST, RedisServer, RedisServerError
from redis.asyncio import Redis


def test_private_server_is_not_the_shared_one(redis_server: RedisServer) -> None:
    assert redis_server.port != 6379
    assert redis_server.host == "127.0.0.1"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.running
    assert redis_server.process is not None
    info = redis_server.execute_command("INFO", "server")
    assert f"process_id:{redis_server.process.pid}\r\n".encode() in info


async def test_ping_through_redis_py(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_unix_socket_url(redis_server: RedisServer) -> None:
    client = Redis.from_url(redis_server.unix_url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


def test_server_has_no_persistence(redis_server: RedisServer) -> None:
    assert redis_server.execute_command("CONFIG", "GET", "save") == [b"save", b""]
    assert redis_server.execute_command("CONFIG", "GET", "appendonly") == [b"appendonly", b"no"]


def test_restart_keeps_the_port_and_loses_the_data(private_redis: RedisServer) -> None:
    port, pid = private_redis.port, private_redis.pid
    private_redis.execute_command("SET", "k", "v")

    private_redis.restart()

    assert private_redis.port == port
    assert private_redis.pid != pid
    assert private_redis.ping()
    assert private_redis.execute_command("GET", "k") is None


def test_kill_then_start(private_redis: RedisServer) -> None:
    port = private_redis.port
    private_redis.kill()
    assert not private_redis.running
    assert not private_redis.ping(timeout=0.2)

    private_redis.start()
    assert private_redis.port == port
    assert private_redis.ping()


def test_pause_and_resume(private_redis: RedisServer) -> None:
    private_redis.pause()
    assert private_redis.paused
    # The kernel still accepts the connection; nobody answers on it.
    assert not private_redis.ping(timeout=0.2)

    private_redis.resume()
    assert private_redis.ping()


def test_paused_server_can_be_stopped_and_restarted(private_redis: RedisServer) -> None:
    private_redis.pause()
    private_redis.restart()
    assert not private_redis.paused
    assert private_redis.ping()


def test_ensure_running_heals_a_stopped_or_paused_server(private_redis: RedisServer) -> None:
    private_redis.stop()
    private_redis.ensure_running()
    assert private_redis.ping()

    private_redis.pause()
    private_redis.ensure_running()
    assert private_redis.ping()


def test_private_redis_is_another_server(
    redis_server: RedisServer, private_redis: RedisServer
) -> None:
    assert private_redis.port != redis_server.port
    assert private_redis.directory != redis_server.directory


def test_factory_passes_extra_arguments(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(["--maxmemory", "10mb", "--maxmemory-policy", "noeviction"])
    assert server.execute_command("CONFIG", "GET", "maxmemory") == [b"maxmemory", b"10485760"]

    server.restart()
    assert server.execute_command("CONFIG", "GET", "maxmemory-policy") == [
        b"maxmemory-policy",
        b"noeviction",
    ]


def test_close_removes_everything() -> None:
    server = RedisServer.start_new()
    directory, process = server.directory, server.process
    server.close()

    assert process is not None and process.poll() is not None
    assert not directory.exists()
    with pytest.raises(RedisServerError, match="closed"):
        server.start()


def test_bad_arguments_fail_with_the_server_log() -> None:
    with pytest.raises(RedisServerError) as caught:
        RedisServer.start_new(["--no-such-directive", "1"])
    message = str(caught.value)
    assert "no-such-directive" in message
    assert "Bad directive" in message


def test_a_taken_port_is_retried_on_another(monkeypatch: pytest.MonkeyPatch) -> None:
    import _redis_server

    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]

        real_free_port = _redis_server.free_port
        offered: list[int] = []

        def racy_free_port() -> int:
            # The first pick loses the race to another process.
            port = taken if not offered else real_free_port()
            offered.append(port)
            return port

        monkeypatch.setattr(_redis_server, "free_port", racy_free_port)
        with RedisServer.start_new() as server:
            assert offered[0] == taken
            assert server.port != taken
            assert server.ping()


def test_a_fixed_port_that_stays_taken_fails_clearly() -> None:
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]

        server = RedisServer(port=taken)
        try:
            with pytest.raises(RedisServerError, match="Address already in use"):
                server.start()
        finally:
            server.close()


def test_memory_urls_are_unique(memory_url: str) -> None:
    assert memory_url.startswith("memory://")
    assert len(memory_url) > len("memory://")


def test_docket_names_are_unique_and_plain(docket_name: str) -> None:
    assert docket_name.startswith("test-")
    assert all(ch.isalnum() or ch == "-" for ch in docket_name)


def test_url_runs_on_each_backend(url: str, request: pytest.FixtureRequest) -> None:
    backend = request.node.callspec.id
    assert backend in ("redis", "memory")
    assert url.startswith("redis://" if backend == "redis" else "memory://")


def test_chaos_size_defaults_to_smoke(chaos_size: str) -> None:
    assert chaos_size in ("smoke", "full")


@pytest.mark.chaos
def test_chaos_marker_is_registered(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("chaos") is not None
