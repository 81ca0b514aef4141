"""The ``docket`` command line (also ``python -m docket``).

Every command that talks to Redis takes ``--url`` (``DOCKET_URL``) and ``--docket``
(``DOCKET_NAME``); failures are reported as one line on stderr with a non-zero exit.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console

from .._version import __version__
from ..docket import Docket
from ..worker import Worker
from . import dead_letters, tasks, workers
from ._click import ClickException, MissingParameter, NoArgsIsHelpError
from ._support import (
    duration,
    interpret_python_value,
    iterate_with_timeout,
    relative_time,
    validate_url,
)
from .clear import clear
from .snapshot import snapshot
from .strikes import restore, strike
from .watch import watch
from .worker import worker

# Docket, Worker and Console are names here on purpose: the commands look them up on
# this module when they run, so a tool can swap them (as the released test suite does).
__all__ = [
    "Console",
    "Docket",
    "Worker",
    "app",
    "clear",
    "duration",
    "interpret_python_value",
    "iterate_with_timeout",
    "main",
    "relative_time",
    "restore",
    "snapshot",
    "strike",
    "validate_url",
    "watch",
    "worker",
]

app = typer.Typer(
    name="docket",
    help="docket: a distributed background task system for Python",
    no_args_is_help=True,
    # Locals in a traceback could show a Redis password or a signing key.
    pretty_exceptions_show_locals=False,
)


@app.command()
def version() -> None:
    """Print docket's version."""
    typer.echo(__version__)


app.command()(worker)
app.command()(strike)
app.command()(restore)
app.command()(clear)
app.command()(snapshot)
app.command()(watch)
app.add_typer(workers.workers_app, name="workers")
app.add_typer(tasks.app, name="tasks")
app.add_typer(dead_letters.app, name="dead-letters")


def _usage_line(error: Any) -> str:
    """One line for a usage error: what was wrong, and where to read about it."""
    message: str = getattr(error, "message", "") or str(error)
    # typer's value conversion reports ValueErrors through pydantic, which prefixes them.
    message = message.removeprefix("Value error, ")
    param = getattr(error, "param", None)
    hint = getattr(error, "param_hint", None)
    if isinstance(error, MissingParameter):
        message = error.format_message()
    elif param is not None or hint is not None:
        if hint is None:
            opts = getattr(param, "opts", None) or [getattr(param, "name", "?")]
            hint = opts[0] if str(opts[0]).startswith("-") else str(opts[0]).upper()
        elif not isinstance(hint, str):
            hint = " / ".join(hint)
        message = f"invalid value for {hint}: {message}"
    elif isinstance(error, typer.BadParameter):
        message = f"invalid value: {message}"
    else:
        message = error.format_message()
    ctx = getattr(error, "ctx", None)
    command = getattr(ctx, "command_path", None) or "docket"
    return " ".join(f"Error: {message} (see '{command} --help')".split())


def main(args: list[str] | None = None) -> None:
    """Run the command line; usage errors are one line on stderr with exit code 2."""
    try:
        code = app(args=args, prog_name="docket", standalone_mode=False)
    except ClickException as error:
        # A bare command that needs arguments has printed its help instead.
        printed_help = NoArgsIsHelpError is not None and isinstance(error, NoArgsIsHelpError)
        if not printed_help:
            typer.secho(_usage_line(error), err=True, fg="red")
        sys.exit(getattr(error, "exit_code", 2))
    except typer.Abort:
        typer.secho("Aborted", err=True, fg="red")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
