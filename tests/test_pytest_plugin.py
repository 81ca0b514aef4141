"""The pytest plugin that gives users' test suites ``docket`` and ``worker`` fixtures,
exercised through ``pytester`` on a user's test file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

pytest_plugins = ["pytester"]

USER_TESTS = """
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from docket import Docket, ExecutionState, Worker
from docket.testing import assert_no_tasks, assert_task_scheduled

ran = []


async def greet(name: str) -> None:
    ran.append(name)


def note(docket: Docket) -> None:
    # Tell the outer test which docket this test used.
    with open(os.environ["DOCKET_PLUGIN_NOTES"], "a") as notes:
        notes.write(json.dumps({"name": docket.name, "url": docket.url}) + "\\n")


@pytest.mark.asyncio
async def test_schedules_and_runs(docket: Docket, worker: Worker) -> None:
    note(docket)
    execution = await docket.add(greet)("ada")
    await assert_task_scheduled(docket, greet, args=("ada",))
    await worker.run_until_finished()
    await assert_no_tasks(docket)
    await execution.sync()
    assert execution.state == ExecutionState.COMPLETED
    assert ran == ["ada"]


@pytest.mark.asyncio
async def test_leaves_work_behind(docket: Docket) -> None:
    note(docket)
    await docket.add(greet, when=datetime.now(UTC) + timedelta(hours=1), key="later")("bob")
    await docket.add(greet, key="now")("cy")
    await docket.strike("greet", "name", "==", "zed")


@pytest.mark.asyncio
async def test_worker_is_on_the_same_docket(docket: Docket, worker: Worker) -> None:
    note(docket)
    assert worker.docket is docket
"""


QUIET_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


@pytest.fixture
def notes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    pytester.makeini(QUIET_INI)
    path = pytester.path / "notes.jsonl"
    monkeypatch.setenv("DOCKET_PLUGIN_NOTES", str(path))
    monkeypatch.delenv("DOCKET_TEST_URL", raising=False)
    return path


def read_notes(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def docket_keys(redis_url: str, name: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        return list(client.scan_iter(match="{" + name + "}:*"))
    finally:
        client.close()


def test_fixtures_default_to_a_fresh_memory_docket_per_test(
    pytester: pytest.Pytester, notes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The application's own setting must not send tests to its Redis.
    monkeypatch.setenv("DOCKET_URL", "redis://production.invalid:6379/0")
    pytester.makepyfile(test_user=USER_TESTS)

    result = pytester.runpytest("-p", "no:cacheprovider")

    result.assert_outcomes(passed=3)
    used = read_notes(notes)
    assert len(used) == 3
    assert all(item["url"].startswith("memory://") for item in used)
    assert len({item["url"] for item in used}) == 3, "each test gets its own engine"
    assert len({item["name"] for item in used}) == 3, "each test gets its own name"
    assert any("test-schedules-and-runs" in item["name"] for item in used)


def test_fixtures_work_in_pytest_asyncio_auto_mode(pytester: pytest.Pytester, notes: Path) -> None:
    pytester.makeini(QUIET_INI + "asyncio_mode = auto\n")
    pytester.makepyfile(test_user=USER_TESTS.replace("@pytest.mark.asyncio\n", ""))

    result = pytester.runpytest()

    result.assert_outcomes(passed=3)


def test_docket_url_option_uses_a_real_redis_and_cleans_up(
    pytester: pytest.Pytester, notes: Path, redis_url: str
) -> None:
    pytester.makepyfile(test_user=USER_TESTS)

    result = pytester.runpytest(f"--docket-url={redis_url}")

    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([f"docket: fixtures use {redis_url}"])
    used = read_notes(notes)
    assert {item["url"] for item in used} == {redis_url}
    assert len({item["name"] for item in used}) == 3
    for item in used:
        assert docket_keys(redis_url, item["name"]) == [], f"{item['name']} left keys behind"


def test_the_environment_variable_chooses_redis(
    pytester: pytest.Pytester, notes: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKET_TEST_URL", redis_url)
    pytester.makepyfile(test_user=USER_TESTS)

    result = pytester.runpytest()

    result.assert_outcomes(passed=3)
    assert {item["url"] for item in read_notes(notes)} == {redis_url}


def test_the_option_wins_over_the_environment_and_the_ini(
    pytester: pytest.Pytester, notes: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKET_TEST_URL", "redis://nowhere.invalid:1/0")
    pytester.makeini(QUIET_INI + "docket_url = redis://also-nowhere.invalid:1/0\n")
    pytester.makepyfile(test_user=USER_TESTS)

    result = pytester.runpytest(f"--docket-url={redis_url}")

    result.assert_outcomes(passed=3)
    assert {item["url"] for item in read_notes(notes)} == {redis_url}


def test_the_ini_value_is_used_when_nothing_else_is_given(
    pytester: pytest.Pytester, notes: Path, redis_url: str
) -> None:
    pytester.makeini(QUIET_INI + f"docket_url = {redis_url}\n")
    pytester.makepyfile(test_user=USER_TESTS)

    result = pytester.runpytest()

    result.assert_outcomes(passed=3)
    assert {item["url"] for item in read_notes(notes)} == {redis_url}


def test_passwords_are_redacted_in_the_report_header(
    pytester: pytest.Pytester, notes: Path
) -> None:
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")

    result = pytester.runpytest("--docket-url=redis://:hunter2@localhost:1/0")

    result.assert_outcomes(passed=1)
    assert "hunter2" not in result.stdout.str()
    result.stdout.fnmatch_lines(["docket: fixtures use redis://:***@localhost:1/0"])


def test_a_conftest_can_override_the_url_and_name(
    pytester: pytest.Pytester, notes: Path, redis_url: str
) -> None:
    pytester.makeconftest(
        f"""
import pytest

@pytest.fixture
def docket_url():
    return {redis_url!r}

@pytest.fixture
def docket_name(request):
    return "mine-" + request.node.name.replace("_", "-")
"""
    )
    pytester.makepyfile(test_user=USER_TESTS)

    result = pytester.runpytest()

    result.assert_outcomes(passed=3)
    used = read_notes(notes)
    assert {item["url"] for item in used} == {redis_url}
    assert {item["name"] for item in used} == {
        "mine-test-schedules-and-runs",
        "mine-test-leaves-work-behind",
        "mine-test-worker-is-on-the-same-docket",
    }
    assert docket_keys(redis_url, "mine-test-leaves-work-behind") == []


def test_the_plugin_can_be_disabled(pytester: pytest.Pytester, notes: Path) -> None:
    pytester.makepyfile(test_user=USER_TESTS)

    result = pytester.runpytest("-p", "no:docket")

    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(["*fixture 'docket' not found*"])


def test_the_option_is_documented_in_help(pytester: pytest.Pytester, notes: Path) -> None:
    result = pytester.runpytest("--help")

    result.stdout.fnmatch_lines(["*--docket-url=URL*", "*docket_url*"])
