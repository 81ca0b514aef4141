"""Shared fixtures: private Redis servers, URLs, and ready-made dockets and workers.

Every test process (each pytest-xdist worker, or the single process without
xdist) starts its own ``redis-server`` on a free loopback port; nothing here
ever connects to a shared server. Tests that fault a server (kill, pause,
restart with other settings) should use ``private_redis`` or
``redis_server_factory`` rather than the per-process ``redis_server``, which
is healed before each test that uses it but is shared by the tests of that
process.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from _redis_server import RedisServer

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from docket.docket import Docket
    from docket.worker import Worker

CHAOS_SIZES = ("smoke", "full")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-size",
        choices=CHAOS_SIZES,
        default=os.environ.get("DOCKET_CHAOS_SIZE", "smoke"),
        help="how hard the chaos tests push: 'smoke' (bounded, for CI) or 'full' (nightly); "
        "default from DOCKET_CHAOS_SIZE, else smoke",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos: slow fault-injection tests (kills, pauses, restarts); CI runs them at "
        "--chaos-size=smoke, nightly runs at full size",
    )


# Each chaos scenario's line of figures, collected from the test reports (pytest-xdist
# carries a report's user_properties back to the controller) for the terminal summary.
_chaos_figures: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _chaos_figures.extend(str(v) for k, v in report.user_properties if k == "chaos_figures")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _chaos_figures:
        terminalreporter.section("chaos figures")
        for line in _chaos_figures:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def chaos_size(pytestconfig: pytest.Config) -> str:
    """``"smoke"`` or ``"full"``: chaos tests scale their task and fault counts by it."""
    size: str = pytestconfig.getoption("--chaos-size")
    return size


# --- Redis servers ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """This test process's own redis-server, on a free loopback port."""
    server = RedisServer.start_new()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def _heal_redis_server(request: pytest.FixtureRequest) -> None:
    # A test that stopped or paused the shared server must not break the next
    # one; only tests that use the server pay for the check (no server is
    # started for tests that do not need one).
    if "redis_server" in request.fixturenames:
        server: RedisServer = request.getfixturevalue("redis_server")
        server.ensure_running()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A server for this test alone, to kill, pause or restart at will."""
    server = RedisServer.start_new()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start extra private servers with extra arguments, e.g.
    ``redis_server_factory(["--appendonly", "yes"])``; all are closed after the test."""
    servers: list[RedisServer] = []

    def start(extra_args: Iterable[str] = (), *, startup_timeout: float = 15.0) -> RedisServer:
        server = RedisServer.start_new(extra_args, startup_timeout=startup_timeout)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()


# --- URLs and names -------------------------------------------------------------------------


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def memory_url() -> str:
    return f"memory://{uuid.uuid4()}"


@pytest.fixture(params=["redis", "memory"], ids=["redis", "memory"])
def url(request: pytest.FixtureRequest) -> str:
    """Each backend in turn, for tests that must pass on both. A test that asks for
    ``url`` also gets its ``docket`` (and ``worker``) on that backend."""
    value: str = request.getfixturevalue(f"{request.param}_url")
    return value


@pytest.fixture
def docket_name(request: pytest.FixtureRequest) -> str:
    # The test's name makes keys recognisable when inspecting the server; the
    # uuid makes them unique. Only [a-z0-9-] so no name rule can reject it.
    readable = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"test-{readable}-{uuid.uuid4().hex[:12]}"


# --- Docket and Worker ------------------------------------------------------------------------


@pytest_asyncio.fixture
async def docket(request: pytest.FixtureRequest, docket_name: str) -> AsyncIterator[Docket]:
    """An entered Docket on the private Redis, or on the ``url`` backend if the test
    asks for ``url``."""
    from docket.docket import Docket

    backend = "url" if "url" in request.fixturenames else "redis_url"
    docket_url: str = request.getfixturevalue(backend)
    async with Docket(name=docket_name, url=docket_url) as entered:
        yield entered


@pytest_asyncio.fixture
async def worker(docket: Docket) -> AsyncIterator[Worker]:
    """An entered Worker on ``docket`` that polls every few milliseconds."""
    from docket.worker import Worker

    async with Worker(
        docket,
        minimum_check_interval=timedelta(milliseconds=5),
        scheduling_resolution=timedelta(milliseconds=5),
    ) as entered:
        yield entered


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    """A plain redis-py client on the private server, to inspect or tamper with keys."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
