"""Every name that code written for the released docket (0.27) imports is importable
from ours and is the right kind of thing.

The catalogue was read from the released package's source (``pydocket==0.27.0``):
the names its users import, by module; ``docket.dependencies`` and
``docket.execution`` are checked where their names live.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import typer
from opentelemetry.metrics import Counter, Histogram, UpDownCounter
from opentelemetry.metrics import _Gauge as Gauge


def is_class(value: Any) -> bool:
    return inspect.isclass(value)


def is_async_function(value: Any) -> bool:
    return inspect.iscoroutinefunction(value)


def is_function(value: Any) -> bool:
    return inspect.isfunction(value)


def is_counter(value: Any) -> bool:
    return isinstance(value, Counter) and callable(value.add)


def is_up_down_counter(value: Any) -> bool:
    return isinstance(value, UpDownCounter) and callable(value.add)


def is_histogram(value: Any) -> bool:
    return isinstance(value, Histogram) and callable(value.record)


def is_gauge(value: Any) -> bool:
    return isinstance(value, Gauge) and callable(value.set)


def is_module(value: Any) -> bool:
    return inspect.ismodule(value)


def is_anything(value: Any) -> bool:
    return value is not None


COUNTERS = [
    "TASKS_ADDED",
    "TASKS_REPLACED",
    "TASKS_SCHEDULED",
    "TASKS_CANCELLED",
    "TASKS_STARTED",
    "TASKS_REDELIVERED",
    "TASKS_STRICKEN",
    "TASKS_SUPERSEDED",
    "TASKS_COMPLETED",
    "TASKS_FAILED",
    "TASKS_SUCCEEDED",
    "TASKS_RETRIED",
    "TASKS_PERPETUATED",
]

CATALOGUE: list[tuple[str, str, Callable[[Any], bool]]] = [
    ("docket", "Docket", is_class),
    ("docket", "Worker", is_class),
    ("docket", "Execution", is_class),
    ("docket", "ExecutionState", is_class),
    ("docket", "ExecutionCancelled", is_class),
    ("docket", "Disposition", is_class),
    ("docket", "Logged", is_class),
    ("docket", "StrikeList", is_class),
    ("docket", "Agenda", is_class),
    ("docket", "__version__", lambda v: isinstance(v, str)),
    ("docket", "tasks", is_module),
    ("docket", "testing", is_module),
    ("docket.docket", "Docket", is_class),
    ("docket.docket", "DocketSnapshot", is_class),
    ("docket.docket", "WorkerInfo", is_class),
    ("docket.docket", "RunningExecution", is_class),
    ("docket.worker", "Worker", is_class),
    ("docket.worker", "default_fallback_task", is_async_function),
    ("docket.strikelist", "StrikeList", is_class),
    ("docket.strikelist", "Strike", is_class),
    ("docket.strikelist", "Restore", is_class),
    ("docket.strikelist", "Operator", is_class),
    ("docket.strikelist", "LiteralOperator", is_anything),
    ("docket.agenda", "Agenda", is_class),
    ("docket.annotations", "Logged", is_class),
    ("docket.tasks", "trace", is_async_function),
    ("docket.tasks", "fail", is_async_function),
    ("docket.tasks", "sleep", is_async_function),
    ("docket.tasks", "standard_tasks", lambda v: isinstance(v, list) and len(v) == 3),
    ("docket.testing", "assert_task_scheduled", is_async_function),
    ("docket.testing", "assert_task_not_scheduled", is_async_function),
    ("docket.testing", "assert_task_count", is_async_function),
    ("docket.testing", "assert_no_tasks", is_async_function),
    ("docket.cli", "app", lambda v: isinstance(v, typer.Typer)),
    ("docket.cli", "duration", is_function),
    ("docket.cli", "interpret_python_value", is_function),
    ("docket.cli", "iterate_with_timeout", inspect.isasyncgenfunction),
    ("docket.cli", "relative_time", is_function),
    ("docket.cli", "validate_url", is_function),
    ("docket.cli", "snapshot", is_function),
    ("docket.cli", "worker", is_function),
    ("docket._redis", "confirm_subscriptions", is_async_function),
    ("docket.instrumentation", "healthcheck_server", callable),
    ("docket.instrumentation", "metrics_server", callable),
    ("docket.instrumentation", "message_getter", lambda v: callable(v.get) and callable(v.keys)),
    ("docket.instrumentation", "message_setter", lambda v: callable(v.set)),
    *[("docket.instrumentation", name, is_counter) for name in COUNTERS],
    ("docket.instrumentation", "TASKS_RUNNING", is_up_down_counter),
    ("docket.instrumentation", "TASK_DURATION", is_histogram),
    ("docket.instrumentation", "TASK_PUNCTUALITY", is_histogram),
    ("docket.instrumentation", "QUEUE_DEPTH", is_gauge),
    ("docket.instrumentation", "SCHEDULE_DEPTH", is_gauge),
    *[
        ("docket", name, callable)
        for name in (
            "CallArgument", "ConcurrencyLimit", "Cooldown", "Cron", "CurrentDocket",
            "CurrentExecution", "CurrentWorker", "CycleError", "Debounce", "Depends",
            "ExponentialRetry", "Perpetual", "Progress", "RateLimit", "Retry", "Shared",
            "TaskArgument", "TaskCall", "TaskKey", "TaskLogger", "Timeout",
        )
    ],
    ("docket.execution", "Disposition", is_class),
    ("docket.execution", "Execution", is_class),
    ("docket.execution", "ExecutionProgress", is_class),
    ("docket.execution", "ExecutionState", is_class),
    ("docket.execution", "ProgressEvent", is_class),
    ("docket.execution", "StateEvent", is_class),
    ("docket.execution", "TaskFunction", is_anything),
    ("docket.execution", "TaskCall", is_class),
    ("docket.execution", "compact_signature", is_function),
    ("docket.execution", "get_signature", is_function),
    ("docket.execution", "schedule_many", is_async_function),
    *[
        ("docket.dependencies", name, is_class)
        for name in (
            "AdmissionBlocked", "ConcurrencyBlocked", "CompletionHandler", "FailureHandler",
            "Runtime", "TaskOutcome", "Dependency", "ConcurrencyLimit", "Cooldown",
            "Debounce", "RateLimit", "SharedContext", "CycleError", "FailedDependency",
        )
    ],
    *[
        ("docket.dependencies", name, callable)
        for name in (
            "format_duration", "get_single_dependency_of_type",
            "get_single_dependency_parameter_of_type", "resolved_dependencies", "Shared",
            "CallArgument", "validate_dependencies", "_Depends",
        )
    ],
    *[
        ("docket.dependencies", name, lambda v: callable(v.get) and callable(v.set))
        for name in ("current_docket", "current_execution", "current_worker")
    ],
    ("docket.dependencies", "_parameter_cache", lambda v: callable(v.pop) and callable(v.get)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("module", "name", "check"), CATALOGUE, ids=[f"{m}.{n}" for m, n, _ in CATALOGUE]
)
def test_released_name_is_importable(module: str, name: str, check: Callable[[Any], bool]) -> None:
    value = getattr(importlib.import_module(module), name)
    assert check(value), f"{module}.{name} is {value!r}"


def test_worker_run_keeps_the_released_argument_order() -> None:
    from docket import Worker

    released = [
        "docket_name",
        "url",
        "name",
        "concurrency",
        "redelivery_timeout",
        "reconnection_delay",
        "minimum_check_interval",
        "scheduling_resolution",
        "schedule_automatic_tasks",
        "enable_internal_instrumentation",
        "until_finished",
        "healthcheck_port",
        "metrics_port",
        "tasks",
        "fallback_task",
        "message_batch",
        "dependencies",
    ]
    parameters = list(inspect.signature(Worker.run).parameters)
    assert parameters[: len(released)] == released


def test_the_worker_command_offers_every_option_of_worker_run() -> None:
    from docket import Worker
    from docket.cli import worker

    command = inspect.signature(worker).parameters
    for name, parameter in inspect.signature(Worker.run).parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue  # the other WorkerOptions fields: tests/test_worker_options.py
        option = command["docket_" if name == "docket_name" else name]
        if name != "name":
            assert option.default == parameter.default, name


def test_python_dash_m_docket_runs_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "docket", "version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
