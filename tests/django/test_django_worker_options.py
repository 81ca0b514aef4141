"""Django's worker entry points hold to the one definition of the worker's options:
every ``WorkerOptions`` field is a ``DOCKET["WORKER"]`` key and a ``docket_worker``
flag, and reaches the ``Worker`` a real run builds."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from _helpers import portal_execution
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError

from docket import ExecutionState
from docket._worker_options import OptionSpec, option_specs
from docket_django.conf import docket_settings
from docket_django.management.commands.docket_worker import Command
from docket_django.portal import get_portal
from docket_django.worker import WorkerRun

HOOKS = "djtestapp.worker_hooks"
# The option fields named by path; a new one needs a path here.
PATHS = {"fallback_task": f"{HOOKS}:fallback", "dependencies": f"{HOOKS}:dependencies"}


def _given(spec: OptionSpec) -> Any:
    """A value for the option other than its default, as a settings file gives it."""
    if spec.kind == "text":
        return f"worker-{spec.name}"
    if spec.kind == "count":
        return spec.default + 2 if spec.default is not None else 40
    if spec.kind == "duration":
        return spec.default / 4
    if spec.kind == "flag":
        return not spec.default
    assert spec.name in PATHS, f"give {spec.name} a path in PATHS"
    return PATHS[spec.name]


def _expected(spec: OptionSpec) -> Any:
    """What the Worker should be holding for ``_given(spec)``."""
    if spec.kind != "import":
        return _given(spec)
    from djtestapp import worker_hooks

    return getattr(worker_hooks, PATHS[spec.name].partition(":")[2])


def _flag(spec: OptionSpec) -> list[str]:
    """``_given(spec)`` on the command line (durations in plain seconds)."""
    value = _given(spec)
    if spec.kind == "flag":
        return [spec.flag if value else "--no-" + spec.flag.removeprefix("--")]
    if spec.kind == "duration":
        return [spec.flag, str(value.total_seconds())]
    return [spec.flag, str(value)]


def _serve(run: WorkerRun) -> Any:
    """Run ``run`` for real until the docket is empty; the worker it ran."""
    get_portal().run(run.serve(), timeout=60)
    assert run.worker is not None
    return run.worker


def _assert_reached(worker: Any) -> None:
    for spec in option_specs():
        assert getattr(worker.options, spec.name) == _expected(spec), spec.name
    assert worker.docket.enable_internal_instrumentation is _expected(
        next(s for s in option_specs() if s.name == "enable_internal_instrumentation")
    )


def test_every_option_is_a_setting(settings: Any, docket_setting: dict[str, Any]) -> None:
    worker_setting = {spec.name.upper(): _given(spec) for spec in option_specs()}
    settings.DOCKET = {
        **docket_setting,
        "WORKER": {**worker_setting, "SYNC_THREADS": 2, "TASKS": [f"{HOOKS}:collection"]},
    }
    configured = docket_settings().worker
    assert configured.sync_threads == 2
    worker = _serve(WorkerRun(options=configured, until_finished=True))
    _assert_reached(worker)
    assert "hook_task" in worker.docket.tasks


def test_every_option_is_a_flag(docket_setting: dict[str, Any]) -> None:
    flags = [item for spec in option_specs() for item in _flag(spec)]
    parser = Command().create_parser("manage.py", "docket_worker")
    options = vars(parser.parse_args([*flags, "--until-finished", "--sync-threads", "2"]))
    run = Command().worker_run(**options)
    assert run.options.sync_threads == 2
    _assert_reached(_serve(run))


def test_durations_take_the_command_lines_syntax() -> None:
    parser = Command().create_parser("manage.py", "docket_worker")
    options = vars(
        parser.parse_args(["--redelivery-timeout", "2m", "--reconnection-delay", "1:30"])
    )
    assert options["redelivery_timeout"] == timedelta(minutes=2)
    assert options["reconnection_delay"] == timedelta(seconds=90)
    assert vars(parser.parse_args(["--minimum-check-interval", "0.01"]))[
        "minimum_check_interval"
    ] == timedelta(milliseconds=10)


def test_flags_left_out_keep_the_settings(settings: Any, docket_setting: dict[str, Any]) -> None:
    settings.DOCKET = {**docket_setting, "WORKER": {"CONCURRENCY": 3, "MAX_DELIVERIES": 2}}
    parser = Command().create_parser("manage.py", "docket_worker")
    run = Command().worker_run(**vars(parser.parse_args(["--concurrency", "4"])))
    assert (run.options.concurrency, run.options.max_deliveries) == (4, 2)
    # Automatic tasks would keep --until-finished from finishing: off unless asked.
    until = vars(parser.parse_args(["--until-finished"]))
    assert Command().worker_run(**until).options.schedule_automatic_tasks is False
    asked = vars(parser.parse_args(["--until-finished", "--schedule-automatic-tasks"]))
    assert Command().worker_run(**asked).options.schedule_automatic_tasks is True


def _bad(spec: OptionSpec) -> Any:
    return {"text": 3, "count": 0, "duration": "soon", "flag": "yes", "import": "no-colon"}[
        spec.kind
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        *((spec.name.upper(), _bad(spec)) for spec in option_specs()),
        ("REDELIVERY_TIMEOUT", 0),
        ("MAX_TASKS", True),
        ("SYNC_THREADS", 0),
        ("TASKS", f"{HOOKS}:collection"),
        ("RECYCLE_AFTER", 5),
    ],
)
def test_bad_settings_name_their_key(
    settings: Any, docket_setting: dict[str, Any], key: str, value: Any
) -> None:
    settings.DOCKET = {**docket_setting, "WORKER": {key: value}}
    with pytest.raises(ImproperlyConfigured, match=key):
        docket_settings()


@pytest.mark.parametrize(
    "flags",
    [
        ["--concurrency", "0"],
        ["--max-tasks", "-1"],
        ["--redelivery-timeout", "soon"],
        ["--sync-threads", "none"],
    ],
)
def test_bad_flags_name_their_flag(flags: list[str]) -> None:
    parser = Command().create_parser("manage.py", "docket_worker")
    with pytest.raises(CommandError, match=flags[0]):
        parser.parse_args(flags)


def test_bad_paths_fail_before_connecting(docket_setting: dict[str, Any]) -> None:
    parser = Command().create_parser("manage.py", "docket_worker")
    for flags, message in (
        (["--fallback-task", f"{HOOKS}:nope"], "fallback task"),
        (["--dependencies", f"{HOOKS}:not_dependencies"], "Worker dependency"),
        (["--redelivery-timeout", "0"], "redelivery_timeout"),
    ):
        with pytest.raises(CommandError, match=message):
            Command().worker_run(**vars(parser.parse_args(flags)))


def _completed(keys: list[str]) -> int:
    executions = [portal_execution("default", key) for key in keys]
    return sum(1 for e in executions if e is not None and e.state == ExecutionState.COMPLETED)


def _enqueue_five() -> list[str]:
    from djtestapp.tasks import listed_task

    from docket_django import enqueue

    return [enqueue(listed_task, i, on_commit=False) for i in range(5)]


def test_max_tasks_setting_recycles_a_worker(settings: Any, docket_setting: dict[str, Any]) -> None:
    settings.DOCKET = {
        **docket_setting,
        "WORKER": {
            **docket_setting["WORKER"],
            "MAX_TASKS": 2,
            "CONCURRENCY": 1,
            "SCHEDULE_AUTOMATIC_TASKS": False,
        },
    }
    keys = _enqueue_five()
    # run_forever: only the budget ends this run.
    worker = _serve(WorkerRun(options=docket_settings().worker))
    assert worker.tasks_started == 2
    assert _completed(keys) == 2


def test_max_tasks_setting_ends_the_command_under_debug(
    settings: Any, docket_setting: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With MAX_TASKS in the settings the command must exit, so it does not reload,
    even when DEBUG would have it reload."""
    # Were the autoreloader used, it would then run in this process (and never return)
    # rather than start this test run again in a child process.
    monkeypatch.setenv("RUN_MAIN", "true")
    settings.DEBUG = True
    settings.DOCKET = {
        **docket_setting,
        "WORKER": {**docket_setting["WORKER"], "MAX_TASKS": 3, "CONCURRENCY": 1},
    }
    keys = _enqueue_five()
    call_command("docket_worker", "--no-schedule-automatic-tasks")
    assert _completed(keys) == 3


def test_max_tasks_flag_recycles_a_worker(docket_setting: dict[str, Any]) -> None:
    keys = _enqueue_five()
    call_command(
        "docket_worker", "--max-tasks", "2", "--concurrency", "1", "--no-schedule-automatic-tasks"
    )
    assert _completed(keys) == 2


def test_every_option_is_documented() -> None:
    from pathlib import Path

    guide = (Path(__file__).parent.parent.parent / "docs" / "django.md").read_text()
    for spec in option_specs():
        assert f"`{spec.name.upper()}`" in guide, spec.name
        flag = spec.flag if spec.kind != "flag" else "--[no-]" + spec.flag.removeprefix("--")
        assert f"[{flag}" in guide, flag


def test_paths_may_be_dotted_as_django_names_them(
    settings: Any, docket_setting: dict[str, Any]
) -> None:
    from djtestapp import worker_hooks

    settings.DOCKET = {**docket_setting, "WORKER": {"FALLBACK_TASK": f"{HOOKS}.fallback"}}
    options = docket_settings().worker.worker_options()
    assert options.fallback_task is worker_hooks.fallback
