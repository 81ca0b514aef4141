"""``docket dead-letters list|requeue|purge``: messages workers could not run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from .. import dead_letters
from ..dead_letters import DeadLetter, RequeueResult, is_entry_id
from ..docket import Docket
from ._commands import command, parameter
from .display import console, relative_time, say
from .options import DEFAULT_DOCKET, DEFAULT_URL, EXIT_ERROR, DocketOption, UrlOption, run

app = typer.Typer(
    help="Messages that workers could not run: list them, requeue them once the cause is "
    "fixed, or purge them",
    no_args_is_help=True,
)

IdsArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="Dead-letter ids, as shown by 'dead-letters list'",
        show_default=False,
        metavar="IDS",
    ),
]
AllOption = Annotated[
    bool,
    # Deliberately without an environment variable: a stray variable must never turn
    # a command into one about every dead letter.
    typer.Option("--all", help="Every dead letter"),
]


def _ids(ids: list[str] | None, every: bool) -> list[str]:
    ids = ids or []
    if every and ids:
        raise typer.BadParameter("give dead-letter ids or --all, not both")
    if not every and not ids:
        raise typer.BadParameter("give the ids of the dead letters, or --all for every one")
    for entry_id in ids:
        if not is_entry_id(entry_id):
            raise typer.BadParameter(
                f"{entry_id!r} is not a dead-letter id (like 1712345678901-0)",
                param_hint="IDS",
            )
    return ids


def _given_letters(act: Callable[[list[str], str, str], None]) -> Callable[..., None]:
    """A command about the dead letters named by IDS, or every one with --all: ``act``
    gets the checked ids (none for --all), the docket's name and its URL."""

    def checked(ids: list[str] | None, every: bool, docket: str, url: str) -> None:
        act(_ids(ids, every), docket, url)

    parameters = [
        parameter("ids", IdsArgument, None),
        parameter("every", AllOption, False),
        parameter("docket", DocketOption, DEFAULT_DOCKET),
        parameter("url", UrlOption, DEFAULT_URL),
    ]
    return command(act.__name__, act.__doc__ or "", parameters, checked)


# -- list -------------------------------------------------------------------------------


async def _list(docket_name: str, url: str, limit: int) -> tuple[list[DeadLetter], int]:
    async with Docket(name=docket_name, url=url) as docket:
        letters = await dead_letters.list_dead_letters(docket, count=limit)
        total = await dead_letters.count_dead_letters(docket)
    return letters, total


def _letters_table(letters: list[DeadLetter]) -> Table:
    now = datetime.now(UTC)
    table = Table()
    table.add_column("ID", style="cyan", no_wrap=True)
    table.add_column("Dead-lettered", style="green", no_wrap=True)
    table.add_column("Task", style="yellow")
    table.add_column("Key", overflow="fold")
    table.add_column("Deliveries", justify="right")
    table.add_column("Reason", style="red")
    for letter in letters:
        table.add_row(
            letter.id,
            relative_time(now, letter.dead_lettered_at),
            Text(letter.function if letter.function is not None else "?"),
            Text(letter.key if letter.key is not None else "?"),
            str(letter.deliveries),
            Text(letter.reason),
        )
    return table


@app.command("list")
def list_letters(
    limit: Annotated[
        int,
        typer.Option(
            help="Show at most this many, oldest first",
            envvar="DOCKET_DEAD_LETTERS_LIMIT",
            show_envvar=True,
            min=1,
        ),
    ] = 100,
    docket: DocketOption = DEFAULT_DOCKET,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """List dead letters: what each message was, and why no worker could run it."""
    letters, total = run(_list(docket, url, limit))
    if not letters:
        say(f"No dead letters in docket {docket!r}")
        return
    shown = f"the oldest {len(letters)} of {total}" if len(letters) < total else f"{total}"
    say(f"Dead letters of docket {docket!r}: {shown}")
    console.print(_letters_table(letters))


# -- requeue ----------------------------------------------------------------------------


async def _requeue(docket_name: str, url: str, ids: list[str]) -> list[RequeueResult]:
    async with Docket(name=docket_name, url=url) as docket:
        return await dead_letters.requeue(docket, ids, all_entries=not ids)


def _describe(result: RequeueResult) -> str:
    task = f"{result.function} {result.key!r}" if result.function else "message"
    if result.status == "requeued":
        return f"Requeued {result.id} ({task}) as stream entry {result.detail}"
    return f"Left {result.id} ({task}) in place: {result.detail}"


@app.command()
@_given_letters
def requeue(ids: list[str], docket: str, url: str) -> None:
    """Put dead letters back on the task stream as fresh messages.

    Each requeued message leaves the dead-letter stream. A message that could never run
    (fields missing or malformed), or whose task key has another task scheduled, queued or
    running now, stays where it is, and the command exits 1.
    """
    results = run(_requeue(docket, url, ids))
    for result in results:
        say(_describe(result))
    requeued = sum(result.status == "requeued" for result in results)
    left = len(results) - requeued
    say(
        f"Requeued {requeued} dead letter{'' if requeued == 1 else 's'}"
        + (f", left {left}" if left else "")
    )
    if left:
        raise typer.Exit(EXIT_ERROR)


# -- purge ------------------------------------------------------------------------------


async def _purge(docket_name: str, url: str, ids: list[str]) -> int:
    async with Docket(name=docket_name, url=url) as docket:
        return await dead_letters.purge(docket, ids, all_entries=not ids)


@app.command()
@_given_letters
def purge(ids: list[str], docket: str, url: str) -> None:
    """Delete dead letters for good.

    Exits 1 if any of the given ids was not found.
    """
    purged = run(_purge(docket, url, ids))
    say(f"Purged {purged} dead letter{'' if purged == 1 else 's'} from docket {docket!r}")
    if ids and purged < len(set(ids)):
        missing = len(set(ids)) - purged
        verb = "was" if missing == 1 else "were"
        typer.secho(f"{missing} of the given ids {verb} not found", err=True, fg="yellow")
        raise typer.Exit(EXIT_ERROR)
