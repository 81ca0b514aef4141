"""``docket worker``: run a worker until stopped (or until the docket is empty)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
from collections.abc import Coroutine
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer

from .._imports import ImportPathError
from .._worker_options import OptionSpec, option_specs
from ..dependencies import validate_worker_dependencies
from ..docket import Docket
from ..logging import configure_logging
from ..metrics_server import MetricsUnavailable
from ._commands import parameter, sign
from .options import (
    DEFAULT_DOCKET,
    DEFAULT_URL,
    EXIT_INTERRUPTED,
    CliError,
    DocketOption,
    ExecutionTtlOption,
    PartitionsOption,
    WorkerUrlOption,
    duration_option,
    fail,
    import_member,
    load_collection,
    run,
    safe_url,
)

logger = logging.getLogger("docket.cli")

DEFAULT_TASKS = ["docket.tasks:standard_tasks"]


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class LogFormat(StrEnum):
    RICH = "rich"
    PLAIN = "plain"
    JSON = "json"


def default_log_format() -> LogFormat:
    """Rich on a terminal, plain text otherwise (log files, containers, pipes)."""
    return LogFormat.RICH if sys.stdout.isatty() else LogFormat.PLAIN


def _worker_class() -> Any:
    # Looked up on the docket.cli package at call time: tools (and the released test
    # suite) replace docket.cli.Worker to see what the command would run.
    from .. import cli

    return cli.Worker


def _check_collections(
    docket: str, url: str, tasks: list[str], partitions: int | None = None
) -> list[str]:
    """Import and register every collection now, so a bad one fails before connecting.
    Returns the names of the tasks the worker will run."""
    try:
        probe = Docket(name=docket, url=url, partitions=partitions)
    except ValueError as error:
        raise CliError(str(error)) from None
    for path in tasks:
        for function in load_collection(path):
            try:
                probe.register(function)
            except (AttributeError, TypeError, ValueError) as error:
                raise CliError(f"task collection {path!r}: {error}") from None
    return sorted(probe.tasks)


def _check_imports(values: dict[str, Any]) -> None:
    """Import the ``module:name`` options now, so a bad one fails before connecting."""
    fallback = values.get("fallback_task")
    if fallback:
        member = import_member(fallback, "fallback task")
        if not callable(member):
            raise CliError(
                f"fallback task {fallback!r} is a {type(member).__name__}, not a function"
            )
    dependencies = values.get("dependencies")
    if dependencies:
        member = import_member(dependencies, "worker dependencies")
        try:
            validate_worker_dependencies(member)
        except (TypeError, ValueError) as error:
            raise CliError(f"worker dependencies {dependencies!r}: {error}") from None


def _annotation(spec: OptionSpec) -> Any:
    """The typer option of one ``WorkerOptions`` field."""
    envvar = spec.envvar
    if spec.name == "fallback_task":
        envvar = "DOCKET_FALLBACK_TASK"  # as released
    common: dict[str, Any] = {"help": spec.help, "envvar": envvar, "show_envvar": True}
    if spec.kind == "duration":
        option = duration_option(spec.help, envvar, spec.command_line_default, spec.flag)
        return Annotated[timedelta, option]
    if spec.kind == "flag":
        dashed = spec.name.replace("_", "-")
        return Annotated[bool, typer.Option(f"--{dashed}/--no-{dashed}", **common)]
    if spec.kind == "count":
        kind: Any = int if spec.default is not None else int | None
        return Annotated[kind, typer.Option(spec.flag, min=1, **common)]
    return Annotated[str | None, typer.Option(spec.flag, **common)]


def _parameter(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return parameter(name, annotation, default, inspect.Parameter.KEYWORD_ONLY)


def worker(**values: Any) -> None:
    """Run a worker: claim and run the docket's tasks.

    It runs until SIGTERM or SIGINT: the first lets in-flight tasks finish (then exits 0),
    a second exits at once. DURATION is 90, 90s, 250ms, 5m, 1h, mm:ss or hh:mm:ss.
    """
    # Called as a function (tools and tests do), it takes any subset of its options.
    values = {parameter.name: parameter.default for parameter in _PARAMETERS} | values
    logging_level: LogLevel = values.pop("logging_level")
    app: str | None = values.pop("app")
    logging_format: LogFormat | None = values.pop("logging_format")
    docket_: str = values.pop("docket_")
    # What is left is what Worker.run takes besides docket_name, passed on as it is: the
    # task collections, the URL, --until-finished, the two ports and exactly the
    # WorkerOptions fields (the signature below says so).
    url: str = values["url"]
    tasks: list[str] = values["tasks"]
    # Logs go to stdout, as the released worker's did (scripts and probes read them there).
    configure_logging(
        LogLevel(logging_level).value,
        LogFormat(logging_format or default_log_format()).value,
        stream=sys.stdout,
        batched=True,
    )
    # This process logs through our formatters alone, which never show a record's thread,
    # process or asyncio task: skip gathering them for the two lines every run logs.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined, unused-ignore]
    # Passed on only when given: tools that replace Worker see the released arguments.
    partitions: int | None = values.pop("partitions")
    execution_ttl: timedelta | None = values.pop("execution_ttl")
    try:
        _check_collections(docket_, url, tasks, partitions)
        _check_imports(values)
    except CliError as error:
        fail(str(error), error.code)
    logger.info("Connecting to docket %r at %s", docket_, safe_url(url))
    if partitions is not None:
        values["partitions"] = partitions
    if execution_ttl is not None:
        if app is not None:
            fail(
                "--execution-ttl is the app's docket's own setting under --app (set it in "
                "docket_lifespan(docket_options={'execution_ttl': ...}))"
            )
        values["execution_ttl"] = execution_ttl
    if app is not None:
        _run_in_app(app, docket_, values)
        return
    _run_until_stopped(_worker_class().run(docket_name=docket_, **values))


def _run_in_app(app: str, docket_: str, values: dict[str, Any]) -> None:
    runner = _app_runner()
    tasks: list[str] = values.pop("tasks")
    url: str = values.pop("url")
    partitions: int | None = values.pop("partitions", None)
    if partitions is not None:
        # The app's lifespan makes its docket itself; this is the setting it reads.
        os.environ["DOCKET_PARTITIONS"] = str(partitions)
    # The runner's other keywords are WorkerOptions fields alone: it serves neither a
    # health check nor metrics, so the two ports go no further.
    del values["healthcheck_port"], values["metrics_port"]
    for key in ("fallback_task", "dependencies"):
        if values.get(key):
            values[key] = import_member(values[key], key.replace("_", " "))
    _run_until_stopped(
        runner(
            app,
            tasks=[t for t in tasks if t not in DEFAULT_TASKS],
            # The app's lifespan opens its own docket; only insist on one named explicitly.
            url=url if url != DEFAULT_URL else None,
            docket_name=docket_ if docket_ != DEFAULT_DOCKET else None,
            **values,
        )
    )


def _run_until_stopped(main: Coroutine[Any, Any, None]) -> None:
    try:
        run(main)
    except (MetricsUnavailable, ImportPathError) as error:
        fail(str(error))
    except asyncio.CancelledError:
        # A second SIGTERM/SIGINT: in-flight tasks were abandoned to redelivery.
        raise typer.Exit(EXIT_INTERRUPTED) from None
    logger.info("Worker stopped")


_LEADING = [
    _parameter(
        "tasks",
        Annotated[
            list[str],
            typer.Option(
                "--tasks",
                help="A task collection to register, as module:name (any iterable of task "
                "functions); repeat for more. The working directory is importable.",
                envvar="DOCKET_TASKS",
                show_envvar=True,
            ),
        ],
        DEFAULT_TASKS,
    ),
    _parameter("docket_", DocketOption, DEFAULT_DOCKET),
    _parameter("url", WorkerUrlOption, DEFAULT_URL),
    _parameter("partitions", PartitionsOption, None),
    _parameter("execution_ttl", ExecutionTtlOption, None),
]
_TRAILING = [
    _parameter(
        "until_finished",
        Annotated[
            bool,
            typer.Option(
                "--until-finished",
                help="Exit (0) once nothing is scheduled, queued or running",
                envvar="DOCKET_WORKER_UNTIL_FINISHED",
                show_envvar=True,
            ),
        ],
        False,
    ),
    *(
        _parameter(
            f"{what}_port",
            Annotated[
                int | None,
                typer.Option(
                    help=text,
                    envvar=f"DOCKET_WORKER_{what.upper()}_PORT",
                    show_envvar=True,
                    min=0,
                    max=65535,
                ),
            ],
            None,
        )
        for what, text in (
            ("healthcheck", "Serve a health check on this port: 200 while the worker is healthy"),
            ("metrics", "Serve Prometheus metrics on this port"),
        )
    ),
    _parameter(
        "logging_level",
        Annotated[
            LogLevel,
            typer.Option(
                help="The lowest level logged",
                envvar="DOCKET_LOGGING_LEVEL",
                show_envvar=True,
                case_sensitive=False,
            ),
        ],
        LogLevel.INFO,
    ),
    _parameter(
        "app",
        Annotated[
            str | None,
            typer.Option(
                help="Run the worker inside a web app's lifespan (module:attr), so tasks can "
                "use the app's own dependencies; needs an adapter such as pydocket[fastapi]",
                envvar="DOCKET_WORKER_APP",
                show_envvar=True,
            ),
        ],
        None,
    ),
    _parameter(
        "logging_format",
        Annotated[
            LogFormat | None,
            typer.Option(
                help="How log lines look [default: rich on a terminal, else plain]",
                envvar="DOCKET_LOGGING_FORMAT",
                show_envvar=True,
                case_sensitive=False,
            ),
        ],
        None,
    ),
]
# typer reads the command's options from its signature: one per WorkerOptions field,
# between the docket's and the process's own.
_PARAMETERS = [
    *_LEADING,
    *(
        _parameter(spec.name, _annotation(spec), spec.command_line_default)
        for spec in option_specs()
    ),
    *_TRAILING,
]
sign(worker, _PARAMETERS)


def _app_runner() -> Any:
    """The web adapter that knows how to enter an app's lifespan around a worker.

    Adapters advertise themselves under the ``docket.app_runners`` entry point group, so
    the core never imports a web framework itself.
    """
    from importlib.metadata import entry_points

    found = list(entry_points(group="docket.app_runners"))
    if not found:
        fail("--app needs a web adapter: pip install 'pydocket[fastapi]' (or [starlette])")
    return found[0].load()
