"""What every command shares: the ``--docket`` and ``--url`` options (with their
``DOCKET_*`` variables), turning failures into one-line errors, and importing the
``module:name`` paths that ``--tasks``, ``--fallback-task`` and ``--dependencies`` take."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import traceback
from collections.abc import Coroutine
from datetime import timedelta
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit

import typer
from redis.connection import parse_url
from redis.exceptions import RedisError

from .._imports import ImportPathError, import_object
from .._partition_layout import PartitionMismatch
from .._redis.client import SUPPORTED_SCHEMES, redact_url
from .._redis.keys import MAX_PARTITIONS, validate_name
from .._redis.topology import parse_topology
from .durations import format_duration_option, parse_duration

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_DOCKET = "docket"

# Exit codes besides 0 (success) and 2 (usage errors, as click reports them).
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure to report as one line on stderr, then exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``Error: message`` on one line of stderr and exit with ``code``."""
    line = " ".join(message.split())
    typer.secho(f"Error: {line}", err=True, fg="red")
    raise typer.Exit(code)


def run[T](main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to the end; expected failures become one-line errors."""
    try:
        return asyncio.run(main)
    except CliError as error:
        fail(str(error), error.code)
    except PartitionMismatch as error:
        fail(str(error))
    except ConnectionError as error:
        # The Docket's own "Cannot reach Redis at <url>: ..." (the URL is redacted).
        fail(str(error))
    except RedisError as error:
        fail(f"Redis refused the command: {error}")
    except OSError as error:
        fail(str(error) or type(error).__name__)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


# -- --url and --docket ---------------------------------------------------------------


def safe_url(url: str) -> str:
    """The URL with any password hidden, even when it is too malformed to parse."""
    try:
        return redact_url(url)
    except ValueError:
        return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


def check_url(url: str) -> str:
    """Refuse URLs no separate process can use, and those that cannot be parsed."""
    if urlsplit(url).scheme == "memory":
        raise typer.BadParameter(
            "The memory:// URL scheme is not supported by the CLI: memory:// is a docket "
            "inside one process, and this command runs in a process of its own, so it "
            "would see an empty docket that vanishes when it exits; use a redis://, "
            "rediss:// or unix:// URL (only `docket worker` runs a memory:// docket)"
        )
    return check_any_url(url)


def check_any_url(url: str) -> str:
    """Refuse what is not a URL docket can connect to; ``memory://`` is allowed (for
    ``docket worker``, which runs the in-process docket itself)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return url
    if scheme not in SUPPORTED_SCHEMES:
        raise typer.BadParameter(
            f"{safe_url(url)!r} is not a Redis URL; it must start with "
            + ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES if s != "memory")
        )
    try:
        if parse_topology(url).kind == "standalone":
            parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as error:
        raise typer.BadParameter(f"{safe_url(url)!r}: {error}") from None
    return url


def check_docket_name(name: str) -> str:
    try:
        return validate_name(name)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


URL_ENVVARS = ["DOCKET_URL", "DOCKET_REDIS_URL"]

UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        "-u",
        help="The Redis server, e.g. redis://localhost:6379/0, rediss://..., unix:///path",
        envvar=URL_ENVVARS,
        callback=check_url,
        show_envvar=True,
    ),
]

WorkerUrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        "-u",
        help="The Redis server, e.g. redis://localhost:6379/0, rediss://..., unix:///path; "
        "or memory:// for a docket inside this one process (local development)",
        envvar=URL_ENVVARS,
        callback=check_any_url,
        show_envvar=True,
    ),
]

DocketOption = Annotated[
    str,
    typer.Option(
        "--docket",
        "-d",
        help="The name of the docket",
        envvar="DOCKET_NAME",
        callback=check_docket_name,
        show_envvar=True,
    ),
]


PartitionsOption = Annotated[
    int | None,
    typer.Option(
        "--partitions",
        help="How many partitions the docket is spread over (every producer and worker "
        "of a docket uses the same count; default 1)",
        envvar="DOCKET_PARTITIONS",
        show_envvar=True,
        min=1,
        max=MAX_PARTITIONS,
    ),
]


ExecutionTtlOption = Annotated[
    timedelta | None,
    typer.Option(
        "--execution-ttl",
        parser=lambda text: _duration_parameter(text),
        help="How long finished runs' records (and results) are kept, as the producers' "
        "Docket(execution_ttl=...) says; 0 keeps nothing (default 15m)",
        envvar="DOCKET_EXECUTION_TTL",
        show_envvar=True,
        metavar="DURATION",
    ),
]


def _duration_parameter(text: str | timedelta) -> timedelta:
    # A ValueError from a parser reaches the user as just the bad value under some typer
    # versions; BadParameter keeps the explanation.
    try:
        return parse_duration(text)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def duration_option(
    help: str, envvar: str, default: timedelta, *names: str
) -> Any:  # typer.models.OptionInfo
    """An option read with ``parse_duration``, its default shown in the same syntax."""
    return typer.Option(
        *names,
        parser=_duration_parameter,
        help=help,
        envvar=envvar,
        show_envvar=True,
        show_default=format_duration_option(default),
        metavar="DURATION",
    )


# -- module:name paths ----------------------------------------------------------------


def _importable_from_here() -> None:
    # A console script does not put the working directory on sys.path the way
    # ``python -m`` does; without it, ``--tasks myapp.tasks:tasks`` run from the
    # project's root would not find ``myapp``.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def import_member(path: str, what: str) -> Any:
    """Import ``package.module:name`` from here; any failure is a one-line ``CliError``."""
    _importable_from_here()
    try:
        return import_object(path, what)
    except ImportPathError as error:
        hint = " (run from the directory that contains it, or set PYTHONPATH)"
        raise CliError(f"{error}{hint if error.missing_module else ''}") from None
    except Exception as error:
        raise CliError(f"cannot import {what} {path!r}: {_failure(error)}") from None


def _failure(error: BaseException) -> str:
    """``Type: message (file:line)``, where the failure happened in the user's code."""
    where = ""
    if not isinstance(error, SyntaxError):  # whose message says where already
        frames = traceback.extract_tb(error.__traceback__)
        if frames:
            where = f" ({frames[-1].filename}:{frames[-1].lineno})"
    return f"{type(error).__name__}: {error}{where}"


def load_collection(path: str) -> list[Any]:
    """The task functions of the collection at ``package.module:name``."""
    collection = import_member(path, "task collection")
    try:
        return list(collection)
    except TypeError:
        raise CliError(
            f"task collection {path!r} is a {type(collection).__name__}, not an iterable "
            "of task functions"
        ) from None
