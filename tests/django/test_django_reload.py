"""``docket_worker --reload``: Django's autoreloader restarts the worker when a watched
module changes (``--reload``, or DEBUG without a flag), and ``--no-reload`` does not."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from docket_django.portal import get_portal

HERE = Path(__file__).parent
MANAGE = str(HERE / "manage_djtest.py")

TASKS_MODULE = """\
from pathlib import Path

import docket_django

VERSION = {version!r}


@docket_django.task
def reload_stamp(path: str) -> str:
    # Written aside and renamed into place, so the test never reads a half-written stamp.
    partial = Path(path + ".partial")
    partial.write_text(VERSION)
    partial.replace(path)
    return VERSION
"""


def reload_stamp(path: str) -> str:
    """Same name as the task of the app written under tmp_path: enqueued from here,
    run by the subprocess's own code."""
    raise AssertionError("runs in the worker subprocess only")


def _write_tasks(path: Path, version: str) -> None:
    path.write_text(TASKS_MODULE.format(version=version))
    # Make sure the autoreloader's next stat sees a newer mtime.
    later = time.time() + 2
    os.utime(path, (later, later))


@pytest.fixture
def reload_project(tmp_path: Path, subprocess_env: dict[str, str]) -> dict[str, Any]:
    """A settings module and an installed app ``reloadapp`` (with a ``tasks`` module)
    under tmp_path, on the subprocess's path."""
    app = tmp_path / "reloadapp"
    app.mkdir()
    (app / "__init__.py").write_text("")
    tasks = app / "tasks.py"
    _write_tasks(tasks, "v1")
    (tmp_path / "reload_settings.py").write_text(
        "import os\n"
        "from djtest_settings import *  # noqa: F403\n"
        "INSTALLED_APPS = [*INSTALLED_APPS, 'reloadapp']  # noqa: F405\n"
        "DEBUG = os.environ['RELOAD_DEBUG'] == '1'\n"
    )
    env = dict(subprocess_env)
    env["DJANGO_SETTINGS_MODULE"] = "reload_settings"
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return {"env": env, "tasks": tasks, "tmp": tmp_path}


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"worker-{len(processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, MANAGE, "docket_worker", "--minimum-check-interval", "0.01", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        process.log_path = log.name  # type: ignore[attr-defined]
        processes.append(process)
        return process

    try:
        yield start
    finally:
        for process in processes:
            # The reloader's parent and its child share the new session's group.
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
            # Reap the group: a reloader child may outlive its parent.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def _log(process: subprocess.Popen[bytes]) -> str:
    return Path(process.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def _worker_names() -> set[str]:
    async def go() -> set[str]:
        docket = await get_portal().docket("default")
        return {info.name for info in await docket.workers()}

    return get_portal().run(go(), timeout=10)


def _wait_for(
    predicate: Callable[[], Any], process: subprocess.Popen[bytes], what: str, timeout: float
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process.poll() is not None:
            pytest.fail(f"worker exited ({process.returncode}) before {what}:\n{_log(process)}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}:\n{_log(process)}")


def _run_stamp(tmp: Path, process: subprocess.Popen[bytes], label: str) -> str:
    from docket_django import enqueue

    target = tmp / f"stamp-{label}.txt"
    enqueue(reload_stamp, str(target), on_commit=False)
    _wait_for(target.exists, process, f"the {label} task to run", 10)
    return target.read_text()


def _started_lines(process: subprocess.Popen[bytes]) -> list[str]:
    return [line for line in _log(process).splitlines() if "started on docket" in line]


@pytest.mark.parametrize(
    ("debug", "flags"),
    [pytest.param("0", ["--reload"], id="reload-flag"), pytest.param("1", [], id="debug")],
)
def test_worker_reloads_on_code_change(
    reload_project: dict[str, Any],
    start_worker: Callable[..., subprocess.Popen[bytes]],
    debug: str,
    flags: list[str],
) -> None:
    env = {**reload_project["env"], "RELOAD_DEBUG": debug}
    process = start_worker(env, *flags)

    first: set[str] = _wait_for(_worker_names, process, "a worker heartbeat", 15)
    assert len(first) == 1
    assert _run_stamp(reload_project["tmp"], process, "before") == "v1"

    # The reloader's first snapshot of mtimes is taken as the worker starts; give it
    # one polling tick (StatReloader: 1 s) before changing the watched module.
    time.sleep(1.2)
    _write_tasks(reload_project["tasks"], "v2")

    def restarted() -> set[str]:
        return _worker_names() - first

    second = _wait_for(restarted, process, "a new worker after the reload", 15)
    assert len(second) == 1
    assert len(_started_lines(process)) >= 2, _log(process)
    assert process.poll() is None
    # Tasks still run, with the new code.
    assert _run_stamp(reload_project["tmp"], process, "after") == "v2"


def test_no_reload_under_debug(
    reload_project: dict[str, Any], start_worker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    env = {**reload_project["env"], "RELOAD_DEBUG": "1"}
    process = start_worker(env, "--no-reload")

    first: set[str] = _wait_for(_worker_names, process, "a worker heartbeat", 15)
    assert _run_stamp(reload_project["tmp"], process, "before") == "v1"
    time.sleep(1.2)
    _write_tasks(reload_project["tasks"], "v2")
    time.sleep(2.5)  # more than two StatReloader ticks, were one running

    assert process.poll() is None, _log(process)
    assert _worker_names() == first
    assert len(_started_lines(process)) == 1, _log(process)
    assert _run_stamp(reload_project["tmp"], process, "after") == "v1"


@pytest.mark.parametrize("flags", [["--max-tasks", "1"], ["--max-tasks", "1", "--reload"]])
def test_exiting_worker_is_not_reloaded(
    reload_project: dict[str, Any],
    start_worker: Callable[..., subprocess.Popen[bytes]],
    flags: list[str],
) -> None:
    """Under DEBUG (even with --reload), a worker that must exit is not run under the
    autoreloader, which would keep the process alive after the worker returns."""
    from docket_django import enqueue

    target = reload_project["tmp"] / "stamp.txt"
    enqueue(reload_stamp, str(target), on_commit=False)
    process = start_worker({**reload_project["env"], "RELOAD_DEBUG": "1"}, *flags)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not exit:\n{_log(process)}")
    assert process.returncode == 0, _log(process)
    assert target.read_text() == "v1"
    assert "Watching for file changes" not in _log(process)
