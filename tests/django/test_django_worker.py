"""The worker: django.tasks backend end to end, docket-native tasks, DB hygiene,
the management commands as subprocesses (SIGTERM, health and metrics ports, cancel),
health."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _helpers import portal_execution
from _redis_server import free_port
from django.db import connection
from django.tasks import TaskResultStatus
from django.tasks.exceptions import InvalidTask
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone

from docket import ExecutionState, Priority
from docket_django.conf import WorkerSettings
from docket_django.portal import get_portal
from docket_django.worker import WorkerRun

HERE = Path(__file__).parent
MANAGE = str(HERE / "manage_djtest.py")


def run_worker_until_finished(alias: str = "default", **options: Any) -> None:
    """A real worker (the command's code path) on the portal loop, until idle."""
    run = WorkerRun(
        alias=alias,
        options=WorkerSettings(
            minimum_check_interval=timedelta(milliseconds=10),
            scheduling_resolution=timedelta(milliseconds=10),
            schedule_automatic_tasks=False,
            **options,
        ),
        until_finished=True,
    )
    get_portal().run(run.serve(), timeout=60)


@pytest.mark.django_db(transaction=True)
def test_backend_end_to_end(docket_setting: dict[str, Any]) -> None:
    from djtestapp import jobs
    from djtestapp.models import Order

    seen: list[tuple[str, str]] = []

    def receiver(name: str) -> Any:
        def record(sender: Any, task_result: Any, **kwargs: Any) -> None:
            seen.append((name, task_result.status))

        return record

    receivers = [receiver("enqueued"), receiver("started"), receiver("finished")]
    for signal_, handler in zip(
        (task_enqueued, task_started, task_finished), receivers, strict=True
    ):
        signal_.connect(handler)
    try:
        order = Order.objects.create(item="lamp")
        ok = jobs.add.enqueue(2, 3)
        bad = jobs.fail.enqueue("boom")
        ctx = jobs.with_context.enqueue(x=4)
        coro = jobs.async_add.enqueue(5, 6)
        orm = jobs.touch_order.enqueue(order.pk)
        later = jobs.add.using(run_after=timezone.now() + timedelta(seconds=0.5)).enqueue(1, 1)
        assert ok.status == TaskResultStatus.READY
        run_worker_until_finished()
    finally:
        for signal_, handler in zip(
            (task_enqueued, task_started, task_finished), receivers, strict=True
        ):
            signal_.disconnect(handler)

    result = jobs.add.get_result(ok.id)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.attempts == 1 and result.worker_ids
    assert result.enqueued_at and result.started_at and result.finished_at
    assert result.started_at <= result.finished_at

    failed = jobs.fail.get_result(bad.id)
    assert failed.status == TaskResultStatus.FAILED
    assert failed.errors[0].exception_class_path == "builtins.ValueError"
    assert "boom" in failed.errors[0].traceback
    with pytest.raises(ValueError):
        failed.return_value  # noqa: B018

    context_value = jobs.with_context.get_result(ctx.id).return_value
    assert context_value == {"attempt": 1, "id": ctx.id, "x": 4}
    assert jobs.async_add.get_result(coro.id).return_value == 11
    assert jobs.touch_order.get_result(orm.id).return_value == "lamp"
    Order.objects.get(pk=order.pk, note="touched")
    delayed = jobs.add.get_result(later.id)
    assert delayed.status == TaskResultStatus.SUCCESSFUL
    assert delayed.started_at >= later.task.run_after

    ok.refresh()
    assert ok.status == TaskResultStatus.SUCCESSFUL
    names = [name for name, _ in seen]
    assert names.count("enqueued") == 6 and names.count("started") == 6
    assert ("finished", TaskResultStatus.FAILED) in seen


async def test_backend_async_api(docket_setting: dict[str, Any]) -> None:
    from djtestapp import jobs

    result = await jobs.async_add.aenqueue(1, 2)
    fetched = await jobs.async_add.aget_result(result.id)
    assert fetched.status == TaskResultStatus.READY and fetched.args == [1, 2]


@pytest.mark.parametrize(
    ("django_priority", "level"),
    [(100, "HIGH"), (1, "HIGH"), (0, "NORMAL"), (-1, "LOW"), (-100, "LOW")],
)
def test_django_priorities_map_onto_dockets_levels(
    docket_setting: dict[str, Any], django_priority: int, level: str
) -> None:
    from django.tasks import task_backends
    from djtestapp import jobs

    assert task_backends["default"].supports_priority
    result = jobs.add.using(priority=django_priority).enqueue(1, 2)

    async def stored() -> Priority:
        docket = await get_portal().docket("default")
        execution = await docket.get_execution(result.id)
        assert execution is not None
        return execution.priority

    assert get_portal().run(stored()) is Priority[level]


def test_backend_rejects_invalid_tasks(docket_setting: dict[str, Any]) -> None:
    from django.tasks import task
    from djtestapp import jobs

    with pytest.raises(InvalidTask):
        jobs.add.using(priority=101)  # out of django's own range
    with pytest.raises(InvalidTask):
        jobs.add.using(queue_name="nope")

    def local() -> None: ...

    with pytest.raises(InvalidTask):
        task(local)


def test_backend_queue_maps_to_docket(settings: Any, redis_url: str) -> None:
    import uuid

    from django.tasks import task_backends
    from djtestapp import jobs

    settings.DOCKET = {
        "default": {"URL": redis_url, "NAME": f"d-{uuid.uuid4().hex[:8]}"},
        "reports": {"URL": redis_url, "NAME": f"r-{uuid.uuid4().hex[:8]}"},
    }
    backend = task_backends["default"]
    assert backend.alias_for_queue("reports") == "reports"
    assert backend.alias_for_queue("default") == "default"
    result = jobs.report.enqueue()
    run_worker_until_finished("reports")
    assert jobs.report.get_result(result.id).return_value == "report"


@pytest.mark.django_db(transaction=True)
def test_docket_native_tasks_sync_and_async(docket_setting: dict[str, Any]) -> None:
    from djtestapp.models import Order
    from djtestapp.tasks import confirm, mark_done

    first = Order.objects.create(item="a")
    second = Order.objects.create(item="b")
    mark_done.enqueue(first.pk)
    confirm.enqueue(order_id=second.pk)
    run_worker_until_finished()
    assert Order.objects.get(pk=first.pk).status == "done"
    assert Order.objects.get(pk=second.pk).status == "confirmed"


def _backend_connections(db_name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [db_name],
        )
        return int(cursor.fetchone()[0])


@pytest.mark.parametrize("conn_max_age", [0, 60])
@pytest.mark.django_db(transaction=True)
def test_connections_do_not_leak(
    docket_setting: dict[str, Any], conn_max_age: int, settings: Any
) -> None:
    from django.db import connections
    from djtestapp.models import Order
    from djtestapp.tasks import confirm, mark_done

    db = connection.settings_dict["NAME"]
    connections["default"].settings_dict["CONN_MAX_AGE"] = conn_max_age
    try:
        before = _backend_connections(db)
        orders = [Order.objects.create(item=f"o{i}") for i in range(60)]
        for order in orders[:40]:
            mark_done.enqueue(order.pk)
        for order in orders[40:]:
            confirm.enqueue(order_id=order.pk)
        run_worker_until_finished(concurrency=8, sync_threads=4)
        assert Order.objects.filter(status__in=["done", "confirmed"]).count() == 60
        # The worker has exited: its slot threads closed their connections.
        time.sleep(0.2)
        assert _backend_connections(db) <= before
    finally:
        connections["default"].settings_dict["CONN_MAX_AGE"] = 0


@pytest.mark.django_db(transaction=True)
def test_conn_max_age_reuses_connections(docket_setting: dict[str, Any]) -> None:
    """With CONN_MAX_AGE, sync runs reuse their slot's connection: few backends for
    many runs (at most one per sync thread)."""
    from django.db import connections
    from djtestapp.models import Order
    from djtestapp.tasks import mark_done

    connections["default"].settings_dict["CONN_MAX_AGE"] = 60
    seen: set[int] = set()
    import threading

    from django.db.backends.signals import connection_created

    def created(sender: Any, connection: Any, **kwargs: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            seen.add(id(connection))

    connection_created.connect(created)
    try:
        orders = [Order.objects.create(item=f"o{i}") for i in range(30)]
        for order in orders:
            mark_done.enqueue(order.pk)
        run_worker_until_finished(concurrency=4, sync_threads=2)
    finally:
        connection_created.disconnect(created)
        connections["default"].settings_dict["CONN_MAX_AGE"] = 0
    assert Order.objects.filter(status="done").count() == 30
    assert 1 <= len(seen) <= 2


# -- subprocesses ---------------------------------------------------------------------


def _manage(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, MANAGE, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _start_worker_command(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``manage.py docket_worker`` polling fast, without the reloader, in the background."""
    return subprocess.Popen(
        [
            sys.executable,
            MANAGE,
            "docket_worker",
            "--no-reload",
            "--minimum-check-interval",
            "0.01",
            *args,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status, response.read().decode()


def _wait_get(url: str, process: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            return _get(url)
        except (urllib.error.URLError, ConnectionError, OSError) as error:
            last = error
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered: {last!r}")


@pytest.mark.django_db(transaction=True)
def test_worker_command_until_finished(subprocess_env: dict[str, str]) -> None:
    from djtestapp import jobs
    from djtestapp.models import Order
    from djtestapp.tasks import mark_done

    order = Order.objects.create(item="x")
    mark_done.enqueue(order.pk)
    result = jobs.add.enqueue(20, 22)
    done = _manage(
        subprocess_env,
        "docket_worker",
        "--until-finished",
        "--no-reload",
        "--no-schedule-automatic-tasks",
        "--minimum-check-interval",
        "0.01",
    )
    assert done.returncode == 0, done.stderr
    assert Order.objects.get(pk=order.pk).status == "done"
    assert jobs.add.get_result(result.id).return_value == 42


@pytest.mark.django_db(transaction=True)
def test_worker_command_sigterm_drains(subprocess_env: dict[str, str]) -> None:
    from djtestapp.tasks import slow

    key = slow.enqueue(1.5)
    process = _start_worker_command(subprocess_env)
    try:
        deadline = time.monotonic() + 30
        state = None
        while time.monotonic() < deadline:
            state = _state(key)
            if state == "running":
                break
            time.sleep(0.05)
        assert state == "running"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert _state(key) == "completed", stderr


def _state(key: str) -> str | None:
    execution = portal_execution("default", key)
    return None if execution is None else execution.state.value


@pytest.mark.django_db(transaction=True)
def test_worker_healthcheck_and_metrics_ports(subprocess_env: dict[str, str]) -> None:
    from djtestapp.tasks import listed_task

    from docket_django import enqueue

    health_port, metrics_port = free_port(), free_port()
    process = _start_worker_command(
        subprocess_env,
        "--healthcheck-port",
        str(health_port),
        "--metrics-port",
        str(metrics_port),
    )
    try:
        status, _ = _wait_get(f"http://127.0.0.1:{health_port}/", process)
        assert status == 200
        # docket's instruments show up in the scrape once something is recorded: run a task.
        key = enqueue(listed_task, 1)
        deadline = time.monotonic() + 30
        body = ""
        while time.monotonic() < deadline:
            status, body = _wait_get(f"http://127.0.0.1:{metrics_port}/metrics", process)
            assert status == 200
            if "docket_tasks_completed_total" in body:
                break
            time.sleep(0.1)
        assert "docket_" in body
        assert "docket_tasks_completed_total" in body
        # The run is counted as it ends; its record settles in Redis a moment later.
        deadline = time.monotonic() + 10
        while portal_execution("default", key).state != ExecutionState.COMPLETED:
            assert time.monotonic() < deadline, portal_execution("default", key).state
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr


@pytest.mark.django_db(transaction=True)
def test_worker_command_max_tasks(subprocess_env: dict[str, str]) -> None:
    from djtestapp.tasks import listed_task

    from docket_django import enqueue

    keys = [enqueue(listed_task, i) for i in range(5)]
    done = _manage(
        subprocess_env,
        "docket_worker",
        "--no-reload",
        "--max-tasks",
        "2",
        "--concurrency",
        "1",
        "--minimum-check-interval",
        "0.01",
    )
    assert done.returncode == 0, done.stderr
    states = [_state(k) for k in keys]
    assert states.count("completed") == 2, states


def test_docket_command(subprocess_env: dict[str, str]) -> None:
    from djtestapp.tasks import mark_done

    mark_done.schedule(1, delay=timedelta(hours=1), key="later-1", on_commit=False)
    snap = _manage(subprocess_env, "docket", "snapshot", "--json")
    assert snap.returncode == 0, snap.stderr
    data = json.loads(snap.stdout)
    assert [e["key"] for e in data["future"]] == ["later-1"]
    assert _manage(subprocess_env, "docket", "strike", "mark_done").returncode == 0
    data = json.loads(_manage(subprocess_env, "docket", "snapshot", "--json").stdout)
    assert data["strikes"]
    assert _manage(subprocess_env, "docket", "restore", "mark_done").returncode == 0
    data = json.loads(_manage(subprocess_env, "docket", "snapshot", "--json").stdout)
    assert not data["strikes"]
    cleared = _manage(subprocess_env, "docket", "clear")
    assert "cleared 1" in cleared.stdout
    unhealthy = _manage(subprocess_env, "docket", "health")
    assert unhealthy.returncode == 1  # Redis fine, but no worker
    assert _manage(subprocess_env, "docket", "health", "--no-workers").returncode == 0


def test_docket_cancel_command(subprocess_env: dict[str, str]) -> None:
    from djtestapp.tasks import mark_done

    key = f"cancel-me-{uuid.uuid4().hex[:8]}"
    mark_done.schedule(1, delay=timedelta(hours=1), key=key, on_commit=False)
    assert portal_execution("default", key).state == ExecutionState.SCHEDULED
    done = _manage(subprocess_env, "docket", "cancel", key)
    assert done.returncode == 0, done.stderr
    assert f"cancelled {key}" in done.stdout
    assert portal_execution("default", key).state == ExecutionState.CANCELLED


def test_health_view(client: Any, docket_setting: dict[str, Any], settings: Any) -> None:
    response = client.get("/docket/health/?workers=0")
    assert response.status_code == 200 and response.json()["healthy"]
    assert client.get("/docket/health/").status_code == 503  # no worker heartbeat
    settings.DOCKET = {**docket_setting, "URL": "redis://127.0.0.1:1/0"}
    response = client.get("/docket/health/?workers=0")
    assert response.status_code == 503
    assert response.json()["dockets"][0]["redis"] is False


def test_health_with_a_worker(client: Any, docket_setting: dict[str, Any]) -> None:
    import asyncio

    from docket import Worker

    async def with_worker() -> int:
        docket = await get_portal().docket("default")
        async with Worker(docket, schedule_automatic_tasks=False):
            await asyncio.sleep(0.1)
            from docket_django.health import read_status

            return len((await read_status("default")).workers)

    assert get_portal().run(with_worker()) == 1


_ = os
