"""Shared fixtures: private Redis servers, URLs, and ready-made dockets and workers.

Every test process (each pytest-xdist worker, or the single process without
xdist) starts its own ``redis-server`` on a free loopback port; nothing here
ever connects to a shared server. Tests that fault a server (kill, pause,
restart with other settings) should use ``private_redis`` or
``redis_server_factory`` rather than the per-process ``redis_server``, which
is healed before each test that uses it but is shared by the tests of that
process. The same holds for the multi-node topologies: ``redis_cluster`` and
``redis_sentinel`` are per process, ``private_redis_cluster`` and
``private_redis_sentinel`` start sets for one test to kill nodes in.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from _redis_server import RedisServer, RedisServerError
from _redis_topologies import RedisClusterSet, RedisSentinelSet

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
    config.addinivalue_line(
        "markers",
        "topology: tests against a real Redis Cluster or Sentinel set (started by the suite)",
    )
    config.addinivalue_line(
        "markers",
        "cluster_too: the module's tests that take ``url`` run on a Redis Cluster as well",
    )
    config.addinivalue_line(
        "markers",
        "partitioned_too: the module's tests that take ``url`` run with 3 partitions too",
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
    # The same for the shared topologies; when every process is running this
    # costs nothing, a killed node is restarted and the set waited on.
    for name in ("redis_cluster", "redis_sentinel"):
        if name in request.fixturenames:
            topology: RedisClusterSet | RedisSentinelSet = request.getfixturevalue(name)
            topology.ensure_running()


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


# --- Redis Cluster and Sentinel -------------------------------------------------------------


def _start_topology[T](start: Callable[[], T]) -> T:
    # A missing redis-server or redis-cli is a broken test setup, not a reason to
    # skip: fail every test that needs the topology, saying what to install.
    try:
        return start()
    except RedisServerError as e:
        message = str(e)
    # Outside the except block, so the report shows the reason once, unchained.
    pytest.fail(f"could not start the Redis topology: {message}", pytrace=False)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterSet]:
    """This test process's own Redis Cluster: 3 primaries with a replica each, on free
    loopback ports. Shared by the process's tests; kill nodes in a private one."""
    cluster = _start_topology(RedisClusterSet)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelSet]:
    """This test process's own Sentinel set (a primary, a replica, three Sentinels
    watching ``mymaster``). Shared by the process's tests; fail over in a private one."""
    sentinel = _start_topology(RedisSentinelSet)
    try:
        yield sentinel
    finally:
        sentinel.close()


@pytest.fixture
def private_redis_cluster() -> Iterator[Callable[..., RedisClusterSet]]:
    """Start Redis Clusters for this test alone, with ``RedisClusterSet``'s arguments,
    e.g. ``private_redis_cluster()`` or ``private_redis_cluster(replicas_per_primary=2)``;
    all are closed after the test."""
    clusters: list[RedisClusterSet] = []

    def start(*args: Any, **kwargs: Any) -> RedisClusterSet:
        cluster = _start_topology(lambda: RedisClusterSet(*args, **kwargs))
        clusters.append(cluster)
        return cluster

    try:
        yield start
    finally:
        for cluster in clusters:
            cluster.close()


@pytest.fixture
def private_redis_sentinel() -> Iterator[Callable[..., RedisSentinelSet]]:
    """Start Sentinel sets for this test alone, with ``RedisSentinelSet``'s arguments,
    e.g. ``private_redis_sentinel(password="pw")``; all are closed after the test."""
    sets: list[RedisSentinelSet] = []

    def start(*args: Any, **kwargs: Any) -> RedisSentinelSet:
        sentinel = _start_topology(lambda: RedisSentinelSet(*args, **kwargs))
        sets.append(sentinel)
        return sentinel

    try:
        yield start
    finally:
        for sentinel in sets:
            sentinel.close()


# --- URLs and names -------------------------------------------------------------------------


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def memory_url() -> str:
    return f"memory://{uuid.uuid4()}"


@pytest.fixture
def cluster_url(redis_cluster: RedisClusterSet) -> str:
    return redis_cluster.url


@pytest.fixture
def partitioned_url(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The private server, with every docket the test makes spread over 3 partitions
    (``DOCKET_PARTITIONS``, which a Docket given no count reads)."""
    monkeypatch.setenv("DOCKET_PARTITIONS", "3")
    return redis_server.url


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # ``url`` runs a test on each backend; a module marked ``partitioned_too`` adds the
    # private server with 3 partitions per docket, one marked ``cluster_too`` this
    # process's Redis Cluster (a chosen subset of the core tests: the cluster's
    # startup is paid once per process, its runs are slower).
    given = {
        name.strip()
        for marker in metafunc.definition.iter_markers("parametrize")
        for name in (
            marker.args[0].split(",") if isinstance(marker.args[0], str) else marker.args[0]
        )
    }
    if "url" in metafunc.fixturenames and "url" not in given:
        backends = ["redis", "memory"]
        if metafunc.definition.get_closest_marker("cluster_too") is not None:
            backends.append("cluster")
        if metafunc.definition.get_closest_marker("partitioned_too") is not None:
            backends.append("partitioned")
        metafunc.parametrize("url", backends, ids=backends, indirect=True)


@pytest.fixture
def url(request: pytest.FixtureRequest) -> str:
    """Each backend in turn, for tests that must pass on both (and on a Redis Cluster,
    in modules marked ``cluster_too``). A test that asks for ``url`` also gets its
    ``docket`` (and ``worker``) on that backend."""
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
