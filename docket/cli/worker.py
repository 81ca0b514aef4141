"""``docket worker``: run a worker until stopped (or until the docket is empty)."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer

from ..docket import Docket
from ..logging import configure_logging
from ..metrics_server import MetricsUnavailable
from ..worker import DEFAULT_MAX_DELIVERIES
from .options import (
    DEFAULT_DOCKET,
    DEFAULT_URL,
    EXIT_INTERRUPTED,
    CliError,
    DocketOption,
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


def _check_collections(docket: str, url: str, tasks: list[str]) -> list[str]:
    """Import and register every collection now, so a bad one fails before connecting.
    Returns the names of the tasks the worker will run."""
    probe = Docket(name=docket, url=url)
    for path in tasks:
        for function in load_collection(path):
            try:
                probe.register(function)
            except (AttributeError, TypeError, ValueError) as error:
                raise CliError(f"task collection {path!r}: {error}") from None
    return sorted(probe.tasks)


def _check_member(path: str | None, what: str) -> None:
    if path is None:
        return
    member = import_member(path, what)
    if what == "fallback task" and not callable(member):
        raise CliError(f"fallback task {path!r} is a {type(member).__name__}, not a function")
    if what == "worker dependencies":
        from ..dependencies import validate_worker_dependencies

        try:
            validate_worker_dependencies(member)
        except (TypeError, ValueError) as error:
            raise CliError(f"worker dependencies {path!r}: {error}") from None


def worker(
    tasks: Annotated[
        list[str],
        typer.Option(
            "--tasks",
            help="A task collection to register, as module:name (any iterable of task "
            "functions); repeat for more. The working directory is importable.",
            envvar="DOCKET_TASKS",
            show_envvar=True,
        ),
    ] = DEFAULT_TASKS,
    docket_: DocketOption = DEFAULT_DOCKET,
    url: WorkerUrlOption = DEFAULT_URL,
    name: Annotated[
        str | None,
        typer.Option(
            help="The worker's name [default: hostname#pid]",
            envvar="DOCKET_WORKER_NAME",
            show_envvar=True,
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            help="How many tasks run at once",
            envvar="DOCKET_WORKER_CONCURRENCY",
            show_envvar=True,
            min=1,
        ),
    ] = 10,
    redelivery_timeout: Annotated[
        timedelta,
        duration_option(
            "How long a task may go without its worker renewing its lease before another "
            "worker takes it over",
            "DOCKET_WORKER_REDELIVERY_TIMEOUT",
            timedelta(minutes=5),
            "--redelivery-timeout",
        ),
    ] = timedelta(minutes=5),
    reconnection_delay: Annotated[
        timedelta,
        duration_option(
            "How long to wait before trying Redis again after an error",
            "DOCKET_WORKER_RECONNECTION_DELAY",
            timedelta(seconds=5),
            "--reconnection-delay",
        ),
    ] = timedelta(seconds=5),
    minimum_check_interval: Annotated[
        timedelta,
        duration_option(
            "How often to look for work when the docket is quiet",
            "DOCKET_WORKER_MINIMUM_CHECK_INTERVAL",
            timedelta(milliseconds=100),
            "--minimum-check-interval",
        ),
    ] = timedelta(milliseconds=100),
    scheduling_resolution: Annotated[
        timedelta,
        duration_option(
            "How often to move tasks that have come due onto the stream",
            "DOCKET_WORKER_SCHEDULING_RESOLUTION",
            timedelta(milliseconds=250),
            "--scheduling-resolution",
        ),
    ] = timedelta(milliseconds=250),
    message_batch: Annotated[
        int,
        typer.Option(
            help="The most messages one read from Redis may claim",
            envvar="DOCKET_WORKER_MESSAGE_BATCH",
            show_envvar=True,
            min=1,
        ),
    ] = 1000,
    max_deliveries: Annotated[
        int,
        typer.Option(
            help="How many times a message may be delivered without settling (its worker "
            "died or hung each time) before it is dead-lettered instead of run again",
            envvar="DOCKET_WORKER_MAX_DELIVERIES",
            show_envvar=True,
            min=1,
        ),
    ] = DEFAULT_MAX_DELIVERIES,
    schedule_automatic_tasks: Annotated[
        bool,
        typer.Option(
            "--schedule-automatic-tasks/--no-schedule-automatic-tasks",
            help="Schedule the automatic Perpetual tasks of the registered collections",
            envvar="DOCKET_WORKER_SCHEDULE_AUTOMATIC_TASKS",
            show_envvar=True,
        ),
    ] = True,
    enable_internal_instrumentation: Annotated[
        bool,
        typer.Option(
            "--enable-internal-instrumentation/--no-enable-internal-instrumentation",
            help="Trace the worker's internal Redis polling too",
            envvar="DOCKET_WORKER_ENABLE_INTERNAL_INSTRUMENTATION",
            show_envvar=True,
        ),
    ] = False,
    until_finished: Annotated[
        bool,
        typer.Option(
            "--until-finished",
            help="Exit (0) once nothing is scheduled, queued or running",
            envvar="DOCKET_WORKER_UNTIL_FINISHED",
            show_envvar=True,
        ),
    ] = False,
    healthcheck_port: Annotated[
        int | None,
        typer.Option(
            help="Serve a health check on this port: 200 while the worker is healthy",
            envvar="DOCKET_WORKER_HEALTHCHECK_PORT",
            show_envvar=True,
            min=0,
            max=65535,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics on this port",
            envvar="DOCKET_WORKER_METRICS_PORT",
            show_envvar=True,
            min=0,
            max=65535,
        ),
    ] = None,
    fallback_task: Annotated[
        str | None,
        typer.Option(
            help="A task (module:name) that runs messages for tasks this worker does not "
            "know, instead of dead-lettering them",
            envvar="DOCKET_FALLBACK_TASK",
            show_envvar=True,
        ),
    ] = None,
    dependencies: Annotated[
        str | None,
        typer.Option(
            help="Worker dependencies (module:name), a mapping or sequence such as "
            "[Depends(fn)], resolved around every task",
            envvar="DOCKET_WORKER_DEPENDENCIES",
            show_envvar=True,
        ),
    ] = None,
    logging_level: Annotated[
        LogLevel,
        typer.Option(
            help="The lowest level logged",
            envvar="DOCKET_LOGGING_LEVEL",
            show_envvar=True,
            case_sensitive=False,
        ),
    ] = LogLevel.INFO,
    app: Annotated[
        str | None,
        typer.Option(
            help="Run the worker inside a web app's lifespan (module:attr), so tasks can use "
            "the app's own dependencies; needs an adapter such as pydocket[fastapi]",
            envvar="DOCKET_WORKER_APP",
            show_envvar=True,
        ),
    ] = None,
    logging_format: Annotated[
        LogFormat | None,
        typer.Option(
            help="How log lines look [default: rich on a terminal, else plain]",
            envvar="DOCKET_LOGGING_FORMAT",
            show_envvar=True,
            case_sensitive=False,
        ),
    ] = None,
) -> None:
    """Run a worker: claim and run the docket's tasks.

    It runs until SIGTERM or SIGINT: the first lets in-flight tasks finish (then exits 0),
    a second exits at once. DURATION is 90, 90s, 250ms, 5m, 1h, mm:ss or hh:mm:ss.
    """
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
    try:
        _check_collections(docket_, url, tasks)
        _check_member(fallback_task, "fallback task")
        _check_member(dependencies, "worker dependencies")
    except CliError as error:
        fail(str(error), error.code)
    logger.info("Connecting to docket %r at %s", docket_, safe_url(url))
    options: dict[str, Any] = {
        "docket_name": docket_,
        "url": url,
        "name": name,
        "concurrency": concurrency,
        "redelivery_timeout": redelivery_timeout,
        "reconnection_delay": reconnection_delay,
        "minimum_check_interval": minimum_check_interval,
        "scheduling_resolution": scheduling_resolution,
        "schedule_automatic_tasks": schedule_automatic_tasks,
        "enable_internal_instrumentation": enable_internal_instrumentation,
        "until_finished": until_finished,
        "healthcheck_port": healthcheck_port,
        "metrics_port": metrics_port,
        "tasks": tasks,
        "fallback_task": fallback_task,
        "dependencies": dependencies,
        "message_batch": message_batch,
        "max_deliveries": max_deliveries,
    }
    if app is not None:
        runner = _app_runner()
        options.pop("healthcheck_port")
        options.pop("metrics_port")
        # The app's lifespan opens its own docket; only insist on one named explicitly.
        url_given = url != DEFAULT_URL
        docket_given = docket_ != DEFAULT_DOCKET
        worker_options = {
            k: v
            for k, v in options.items()
            if k
            not in (
                "docket_name",
                "url",
                "until_finished",
                "tasks",
                "fallback_task",
                "dependencies",
            )
        }
        if fallback_task:
            worker_options["fallback_task"] = import_member(fallback_task, "fallback task")
        if dependencies:
            worker_options["dependencies"] = import_member(dependencies, "worker dependencies")
        try:
            run(
                runner(
                    app,
                    tasks=[t for t in tasks if t not in DEFAULT_TASKS],
                    url=url if url_given else None,
                    docket_name=docket_ if docket_given else None,
                    until_finished=until_finished,
                    **worker_options,
                )
            )
        except asyncio.CancelledError:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        logger.info("Worker stopped")
        return
    try:
        run(_worker_class().run(**options))
    except MetricsUnavailable as error:
        fail(str(error))
    except asyncio.CancelledError:
        # A second SIGTERM/SIGINT: in-flight tasks were abandoned to redelivery.
        raise typer.Exit(EXIT_INTERRUPTED) from None
    logger.info("Worker stopped")


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
