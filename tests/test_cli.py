"""The ``docket`` command line, run for real: the installed console script (and
``python -m docket``) in subprocesses, against this test process's private Redis.

Each test uses its own docket name, sets up or checks state with an in-process
``Docket`` where that is simpler, and asserts what the command prints and how it exits.
Subprocesses get an environment without any ``DOCKET_*`` variable of the caller's, and
wide columns so tables are not wrapped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import docket
from docket import Docket, ExecutionState
from docket.cli import main
from docket.cli.durations import format_duration_option, parse_duration
from docket.tasks import fail, sleep, trace

pytestmark = pytest.mark.timeout(90)

SCRIPT = Path(sys.executable).with_name("docket")
FAST = ["--minimum-check-interval", "20ms", "--scheduling-resolution", "20ms"]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKET_")}
    env.pop("FORCE_COLOR", None)
    # Not a terminal (whatever CI's environment says), unless a test says otherwise.
    env.update({"COLUMNS": "200", "PYTHONUNBUFFERED": "1", "TTY_COMPATIBLE": "0"})
    env.pop("PYTHONPATH", None)
    env.update(extra or {})
    return env


def command(*args: str, module: bool = False) -> list[str]:
    if module:
        return [sys.executable, "-m", "docket", *args]
    return [str(SCRIPT), *args]


async def start(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    module: bool = False,
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command(*args, module=module),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=cli_env(env),
        cwd=cwd,
    )


async def finish(process: asyncio.subprocess.Process, timeout: float = 30) -> Result:
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        raise AssertionError(
            f"the command did not finish in {timeout}s\n{out.decode()}\n{err.decode()}"
        ) from None
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


async def cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    module: bool = False,
    timeout: float = 30,
) -> Result:
    return await finish(await start(*args, env=env, cwd=cwd, module=module), timeout)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """Failed, without a traceback, with exactly one ``Error:`` line on stderr, last
    (a worker may have logged before it)."""
    assert result.code != 0, result
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


async def read_lines(process: asyncio.subprocess.Process, count: int) -> list[str]:
    """The first ``count`` lines of a running command's stdout."""
    assert process.stdout is not None
    lines = []
    for _ in range(count):
        line = await asyncio.wait_for(process.stdout.readline(), 15)
        lines.append(line.decode().rstrip("\n"))
    return lines


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 15, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


TASK_MODULE = """
import asyncio
from pathlib import Path
from docket import Progress

OUT = Path(__file__).with_name("ran.txt")

async def record(word: str) -> None:
    with OUT.open("a") as out:
        out.write(word + "\\n")

async def crunch(steps: int, progress: Progress = Progress()) -> str:
    await progress.set_total(steps)
    for i in range(steps):
        await asyncio.sleep(0.15)
        await progress.increment()
        await progress.set_message(f"step {i + 1} of {steps}")
    return "crunched"

tasks = [record, crunch]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with a task module, ``clitasks:tasks``, as a user's project would be."""
    (tmp_path / "clitasks.py").write_text(textwrap.dedent(TASK_MODULE))
    return tmp_path


def ran(project: Path) -> list[str]:
    out = project / "ran.txt"
    return out.read_text().split() if out.exists() else []


async def record(word: str) -> None:
    """Stands in for clitasks.record on the producer side (same name, same signature)."""


async def crunch(steps: int) -> str:
    """Stands in for clitasks.crunch on the producer side."""
    return ""


@pytest.fixture
async def producer(redis_url: str, docket_name: str) -> AsyncIterator[Docket]:
    async with Docket(name=docket_name, url=redis_url) as entered:
        entered.register(record)
        entered.register(crunch)
        yield entered


def target(redis_url: str, docket_name: str) -> list[str]:
    return ["--url", redis_url, "--docket", docket_name]


# -- version and help --------------------------------------------------------------------


async def test_version_from_the_script_and_the_module() -> None:
    for module in (False, True):
        result = await cli("version", module=module)
        assert result.code == 0, result
        assert result.stdout.strip() == docket.__version__


async def test_help_lists_every_command() -> None:
    result = await cli("--help")
    assert result.code == 0, result
    for name in (
        "worker",
        "strike",
        "restore",
        "clear",
        "snapshot",
        "watch",
        "workers",
        "tasks",
        "version",
        "dead-letters",
    ):
        assert name in result.stdout


