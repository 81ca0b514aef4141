"""Each ``django.tasks`` task runs, logs, counts, strikes and shows under its own name,
its module path, rather than the one generic ``django_task`` of earlier releases (which
workers still run)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from _redis_server import free_port
from django.contrib.auth.models import User
from django.tasks import TaskResultStatus
from test_django_worker import (
    _manage,
    _start_worker_command,
    _wait_get,
    run_worker_until_finished,
)

from docket_django.dockets import build_docket
from docket_django.portal import get_portal
from docket_django.runner import RUNNER_NAME, record_key, run_django_task

ADD = "djtestapp.jobs.add"
RECEIPT = "djtestapp.tasks.write_receipt"


def _snapshot_names(alias: str = "default") -> list[str]:
    async def go() -> list[str]:
        docket = await get_portal().docket(alias)
        snapshot = await docket.snapshot()
        return [e.function_name for e in (*snapshot.future, *snapshot.running)]

    return get_portal().run(go())


def test_the_name_is_the_module_path() -> None:
    from djtestapp import jobs

    from docket_django.runner import task_name

    assert task_name(jobs.add) == ADD == jobs.add.module_path != RUNNER_NAME


@pytest.mark.django_db(transaction=True)
def test_enqueue_adds_the_task_under_its_module_path(docket_setting: dict[str, Any]) -> None:
    from djtestapp import jobs

    from docket_django.testing import DocketTestRunner

    result = jobs.add.enqueue(2, 3)
    names = _snapshot_names()
    assert names == [ADD], names
    assert RUNNER_NAME not in names
    DocketTestRunner().assert_task_scheduled(jobs.add)
    run_worker_until_finished()
    assert jobs.add.get_result(result.id).return_value == 5


def test_discovered_django_tasks_are_registered_under_their_names() -> None:
    from docket_django.discovery import discovered
    from docket_django.registry import django_tasks

    assert "djtestapp.tasks" in discovered
    assert RECEIPT in django_tasks()
    docket = build_docket()
    # Registered outright (not just resolvable): what a worker advertises and runs.
    assert dict.get(docket.tasks, RECEIPT) is run_django_task
    assert dict.get(docket.tasks, RUNNER_NAME) is run_django_task  # the old name too
    assert "mark_done" in docket.tasks


def test_undiscovered_module_paths_resolve_on_lookup() -> None:
    docket = build_docket()
    # djtestapp.jobs is not a task module: a worker resolves its tasks when asked.
    assert docket.tasks.get(ADD) is run_django_task
    assert ADD in docket.tasks
    # Names that are not DocketBackend tasks stay unknown (dead-lettered, as before).
    for name in ("os.path.join", "djtestapp.jobs.nope", "djtestapp.tasks.mark_done", "x"):
        assert docket.tasks.get(name) is None, name
        with pytest.raises(KeyError):
            docket.tasks[name]


def test_a_name_outside_the_installed_apps_is_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A message's task name is read before its signature is checked: looking it up
    # must not import a module that no installed app holds.
    module = f"not_an_app_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    (tmp_path / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    docket = build_docket()
    assert docket.tasks.get(f"{module}.job") is None
    assert not marker.exists()
    assert module not in sys.modules


@pytest.mark.django_db(transaction=True)
def test_discovered_task_runs_on_a_worker_subprocess(subprocess_env: dict[str, str]) -> None:
    from djtestapp import jobs, tasks

    receipt = tasks.write_receipt.enqueue(7)
    added = jobs.add.enqueue(20, 22)  # a module the worker only resolves by name

    done = _manage(
        subprocess_env,
        "docket_worker",
        "--until-finished",
        "--no-reload",
        "--no-schedule-automatic-tasks",
        "--log-level",
        "INFO",
        "--minimum-check-interval",
        "0.01",
    )
    assert done.returncode == 0, done.stderr
    assert tasks.write_receipt.get_result(receipt.id).return_value == "receipt 7"
    assert jobs.add.get_result(added.id).return_value == 42
    logs = done.stderr + done.stdout
    assert RECEIPT in logs and ADD in logs, logs


@pytest.mark.django_db(transaction=True)
def test_runs_queued_under_the_old_name_still_run(docket_setting: dict[str, Any]) -> None:
    from djtestapp import jobs

    result_id = "0190f0a0-0000-7000-8000-000000000001"

    async def enqueue_the_old_way() -> None:
        docket = await get_portal().docket("default")
        record = {
            "task": ADD,
            "backend": "default",
            "queue": "default",
            "priority": 0,
            "takes_context": False,
            "run_after": None,
            "args": [4, 5],
            "kwargs": {},
            "status": TaskResultStatus.READY.value,
            "enqueued_at": "2026-01-01T00:00:00+00:00",
            "started_at": None,
            "finished_at": None,
            "last_attempted_at": None,
            "errors": [],
            "worker_ids": [],
            "return_value": None,
        }
        async with docket.redis() as redis:
            await redis.set(record_key(docket, result_id), json.dumps(record), ex=600)
        await docket.add(RUNNER_NAME, key=result_id)(result_id, "default")

    get_portal().run(enqueue_the_old_way())
    assert _snapshot_names() == [RUNNER_NAME]
    run_worker_until_finished()
    result = jobs.add.get_result(result_id)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 9


@pytest.mark.django_db(transaction=True)
def test_strike_by_module_path(docket_setting: dict[str, Any]) -> None:
    from djtestapp import jobs

    struck = jobs.add.enqueue(1, 1)
    other = jobs.async_add.enqueue(2, 2)

    async def strike(restore: bool = False) -> None:
        docket = await get_portal().docket("default")
        if restore:
            await docket.restore(ADD)
        else:
            await docket.strike(ADD)

    get_portal().run(strike())
    run_worker_until_finished()
    # Struck: never started, and docket cancelled it (which Django sees as FAILED).
    stopped = jobs.add.get_result(struck.id)
    assert stopped.started_at is None and not stopped.worker_ids
    assert stopped.status == TaskResultStatus.FAILED
    assert jobs.async_add.get_result(other.id).return_value == 4
    get_portal().run(strike(restore=True))
    again = jobs.add.enqueue(3, 3)
    run_worker_until_finished()
    assert jobs.add.get_result(again.id).return_value == 6


@pytest.mark.django_db(transaction=True)
def test_log_lines_carry_the_name(
    docket_setting: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from djtestapp import jobs

    jobs.add.enqueue(1, 2)
    with caplog.at_level(logging.INFO):
        run_worker_until_finished()
    docket_lines = [r for r in caplog.records if r.name.startswith("docket")]
    text = "\n".join(r.getMessage() for r in docket_lines)
    assert ADD in text, text
    assert RUNNER_NAME not in text, text


@pytest.mark.django_db(transaction=True)
def test_dashboard_shows_the_name(client: Any, docket_setting: dict[str, Any]) -> None:
    from datetime import timedelta

    from django.utils import timezone
    from djtestapp import jobs

    jobs.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(1, 2)
    user = User.objects.create_user("admin", password="pw", is_staff=True, is_superuser=True)
    client.force_login(user)
    html = client.get("/admin/docket_django/dashboard/scheduled").content.decode()
    # The rows; the filter's choices still offer django_task, for runs queued before.
    rows = html.split("<tbody>")[1]
    assert ADD in rows
    assert RUNNER_NAME not in rows


@pytest.mark.django_db(transaction=True)
def test_metrics_are_labelled_with_the_name(subprocess_env: dict[str, str]) -> None:
    from djtestapp import jobs

    metrics_port = free_port()
    process = _start_worker_command(subprocess_env, "--metrics-port", str(metrics_port))
    try:
        result = jobs.add.enqueue(2, 2)
        deadline = time.monotonic() + 30
        body = ""
        while time.monotonic() < deadline:
            _, body = _wait_get(f"http://127.0.0.1:{metrics_port}/metrics", process)
            if "docket_tasks_completed_total" in body:
                break
            time.sleep(0.1)
        completed = [
            line for line in body.splitlines() if line.startswith("docket_tasks_completed_total")
        ]
        assert any(f'docket_task="{ADD}"' in line for line in completed), completed
        assert not any(f'docket_task="{RUNNER_NAME}"' in line for line in completed), completed
        deadline = time.monotonic() + 10
        while jobs.add.get_result(result.id).status != TaskResultStatus.SUCCESSFUL:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.django_db(transaction=True)
def test_docket_command_strikes_by_module_path(subprocess_env: dict[str, str]) -> None:
    from djtestapp import jobs

    struck = _manage(subprocess_env, "docket", "strike", ADD)
    assert struck.returncode == 0, struck.stderr
    result = jobs.add.enqueue(1, 1)
    run_worker_until_finished()
    assert jobs.add.get_result(result.id).started_at is None
    restored = _manage(subprocess_env, "docket", "restore", ADD)
    assert restored.returncode == 0, restored.stderr
    again = jobs.add.enqueue(2, 2)
    run_worker_until_finished()
    assert jobs.add.get_result(again.id).return_value == 4
