"""``docket tasks trace|fail|sleep``: add a built-in task, to try a worker out."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from .. import tasks as builtin
from ..docket import Docket
from ..execution import TaskFunction
from ._commands import command, parameter
from .display import describe_span, say
from .options import DEFAULT_DOCKET, DEFAULT_URL, DocketOption, UrlOption, duration_option, run

app = typer.Typer(help="Add docket's built-in tasks: trace, fail and sleep", no_args_is_help=True)

DelayOption = Annotated[
    timedelta,
    duration_option(
        "How long from now the task is due", "DOCKET_TASKS_DELAY", timedelta(0), "--delay"
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        help="The task's key [default: a new unique key]",
        envvar="DOCKET_TASKS_KEY",
        show_envvar=True,
    ),
]


async def _add(
    docket_name: str,
    url: str,
    function: TaskFunction,
    delay: timedelta,
    key: str | None,
    *args: Any,
) -> None:
    async with Docket(name=docket_name, url=url) as docket:
        when = datetime.now(UTC) + delay
        execution = await docket.add(function, when=when, key=key)(*args)
    name = getattr(function, "__name__", "task")
    due = f", due in {describe_span(delay)}" if delay > timedelta(0) else ""
    outcome = execution.disposition.value.replace("_", " ")
    say(
        f"Added {name} task {execution.key!r} to the docket {docket_name!r}{due}"
        if outcome == "scheduled"
        else f"Did not add {name} task {execution.key!r} to {docket_name!r}: {outcome}"
    )
    if outcome != "scheduled":
        raise typer.Exit(1)


def _adding(task: TaskFunction, argument: inspect.Parameter, doc: str) -> Callable[..., None]:
    """The command that adds ``task`` called with its one ``argument``; every such command
    takes the same options after it."""

    def add(delay: timedelta, key: str | None, docket: str, url: str, **given: Any) -> None:
        (value,) = given.values()
        run(_add(docket, url, task, delay, key, value))

    parameters = [
        argument,
        parameter("delay", DelayOption, timedelta(0)),
        parameter("key", KeyOption, None),
        parameter("docket", DocketOption, DEFAULT_DOCKET),
        parameter("url", UrlOption, DEFAULT_URL),
    ]
    return app.command()(command(task.__name__, doc, parameters, add))


def _message(help: str) -> inspect.Parameter:
    return parameter(
        "message", Annotated[str, typer.Argument(help=help, metavar="MESSAGE")], "Howdy!"
    )


trace = _adding(
    builtin.trace,
    _message("What the worker logs"),
    "Add a task that logs MESSAGE on the worker that runs it.",
)
fail = _adding(
    builtin.fail, _message("The error the task raises"), "Add a task that fails with MESSAGE."
)
sleep = _adding(
    builtin.sleep,
    parameter(
        "seconds",
        Annotated[float, typer.Argument(help="How long the task sleeps", min=0, metavar="SECONDS")],
        1.0,
    ),
    "Add a task that sleeps for SECONDS.",
)