def test_help_of_every_group(
    in_process: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    for group, subcommands in {
        "workers": ("ls", "for-task"),
        "tasks": ("trace", "fail", "sleep"),
        "dead-letters": ("list", "requeue", "purge"),
    }.items():
        result = in_process(group, "--help")
        assert result.code == 0, result
        for name in subcommands:
            assert name in result.stdout
    result = in_process("worker", "--help")
    for variable in (
        "DOCKET_URL",
        "DOCKET_NAME",
        "DOCKET_TASKS",
        "DOCKET_WORKER_CONCURRENCY",
        "DOCKET_WORKER_REDELIVERY_TIMEOUT",
        "DOCKET_LOGGING_FORMAT",
    ):
        assert variable in result.stdout


# -- worker --------------------------------------------------------------------------------


async def test_worker_until_finished_runs_the_added_tasks_and_exits_0(
    redis_url: str, docket_name: str, producer: Docket, project: Path
) -> None:
    first = await producer.add(record)("first")
    second = await producer.add(record)("second")
    traced = await producer.add(trace)("hello from the test")

    result = await cli(
        "worker",
        "--until-finished",
        "--tasks",
        "clitasks:tasks",
        "--tasks",
        "docket.tasks:standard_tasks",
        *FAST,
        *target(redis_url, docket_name),
        cwd=project,
    )

    assert result.code == 0, result
    assert sorted(ran(project)) == ["first", "second"]
    assert "hello from the test" in result.stdout
    for execution in (first, second, traced):
        await execution.sync()
        assert execution.state == ExecutionState.COMPLETED


async def test_python_dash_m_runs_a_worker_too(
    redis_url: str, docket_name: str, producer: Docket, project: Path
) -> None:
    await producer.add(record)("via-module")
    result = await cli(
        "worker",
        "--until-finished",
        "--tasks",
        "clitasks:tasks",
        *FAST,
        *target(redis_url, docket_name),
        cwd=project,
        module=True,
    )
    assert result.code == 0, result
    assert ran(project) == ["via-module"]


async def test_sigterm_lets_the_running_task_finish_then_exits_0(
    redis_url: str, docket_name: str, producer: Docket
) -> None:
    execution = await producer.add(sleep)(1.5)
    worker = await start("worker", *FAST, *target(redis_url, docket_name))

    async def running() -> bool:
        await execution.sync()
        return execution.state == ExecutionState.RUNNING

    try:
        await eventually(running, what="the task to start")
        worker.send_signal(signal.SIGTERM)
        result = await finish(worker)
    finally:
        if worker.returncode is None:
            worker.kill()

    assert result.code == 0, result
    assert "Received SIGTERM" in result.stdout
    await execution.sync()
    assert execution.state == ExecutionState.COMPLETED


async def test_a_second_sigterm_exits_at_once_with_130(
    redis_url: str, docket_name: str, producer: Docket
) -> None:
    execution = await producer.add(sleep)(30)
    worker = await start("worker", *FAST, *target(redis_url, docket_name))

    async def running() -> bool:
        await execution.sync()
        return execution.state == ExecutionState.RUNNING

    try:
        await eventually(running, what="the task to start")
        worker.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        worker.send_signal(signal.SIGTERM)
        result = await finish(worker, timeout=10)
    finally:
        if worker.returncode is None:
            worker.kill()
    assert result.code == 130, result
    assert "Traceback" not in result.output


async def test_worker_options_from_environment_variables(
    redis_url: str, docket_name: str, producer: Docket, project: Path
) -> None:
    execution = await producer.add(record)("from-env")
    result = await cli(
        "worker",
        env={
            "DOCKET_URL": redis_url,
            "DOCKET_NAME": docket_name,
            "DOCKET_TASKS": "clitasks:tasks",
            "DOCKET_WORKER_NAME": "env-worker",
            "DOCKET_WORKER_CONCURRENCY": "3",
            "DOCKET_WORKER_UNTIL_FINISHED": "1",
            "DOCKET_WORKER_MINIMUM_CHECK_INTERVAL": "20ms",
            "DOCKET_WORKER_SCHEDULING_RESOLUTION": "00:00.02",
            "DOCKET_WORKER_REDELIVERY_TIMEOUT": "1m",
            "DOCKET_LOGGING_FORMAT": "json",
            "DOCKET_LOGGING_LEVEL": "debug",
        },
        cwd=project,
    )
    assert result.code == 0, result
    assert ran(project) == ["from-env"]
    await execution.sync()
    assert execution.worker == "env-worker"
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stdout
    assert {line["level"] for line in lines} >= {"INFO"}
    assert any(line.get("worker") == "env-worker" for line in lines)


async def test_worker_plain_log_format(redis_url: str, docket_name: str, producer: Docket) -> None:
    await producer.add(trace)("plain words")
    result = await cli(
        "worker",
        "--until-finished",
        "--logging-format",
        "plain",
        "--name",
        "plain-worker",
        *FAST,
        *target(redis_url, docket_name),
    )
    assert result.code == 0, result
    line = next(line for line in result.stdout.splitlines() if "plain words" in line)
    assert re.match(r"\d{4}-\d\d-\d\dT\S+ INFO ", line), line
    assert "worker=plain-worker" in result.stdout


async def test_worker_serves_a_health_check(
    redis_url: str, docket_name: str, producer: Docket
) -> None:
    port = free_port()
    worker = await start(
        "worker", "--healthcheck-port", str(port), *FAST, *target(redis_url, docket_name)
    )
    try:

        async def healthy() -> bool:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            status = await reader.readline()
            writer.close()
            return b"200" in status

        await eventually(healthy, what="the health check to answer 200")
    finally:
        worker.send_signal(signal.SIGTERM)
        result = await finish(worker)
    assert result.code == 0, result


async def test_worker_fallback_task_runs_unknown_tasks(
    redis_url: str, docket_name: str, producer: Docket, project: Path
) -> None:
    (project / "fallbacks.py").write_text(
        textwrap.dedent(
            """
            from pathlib import Path

            async def catch_all(*args, **kwargs):
                Path(__file__).with_name("ran.txt").write_text("fallback " + args[0])
            """
        )
    )
    await producer.add(record)("unknown-here")
    result = await cli(
        "worker",
        "--until-finished",
        "--fallback-task",
        "fallbacks:catch_all",
        *FAST,
        *target(redis_url, docket_name),
        cwd=project,
    )
    assert result.code == 0, result
    assert ran(project) == ["fallback", "unknown-here"]


# -- errors ----------------------------------------------------------------------------------


# Each kind of failure is shown once through the real script; the matrices of cases
# run the same ``main()`` in this process (a subprocess each would cost a second apiece).


@pytest.fixture
def in_process(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., Result]]:
    """``main(args)`` run here, with what it printed and its exit code."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)

    def invoke(*args: str, cwd: Path | None = None) -> Result:
        previous = Path.cwd()
        if cwd is not None:
            os.chdir(cwd)
        try:
            with pytest.raises(SystemExit) as exited:
                main(list(args))
        finally:
            os.chdir(previous)
        captured = capsys.readouterr()
        code = exited.value.code
        return Result(code if isinstance(code, int) else 1, captured.out, captured.err)

    try:
        yield invoke
    finally:
        # ``docket worker`` configures logging; leave the root logger as it was.
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


COMMANDS_WITH_A_URL = [
    ["strike", "some_task"],
    ["restore", "some_task"],
    ["clear"],
    ["snapshot"],
    ["watch", "some-key"],
    ["workers", "ls"],
    ["workers", "for-task", "trace"],
    ["tasks", "trace"],
    ["tasks", "fail"],
    ["tasks", "sleep"],
    ["dead-letters", "list"],
    ["dead-letters", "requeue", "--all"],
    ["dead-letters", "purge", "--all"],
]


async def test_memory_urls_are_refused_by_the_script() -> None:
    result = await cli("clear", "--url", "memory://shared")
    assert_one_line_error(result, "memory://", "not supported", "process of its own", "redis://")
    assert result.code == 2


async def test_the_worker_runs_a_memory_docket_of_its_own() -> None:
    # A docket inside the worker's own process, for local development: tasks it is
    # given at startup (here, none) run, and it exits once there is nothing left.
    result = await cli("worker", "--until-finished", "--url", "memory://dev", "--docket", "dev")
    assert result.code == 0, result
    assert "Starting worker" in result.stdout


def test_memory_urls_are_refused_by_every_command(in_process: Callable[..., Result]) -> None:
    for args in COMMANDS_WITH_A_URL:
        result = in_process(*args, "--url", "memory://shared")
        assert_one_line_error(result, "memory://", "process of its own")
        assert result.code == 2


async def test_a_bad_url_is_one_line_from_the_script() -> None:
    result = await cli("worker", "--url", "http://user:hunter2@localhost:6379")
    assert_one_line_error(result, "is not a Redis URL")
    assert result.code == 2
    assert "hunter2" not in result.output


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://localhost:6379", "is not a Redis URL"),
        ("localhost:6379", "is not a Redis URL"),
        ("redis://localhost:port/0", "Port could not be cast"),
        ("redis://localhost:99999/0", "Port out of range"),
        ("redis://:hunter2@localhost:port/0", "redis://:***@localhost:port/0"),
    ],
)
def test_bad_urls_are_one_line(url: str, fragment: str, in_process: Callable[..., Result]) -> None:
    for args in COMMANDS_WITH_A_URL:
        result = in_process(*args, "--url", url)
        assert_one_line_error(result, fragment)
        assert "hunter2" not in result.output


async def test_unreachable_redis_is_one_line_from_the_script(docket_name: str) -> None:
    url = f"redis://:sekrit@127.0.0.1:{free_port()}/0"
    result = await cli("worker", "--until-finished", "--url", url, "--docket", docket_name)
    assert_one_line_error(result, "Cannot reach Redis at redis://:***@127.0.0.1")
    assert result.code == 1
    assert "sekrit" not in result.output


def test_unreachable_redis_is_one_line(docket_name: str, in_process: Callable[..., Result]) -> None:
    url = f"redis://:sekrit@127.0.0.1:{free_port()}/0"
    for args in COMMANDS_WITH_A_URL:
        if args == ["worker"]:
            args = ["worker", "--until-finished"]
        result = in_process(*args, "--url", url, "--docket", docket_name)
        assert_one_line_error(result, "Cannot reach Redis at redis://:***@127.0.0.1")
        assert result.code == 1
        assert "sekrit" not in result.output


async def test_an_unknown_task_module_is_one_line_from_the_script(
    redis_url: str, docket_name: str
) -> None:
    result = await cli("worker", "--tasks", "no_such_module:tasks", *target(redis_url, docket_name))
    assert_one_line_error(
        result, "cannot import task collection 'no_such_module:tasks'", "no_such_module"
    )
    assert result.code == 1


async def test_an_app_that_cannot_be_imported_is_one_line() -> None:
    result = await cli("worker", "--app", "no_such_module:app")
    assert_one_line_error(result, "--app 'no_such_module:app'", "no module named 'no_such_module'")
    assert result.code == 1


def test_unknown_task_modules_are_one_line(
    redis_url: str, docket_name: str, tmp_path: Path, in_process: Callable[..., Result]
) -> None:
    (tmp_path / "broken.py").write_text("import not_installed_anywhere\ntasks = []\n")
    (tmp_path / "raises.py").write_text("tasks = []\nraise RuntimeError('no config')\n")
    (tmp_path / "badsyntax.py").write_text("tasks = [\n")
    cases = {
        "no_such_module:tasks": ["there is no module named 'no_such_module'"],
        "no_such_package.tasks:tasks": ["there is no module named 'no_such_package'"],
        "docket.tasks:no_such_name": ["module 'docket.tasks' has no 'no_such_name'"],
        "docket.tasks": ["must look like 'package.module:name'"],
        "docket.tasks:trace": ["not an iterable of task functions"],
        "broken:tasks": ["ModuleNotFoundError", "not_installed_anywhere", "broken.py:1"],
        "raises:tasks": ["RuntimeError: no config", "raises.py:2"],
        "badsyntax:tasks": ["SyntaxError", "badsyntax.py"],
    }
    for path, fragments in cases.items():
        for args in (["worker", "--until-finished"], ["snapshot"]):
            result = in_process(
                *args, "--tasks", path, *target(redis_url, docket_name), cwd=tmp_path
            )
            assert_one_line_error(result, *fragments)
    for option in ("--fallback-task", "--dependencies"):
        result = in_process(
            "worker", "--until-finished", option, "nowhere:thing", *target(redis_url, docket_name)
        )
        assert_one_line_error(result, "there is no module named 'nowhere'")


async def test_a_usage_error_is_one_line_from_the_script() -> None:
    result = await cli("worker", "--redelivery-timeout", "soon")
    assert_one_line_error(result, "--redelivery-timeout", "'soon' is not a duration")
    assert result.code == 2


def test_usage_errors_are_one_line_with_exit_2(in_process: Callable[..., Result]) -> None:
    for args, fragment in (
        (["worker", "--concurrency", "0"], "--concurrency"),
        (["worker", "--logging-format", "xml"], "--logging-format"),
        (["worker", "--logging-level", "loud"], "--logging-level"),
        (["worker", "--healthcheck-port", "70000"], "--healthcheck-port"),
        (["snapshot", "--docket", "no{braces}"], "Invalid docket name"),
        (["strike", "charge", "amount", "==", "itn:5"], "unknown type prefix 'itn'"),
        (["strike"], "a strike needs a function, a parameter, or both"),
        (["strike", "charge", "amount", "~", "int:1"], "OPERATOR"),
        (["strike", "charge", "amount", "between", "int:1"], "'between' takes 2 values, got 1"),
        (["strike", "charge", "amount", "==", "int:1", "int:2"], "'==' takes 1 value, got 2"),
        (["strike", "charge", "amount", "between", "int:5", "int:1"], "low <= high"),
        (["watch"], "Missing argument 'KEY'"),
        (["tasks", "sleep", "a-while"], "SECONDS"),
        (["tasks", "trace", "--delay", "soon"], "'soon' is not a duration"),
        (["dead-letters", "requeue"], "--all"),
        (["dead-letters", "purge", "1-1", "--all"], "not both"),
        (["dead-letters", "purge", "latest"], "'latest' is not a dead-letter id"),
        (["dead-letters", "list", "--limit", "0"], "--limit"),
        (["no-such-command"], "No such command"),
    ):
        result = in_process(*args)
        assert_one_line_error(result, fragment)
        assert result.code == 2, (args, result)


# -- strike and restore -------------------------------------------------------------------


async def test_strike_and_restore_with_typed_values(
    redis_url: str, docket_name: str, producer: Docket
) -> None:
    strikes = producer.strike_list

    result = await cli(
        "strike", "charge", "amount", ">", "int:100", *target(redis_url, docket_name)
    )
    assert result.code == 0, result
    assert "Striking charge amount > 100" in result.stdout

    async def struck(name: str, arguments: dict[str, Any]) -> bool:
        return strikes.is_stricken(name, arguments)

    await eventually(lambda: struck("charge", {"amount": 150}), what="the strike to arrive")
    assert not strikes.is_stricken("charge", {"amount": 50})
    assert not strikes.is_stricken("refund", {"amount": 150})

    result = await cli(
        "restore", "charge", "amount", ">", "int:100", *target(redis_url, docket_name)
    )
    assert result.code == 0, result
    assert "Restoring charge amount > 100" in result.stdout

    async def lifted() -> bool:
        return not strikes.is_stricken("charge", {"amount": 150})

    await eventually(lifted, what="the restore to arrive")


async def test_strikes_of_every_kind(
    redis_url: str, docket_name: str, producer: Docket, in_process: Callable[..., Result]
) -> None:
    strikes = producer.strike_list

    async def cli(*args: str) -> Result:  # the same main(), run here (in a thread)
        return await asyncio.to_thread(in_process, *args)

    async def struck(name: str, arguments: dict[str, Any]) -> bool:
        return strikes.is_stricken(name, arguments)

    result = await cli("strike", "*", "verbose", "==", "bool:true", *target(redis_url, docket_name))
    assert result.code == 0, result
    await eventually(lambda: struck("anything", {"verbose": True}), what="the bool strike")
    assert not strikes.is_stricken("anything", {"verbose": False})

    result = await cli(
        "strike",
        "charge",
        "when",
        "between",
        "datetime:2025-01-01T00:00:00+00:00",
        "datetime:2025-02-01T00:00:00+00:00",
        *target(redis_url, docket_name),
    )
    assert result.code == 0, result
    inside = datetime(2025, 1, 15, tzinfo=UTC)
    await eventually(lambda: struck("charge", {"when": inside}), what="the between strike")

    result = await cli("strike", "refund", *target(redis_url, docket_name))
    assert result.code == 0, result
    await eventually(lambda: struck("refund", {}), what="the whole-task strike")
    assert "Active strikes on" in result.stdout and "refund" in result.stdout

    # A struck task added through the CLI is not scheduled.
    result = await cli("restore", "refund", *target(redis_url, docket_name))
    assert result.code == 0, result
    result = await cli("strike", "trace", *target(redis_url, docket_name))
    result = await cli("tasks", "trace", *target(redis_url, docket_name))
    assert result.code == 1, result
    assert "struck" in result.stdout


# -- clear, snapshot, tasks -------------------------------------------------------------------


async def test_tasks_trace_fail_sleep_add_built_in_tasks(
    redis_url: str, docket_name: str, producer: Docket
) -> None:
    added: dict[str, str] = {}
    for name, args in {
        "trace": ["a message"],
        "fail": ["on purpose"],
        "sleep": ["0.1"],
    }.items():
        result = await cli("tasks", name, *args, *target(redis_url, docket_name))
        assert result.code == 0, result
        match = re.search(
            rf"Added {name} task '([^']+)' to the docket '{docket_name}'", result.stdout
        )
        assert match, result.stdout
        added[name] = match.group(1)

    result = await cli("worker", "--until-finished", *FAST, *target(redis_url, docket_name))
    assert result.code == 0, result
    assert "a message" in result.stdout and "on purpose" in result.stdout
    states = {}
    for name, key in added.items():
        execution = await producer.get_execution(key)
        assert execution is not None
        states[name] = execution.state
    assert states == {
        "trace": ExecutionState.COMPLETED,
        "fail": ExecutionState.FAILED,
        "sleep": ExecutionState.COMPLETED,
    }

    result = await cli(
        "tasks",
        "trace",
        "later",
        "--delay",
        "5m",
        "--key",
        "later-key",
        *target(redis_url, docket_name),
    )
    assert result.code == 0, result
    assert "'later-key'" in result.stdout and "due in 5m 00s" in result.stdout
    later = await producer.get_execution("later-key")
    assert later is not None and later.state == ExecutionState.SCHEDULED
    assert later.when - datetime.now(UTC) > timedelta(minutes=4)

    # The same key again is not added twice.
    result = await cli("tasks", "trace", "--key", "later-key", *target(redis_url, docket_name))
    assert result.code == 1, result
    assert "already scheduled" in result.stdout


async def test_clear_cancels_everything_not_started(
    redis_url: str, docket_name: str, producer: Docket
) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=10)
    executions = [
        await producer.add(trace, when=soon)("scheduled one"),
        await producer.add(trace, when=soon)("scheduled two"),
        await producer.add(trace)("queued"),
    ]
    result = await cli("clear", *target(redis_url, docket_name))
    assert result.code == 0, result
    assert result.stdout.strip() == f"Cleared 3 tasks from docket '{docket_name}'"
    for execution in executions:
        await execution.sync()
        assert execution.state == ExecutionState.CANCELLED
    result = await cli("clear", *target(redis_url, docket_name))
    assert result.stdout.strip() == f"Cleared 0 tasks from docket '{docket_name}'"


async def test_snapshot_and_stats(redis_url: str, docket_name: str, producer: Docket) -> None:
    empty = await cli("snapshot", *target(redis_url, docket_name))
    assert empty.code == 0, empty
    assert "0 workers, 0/0 running" in empty.stdout
    assert "Nothing is scheduled, queued or running" in empty.stdout

    later = datetime.now(UTC) + timedelta(minutes=5)
    await producer.add(trace, key="trace-now")("now")
    await producer.add(trace, when=later, key="trace-later")("later")
    await producer.add(sleep, when=later, key="sleep-later")(1)

    result = await cli("snapshot", *target(redis_url, docket_name))
    assert result.code == 0, result
    assert "0 workers, 0/3 running" in result.stdout
    for key in ("trace-now", "trace-later", "sleep-later"):
        assert key in result.stdout
    assert re.search(r"trace-now\s*│\s*queued", result.stdout), result.stdout
    assert re.search(r"in 4m \d\ds\s*│\s*sleep\s*│\s*sleep-later\s*│\s*scheduled", result.stdout)
    assert "Task Count Statistics by Function" not in result.stdout

    result = await cli("snapshot", "--stats", *target(redis_url, docket_name))
    assert result.code == 0, result
    assert "Task Count Statistics by Function" in result.stdout
    # Task, total, running, queued, scheduled.
    assert re.search(r"│ trace\s*│\s*2 │\s*0 │\s*1 │\s*1 │", result.stdout), result.stdout
    assert re.search(r"│ sleep\s*│\s*1 │\s*0 │\s*0 │\s*1 │", result.stdout), result.stdout


async def test_snapshot_and_worker_take_the_partition_count(
    redis_url: str, docket_name: str
) -> None:
    async with Docket(name=docket_name, url=redis_url, partitions=3) as partitioned:
        for n in range(6):
            await partitioned.add(trace, key=f"spread-{n}")(str(n))
        spread = {partitioned.keys_for(f"spread-{n}").partition for n in range(6)}
        assert len(spread) > 1
    result = await cli("snapshot", "--partitions", "3", *target(redis_url, docket_name))
    assert result.code == 0, result
    assert "0/6 running" in result.stdout
    # DOCKET_PARTITIONS is the same setting.
    by_env = await cli("snapshot", *target(redis_url, docket_name), env={"DOCKET_PARTITIONS": "3"})
    assert "0/6 running" in by_env.stdout, by_env
    mismatch = await cli("snapshot", "--partitions", "2", *target(redis_url, docket_name))
    assert_one_line_error(mismatch, "made with partitions=3", "partitions=2")
    worker = await cli(
        "worker", "--until-finished", "--partitions", "3", *target(redis_url, docket_name)
    )
    assert worker.code == 0, worker
    after = await cli("snapshot", "--partitions", "3", *target(redis_url, docket_name))
    assert "Nothing is scheduled, queued or running" in after.stdout
    bad = await cli("worker", "--partitions", "0", *target(redis_url, docket_name))
    assert bad.code == 2 and "--partitions" in bad.stderr, bad


async def test_snapshot_and_workers_with_a_live_worker(
    redis_url: str, docket_name: str, producer: Docket
) -> None:
    execution = await producer.add(sleep, key="long-nap")(30)
    worker = await start("worker", "--name", "napper", *FAST, *target(redis_url, docket_name))
    try:

        async def running() -> bool:
            await execution.sync()
            return execution.state == ExecutionState.RUNNING

        await eventually(running, what="the task to start")

        result = await cli("snapshot", *target(redis_url, docket_name))
        assert result.code == 0, result
        assert "1 workers, 1/1 running" in result.stdout
        assert re.search(r"long-nap\s*│\s*running\s*│\s*napper", result.stdout), result.stdout

        result = await cli("workers", "ls", *target(redis_url, docket_name))
        assert result.code == 0, result
        assert re.search(r"napper\s*│.*ago\s*│\s*fail, sleep, trace", result.stdout), result

        result = await cli("workers", "for-task", "sleep", *target(redis_url, docket_name))
        assert result.code == 0, result
        assert "that can run 'sleep'" in result.stdout and "napper" in result.stdout

        result = await cli("workers", "for-task", "nope", *target(redis_url, docket_name))
        assert result.code == 0, result
        assert f"No live worker of docket '{docket_name}' can run 'nope'" in result.stdout
    finally:
        worker.kill()
        await worker.wait()

    result = await cli("workers", "ls", *target(redis_url, docket_name + "-x"))
    assert result.stdout.strip() == f"No live workers in docket '{docket_name}-x'"


async def test_commands_read_url_and_docket_from_the_environment(
    redis_url: str, docket_name: str, producer: Docket
) -> None:
    await producer.add(trace, key="env-key")("hi")
    env = {"DOCKET_URL": redis_url, "DOCKET_NAME": docket_name, "DOCKET_SNAPSHOT_STATS": "true"}
    result = await cli("snapshot", env=env)
    assert result.code == 0, result
    assert "env-key" in result.stdout and "Task Count Statistics by Function" in result.stdout
    # The option wins over the variable.
    result = await cli("snapshot", "--docket", docket_name + "-other", env=env)
    assert "env-key" not in result.stdout


# -- watch ---------------------------------------------------------------------------------


async def test_watch_follows_progress_until_the_task_completes(
    redis_url: str, docket_name: str, producer: Docket, project: Path
) -> None:
    execution = await producer.add(crunch, key="crunchy")(4)
    watcher = await start("watch", "crunchy", *target(redis_url, docket_name))
    first = await read_lines(watcher, 2)
    assert first == [f"Watching crunch 'crunchy' on docket '{docket_name}'", "state: queued"]
    worker = await cli(
        "worker",
        "--until-finished",
        "--tasks",
        "clitasks:tasks",
        *FAST,
        *target(redis_url, docket_name),
        cwd=project,
    )
    assert worker.code == 0, worker
    result = await finish(watcher, timeout=15)

    assert result.code == 0, result
    lines = result.stdout.splitlines()
    assert any(line.startswith("state: running on ") for line in lines), lines
    assert "progress: 0/4 (0%)" in lines
    assert "progress: 2/4 (50%) step 2 of 4" in lines
    assert "progress: 4/4 (100%) step 4 of 4" in lines
    assert lines[-1].startswith("state: completed successfully after ")
    await execution.sync()
    assert execution.state == ExecutionState.COMPLETED


async def test_watch_draws_a_live_view_on_a_terminal(
    redis_url: str, docket_name: str, producer: Docket, project: Path
) -> None:
    await producer.add(crunch, key="on-screen")(3)
    watcher = await start(
        "watch", "on-screen", *target(redis_url, docket_name), env={"TTY_COMPATIBLE": "1"}
    )
    assert watcher.stdout is not None
    await asyncio.wait_for(watcher.stdout.read(1), 15)  # drawn: it has subscribed
    worker = await cli(
        "worker",
        "--until-finished",
        "--tasks",
        "clitasks:tasks",
        *FAST,
        *target(redis_url, docket_name),
        cwd=project,
    )
    assert worker.code == 0, worker
    result = await finish(watcher, timeout=15)
    assert result.code == 0, result
    for fragment in ("Task:", "on-screen", "State:", "COMPLETED", "step 3 of 3", "3/3", "100%"):
        assert fragment in result.stdout, fragment
    assert "\x1b[" in result.stdout  # drawn with terminal control sequences


async def test_watch_exit_codes(redis_url: str, docket_name: str, producer: Docket) -> None:
    await producer.add(fail, key="doomed")("bad luck")
    await producer.add(trace, key="fine")("ok")
    await producer.add(trace, key="called-off", when=datetime.now(UTC) + timedelta(hours=1))("x")
    await producer.cancel("called-off")
    worker = await cli("worker", "--until-finished", *FAST, *target(redis_url, docket_name))
    assert worker.code == 0, worker

    result = await cli("watch", "fine", *target(redis_url, docket_name))
    assert result.code == 0, result
    assert result.stdout.splitlines()[-1].startswith("state: completed")

    # As released, a task that ended is a watch that succeeded, however the task ended...
    result = await cli("watch", "doomed", *target(redis_url, docket_name))
    assert result.code == 0, result
    assert "state: failed" in result.stdout and "bad luck" in result.stdout
    # ...and --exit-code says how it ended.
    result = await cli("watch", "doomed", "--exit-code", *target(redis_url, docket_name))
    assert result.code == 1, result

    result = await cli("watch", "called-off", "--exit-code", *target(redis_url, docket_name))
    assert result.code == 3, result
    assert "state: cancelled" in result.stdout

    result = await cli("watch", "never-added", *target(redis_url, docket_name))
    assert result.code == 4, result
    assert_one_line_error(result, "there is no task 'never-added'")


async def test_watch_follows_a_scheduled_task_through_to_failure(
    redis_url: str, docket_name: str, producer: Docket
) -> None:
    await producer.add(fail, key="later-doom", when=datetime.now(UTC) + timedelta(seconds=1))(
        "eventually"
    )
    watcher = await start("watch", "later-doom", "--exit-code", *target(redis_url, docket_name))
    first = await read_lines(watcher, 2)
    assert first[1].startswith("state: scheduled, due "), first
    worker = await cli("worker", "--until-finished", *FAST, *target(redis_url, docket_name))
    assert worker.code == 0, worker
    result = await finish(watcher, timeout=15)
    assert result.code == 1, result
    lines = result.stdout.splitlines()
    assert any(line.startswith("state: running on ") for line in lines), lines
    assert "state: failed" in lines[-1] and "eventually" in lines[-1]


# -- dead letters ----------------------------------------------------------------------------


async def test_dead_letters_list_requeue_and_purge(
    redis_url: str, docket_name: str, producer: Docket, project: Path
) -> None:
    # One message for a task the worker below does not know, one that is garbage.
    execution = await producer.add(record, key="rescued")("rescued")
    async with producer.redis() as redis:
        await redis.xadd(producer.keys.stream, {"this": "is not a task"})

    result = await cli("worker", "--until-finished", *FAST, *target(redis_url, docket_name))
    assert result.code == 0, result
    assert "unknown task 'record'" in result.stdout

    result = await cli("dead-letters", "list", *target(redis_url, docket_name))
    assert result.code == 0, result
    assert f"Dead letters of docket '{docket_name}': 2" in result.stdout
    ids = re.findall(r"^│ (\d+-\d+)", result.stdout, re.MULTILINE)
    assert len(ids) == 2, result.stdout
    assert re.search(r"record\s*│\s*rescued\s*│\s*1 │ unknown task 'record'", result.stdout)
    assert "missing field(s)" in result.stdout

    result = await cli("dead-letters", "list", "--limit", "1", *target(redis_url, docket_name))
    assert "the oldest 1 of 2" in result.stdout

    result = await cli("dead-letters", "requeue", "--all", *target(redis_url, docket_name))
    assert result.code == 1, result  # the garbage one stays
    assert f"Requeued {ids[0]} (record 'rescued') as stream entry" in result.stdout
    assert f"Left {ids[1]} (message) in place: missing field(s)" in result.stdout
    assert "Requeued 1 dead letter, left 1" in result.stdout
    await execution.sync()
    assert execution.state == ExecutionState.QUEUED

    result = await cli(
        "worker",
        "--until-finished",
        "--tasks",
        "clitasks:tasks",
        *FAST,
        *target(redis_url, docket_name),
        cwd=project,
    )
    assert result.code == 0, result
    assert ran(project) == ["rescued"]
    await execution.sync()
    assert execution.state == ExecutionState.COMPLETED

    result = await cli("dead-letters", "requeue", "1-1", *target(redis_url, docket_name))
    assert result.code == 1, result
    assert "Left 1-1 (message) in place: no such dead letter" in result.stdout

    result = await cli("dead-letters", "purge", ids[1], "1-1", *target(redis_url, docket_name))
    assert result.code == 1, result  # 1-1 was not there
    assert f"Purged 1 dead letter from docket '{docket_name}'" in result.stdout

    result = await cli("dead-letters", "list", *target(redis_url, docket_name))
    assert result.stdout.strip() == f"No dead letters in docket '{docket_name}'"


async def test_dead_letters_purge_all(redis_url: str, docket_name: str, producer: Docket) -> None:
    async with producer.redis() as redis:
        for n in range(3):
            await redis.xadd(producer.keys.dead_letters, {"reason": f"test {n}"})
    result = await cli("dead-letters", "purge", "--all", *target(redis_url, docket_name))
    assert result.code == 0, result
    assert result.stdout.strip() == f"Purged 3 dead letters from docket '{docket_name}'"
    async with producer.redis() as redis:
        assert await redis.xlen(producer.keys.dead_letters) == 0


# -- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90", timedelta(seconds=90)),
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("250ms", timedelta(milliseconds=250)),
        ("0.5", timedelta(milliseconds=500)),
        ("1.5s", timedelta(seconds=1.5)),
        (".25s", timedelta(milliseconds=250)),
        ("05:30", timedelta(minutes=5, seconds=30)),
        ("90:00", timedelta(minutes=90)),
        ("1:02:03", timedelta(hours=1, minutes=2, seconds=3)),
        ("00:00:01.5", timedelta(seconds=1.5)),
        (" 5M ", timedelta(minutes=5)),
        ("0", timedelta(0)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "soon",
        "-5",
        "5x",
        "5 minutes",
        "1:2:3:4",
        "01:60",
        "1:60:00",
        "a:b",
        "inf",
        "nan",
        "1e400",
        "999999999999d",
        ":30",
        "1::2",
    ],
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|below 60"):
        parse_duration(text)


def test_durations_pass_timedeltas_through_and_format_defaults() -> None:
    assert parse_duration(timedelta(seconds=3)) == timedelta(seconds=3)
    assert format_duration_option(timedelta(minutes=5)) == "5m"
    assert format_duration_option(timedelta(seconds=5)) == "5s"
    assert format_duration_option(timedelta(milliseconds=250)) == "250ms"
    assert format_duration_option(timedelta(hours=2)) == "2h"
    assert format_duration_option(timedelta(seconds=90)) == "90s"
    assert format_duration_option(timedelta(0)) == "0s"


async def test_the_worker_keeps_finished_records_as_long_as_execution_ttl_says(
    redis_url: str, docket_name: str
) -> None:
    async with Docket(name=docket_name, url=redis_url) as docket:
        kept = await docket.add(trace, key="kept-briefly")("hello")
        result = await cli(
            "worker", "--until-finished", "--execution-ttl", "0", *target(redis_url, docket_name)
        )
        assert result.code == 0, result
        # 0 keeps nothing: the record went with the run's end.
        assert await docket.get_execution(kept.key) is None
        await docket.add(trace, key="kept-default")("hello")
        result = await cli("worker", "--until-finished", *target(redis_url, docket_name))
        assert result.code == 0, result
        stored = await docket.get_execution("kept-default")
        assert stored is not None and stored.state is ExecutionState.COMPLETED
    bad = await cli("worker", "--execution-ttl", "soon", *target(redis_url, docket_name))
    assert bad.code == 2 and "--execution-ttl" in bad.stderr, bad
    under_app = await cli("worker", "--app", "x:app", "--execution-ttl", "1m")
    assert_one_line_error(under_app, "--execution-ttl is the app's docket's own setting")
