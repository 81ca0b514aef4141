"""A pytest plugin with ready-made ``docket`` and ``worker`` fixtures.

Installed with pydocket and enabled automatically (disable it with ``-p no:docket``).
Each test gets a docket of its own, with a unique name, on the in-process ``memory://``
engine, or on a real Redis when one is configured (first match wins):

- ``--docket-url=redis://localhost:6379/0`` on the command line,
- the ``DOCKET_TEST_URL`` environment variable,
- ``docket_url = ...`` in the pytest ini configuration.

``DOCKET_URL`` (the application's setting) is deliberately ignored. After the test, the
docket is cleared and every key it made is deleted. Override the
``docket_url`` or ``docket_name`` fixtures in a conftest to choose per test.

The fixtures are asynchronous: they need pytest-asyncio (``asyncio_mode = "auto"``, or
``@pytest.mark.asyncio`` on each test).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .docket import Docket
    from .worker import Worker

URL_ENVIRONMENT_VARIABLE = "DOCKET_TEST_URL"


def _async_fixture(function: Callable[..., Any]) -> Any:
    """pytest-asyncio's fixture decorator when it is installed (so the fixtures work in
    its strict mode too), plain ``pytest.fixture`` otherwise."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - depends on the user's environment
        return pytest.fixture(function)
    return pytest_asyncio.fixture(function)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("docket", "docket task queue fixtures")
    group.addoption(
        "--docket-url",
        dest="docket_url",
        default=None,
        metavar="URL",
        help=(
            "Redis URL for the docket fixture (e.g. redis://localhost:6379/0); default: "
            f"${URL_ENVIRONMENT_VARIABLE}, else the docket_url ini value, else a fresh "
            "memory:// docket per test"
        ),
    )
    parser.addini(
        "docket_url",
        "Redis URL for the docket fixture (the --docket-url option wins over it)",
        default="",
    )


def configured_url(config: pytest.Config) -> str | None:
    """The Redis URL the plugin was given, or None for the in-process engine."""
    url = (
        config.getoption("docket_url", default=None)
        or os.environ.get(URL_ENVIRONMENT_VARIABLE)
        or config.getini("docket_url")
    )
    return str(url) if url else None


def pytest_report_header(config: pytest.Config) -> str | None:
    url = configured_url(config)
    if url is None:
        return None
    from ._redis.client import redact_url

    return f"docket: fixtures use {redact_url(url)}"


@pytest.fixture
def docket_url(request: pytest.FixtureRequest) -> str:
    """Where the ``docket`` fixture lives: the configured Redis URL, or a fresh
    ``memory://`` engine for this test alone."""
    return configured_url(request.config) or f"memory://{uuid.uuid4()}"


@pytest.fixture
def docket_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses: the test's name (to recognise its keys) plus a uuid."""
    readable = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"test-{readable}-{uuid.uuid4().hex[:12]}"


@_async_fixture
async def docket(docket_url: str, docket_name: str) -> AsyncIterator[Docket]:
    """An entered ``Docket`` for this test; cleared and its keys deleted afterwards."""
    from .docket import Docket

    async with Docket(name=docket_name, url=docket_url) as entered:
        try:
            yield entered
        finally:
            await _clean_up(entered)


@_async_fixture
async def worker(docket: Docket) -> AsyncIterator[Worker]:
    """An entered ``Worker`` on ``docket`` that polls every few milliseconds: call
    ``await worker.run_until_finished()`` to run what the test scheduled."""
    from .worker import Worker

    async with Worker(
        docket,
        minimum_check_interval=timedelta(milliseconds=5),
        scheduling_resolution=timedelta(milliseconds=5),
    ) as entered:
        yield entered


async def _clean_up(docket: Docket) -> None:
    # Best effort: a test that broke its connection should fail on its own assertion,
    # not on the clean-up.
    with suppress(Exception):
        await docket.clear()
    with suppress(Exception):
        async with docket.redis() as redis:
            doomed = [key async for key in redis.scan_iter(match=f"{docket.prefix}:*", count=1000)]
            for start in range(0, len(doomed), 500):
                await redis.delete(*doomed[start : start + 500])
