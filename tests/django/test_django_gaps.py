"""Gaps: the decorator's ``queue=`` option, the worker's health/metrics ports, and
``manage.py docket cancel``."""

from __future__ import annotations

import signal
import socket
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
from django.core.exceptions import ImproperlyConfigured

from docket import ExecutionState
from docket_django.portal import get_portal

HERE = Path(__file__).parent
MANAGE = str(HERE / "manage_djtest.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _execution(alias: str, key: str) -> Any:
    async def go() -> Any:
        docket = await get_portal().docket(alias)
        return await docket.get_execution(key)

    return get_portal().run(go())


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


def test_decorator_queue_option(settings: Any, redis_url: str) -> None:
    import docket_django
    from docket_django import registry
    from docket_django.checks import check_tasks

    settings.DOCKET = {
        "default": {"URL": redis_url, "NAME": f"d-{uuid.uuid4().hex[:8]}"},
        "reports": {"URL": redis_url, "NAME": f"r-{uuid.uuid4().hex[:8]}"},
    }
    saved = (list(registry._registrations), {k: dict(v) for k, v in registry._by_alias.items()})
    try:

        @docket_django.task(name="gap_report_task", queue="reports")
        def gap_report_task() -> str:
            return "r"

        @docket_django.task(name="gap_nowhere_task", queue="nowhere")
        def gap_nowhere_task() -> str:
            return "n"

        assert gap_report_task.alias == "reports"
        assert "gap_report_task" in registry.tasks_for("reports")
        assert "gap_report_task" not in registry.tasks_for("default")

        key = gap_report_task.schedule(delay=timedelta(hours=1), on_commit=False)
        assert _execution("reports", key) is not None
        assert _execution("default", key) is None

        # An unknown alias: flagged by the system checks, refused at enqueue time.
        errors = [e for e in check_tasks() if e.id == "docket_django.E012"]
        assert any("gap_nowhere_task" in e.msg and "nowhere" in e.msg for e in errors)
        assert not any("gap_report_task" in e.msg for e in errors)
        with pytest.raises(ImproperlyConfigured, match="nowhere"):
            gap_nowhere_task.enqueue()
    finally:
        registry._registrations[:] = saved[0]
        registry._by_alias.clear()
        registry._by_alias.update(saved[1])


@pytest.mark.django_db(transaction=True)
def test_worker_healthcheck_and_metrics_ports(subprocess_env: dict[str, str]) -> None:
    from djtestapp.tasks import listed_task

    from docket_django import enqueue

    health_port, metrics_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            MANAGE,
            "docket_worker",
            "--no-reload",
            "--minimum-check-interval",
            "0.01",
            "--healthcheck-port",
            str(health_port),
            "--metrics-port",
            str(metrics_port),
        ],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
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
        while _execution("default", key).state != ExecutionState.COMPLETED:
            assert time.monotonic() < deadline, _execution("default", key).state
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr


def test_docket_cancel_command(subprocess_env: dict[str, str]) -> None:
    from djtestapp.tasks import mark_done

    key = f"cancel-me-{uuid.uuid4().hex[:8]}"
    mark_done.schedule(1, delay=timedelta(hours=1), key=key, on_commit=False)
    assert _execution("default", key).state == ExecutionState.SCHEDULED
    done = subprocess.run(
        [sys.executable, MANAGE, "docket", "cancel", key],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"cancelled {key}" in done.stdout
    assert _execution("default", key).state == ExecutionState.CANCELLED
