"""``docket snapshot``: what is scheduled, queued and running right now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .._priority import Priority
from ..docket import DocketSnapshot
from ..execution import Execution, ExecutionState
from .display import STATE_STYLES, local_time, relative_time
from .options import (
    DEFAULT_DOCKET,
    DEFAULT_URL,
    CliError,
    DocketOption,
    PartitionsOption,
    UrlOption,
    load_collection,
    run,
)

__all__ = ["TaskStats", "snapshot", "task_stats"]


def _patchable(name: str) -> Any:
    # Looked up on the docket.cli package at call time: tools (and the released test
    # suite) replace docket.cli.Docket or docket.cli.Console to see what a command does.
    from .. import cli

    return getattr(cli, name)


async def _take_snapshot(
    docket_name: str, url: str, tasks: list[str], partitions: int | None = None
) -> DocketSnapshot:
    # Passed on only when given: tools that replace Docket see the released arguments.
    extra = {} if partitions is None else {"partitions": partitions}
    async with _patchable("Docket")(name=docket_name, url=url, **extra) as docket:
        for path in tasks:
            load_collection(path)  # for its clear errors; the import is then cached
            try:
                docket.register_collection(path)
            except (ImportError, AttributeError, TypeError, ValueError) as error:
                raise CliError(f"cannot register task collection {path!r}: {error}") from None
        snapshot: DocketSnapshot = await docket.snapshot()
        return snapshot


@dataclass
class TaskStats:
    running: int = 0
    queued: int = 0
    scheduled: int = 0
    earliest: datetime | None = None
    latest: datetime | None = None

    @property
    def total(self) -> int:
        return self.running + self.queued + self.scheduled

    def count(self, execution: Execution, running: bool) -> None:
        if running:
            self.running += 1
            return
        if execution.state == ExecutionState.SCHEDULED:
            self.scheduled += 1
        else:
            self.queued += 1
        when = execution.when
        self.earliest = when if self.earliest is None else min(self.earliest, when)
        self.latest = when if self.latest is None else max(self.latest, when)


def task_stats(snapshot: DocketSnapshot) -> dict[str, TaskStats]:
    stats: dict[str, TaskStats] = {}
    for execution in snapshot.running:
        stats.setdefault(execution.function_name, TaskStats()).count(execution, True)
    for execution in snapshot.future:
        stats.setdefault(execution.function_name, TaskStats()).count(execution, False)
    return stats


def _state(execution: Execution, state: str, style: str) -> Text:
    """The State column: the state, marked with the task's level unless NORMAL."""
    text = Text(state, style=style)
    if execution.priority is not Priority.NORMAL:
        text.append(f" ({execution.priority.name.lower()})", style="bold")
    return text


def _snapshot_table(docket_name: str, snapshot: DocketSnapshot) -> Table:
    now = snapshot.taken
    table = Table(
        title="\n".join(
            [
                f"Docket: {escape(repr(docket_name))}",
                f"as of {local_time(snapshot.taken)}",
                f"{len(snapshot.workers)} workers, "
                f"{len(snapshot.running)}/{snapshot.total_tasks} running",
            ]
        )
    )
    table.add_column("When", style="green", no_wrap=True)
    table.add_column("Function", style="cyan")
    table.add_column("Key", style="cyan", overflow="fold")
    table.add_column("State", no_wrap=True)
    table.add_column("Worker", style="yellow")
    table.add_column("Started", style="green", no_wrap=True)
    for execution in snapshot.running:
        table.add_row(
            relative_time(now, execution.when),
            Text(execution.function_name),
            Text(execution.key),
            _state(execution, "running", "blue"),
            Text(execution.worker or ""),
            relative_time(now, execution.started_at),
        )
    for execution in snapshot.future:
        state = execution.state.value
        table.add_row(
            relative_time(now, execution.when),
            Text(execution.function_name),
            Text(execution.key),
            _state(execution, state, STATE_STYLES.get(execution.state, "")),
            "",
            "",
        )
    return table


def _stats_table(snapshot: DocketSnapshot) -> Table:
    now = snapshot.taken
    stats = task_stats(snapshot)
    table = Table(title="Task Count Statistics by Function")
    table.add_column("Function", style="cyan")
    for column in ("Total", "Running", "Queued", "Scheduled"):
        table.add_column(column, justify="right")
    table.add_column("Oldest Queued", style="green", no_wrap=True)
    table.add_column("Latest Queued", style="green", no_wrap=True)
    # Busiest first: a runaway task is the first thing to see.
    for name, counts in sorted(stats.items(), key=lambda item: (-item[1].total, item[0])):
        table.add_row(
            Text(name),
            str(counts.total),
            str(counts.running),
            str(counts.queued),
            str(counts.scheduled),
            relative_time(now, counts.earliest),
            relative_time(now, counts.latest),
        )
    return table


def snapshot(
    stats: Annotated[
        bool,
        typer.Option(
            "--stats",
            help="Also count the tasks by name",
            envvar="DOCKET_SNAPSHOT_STATS",
            show_envvar=True,
        ),
    ] = False,
    tasks: Annotated[
        list[str] | None,
        typer.Option(
            "--tasks",
            help="Task collections (module:name) to import, so tasks whose code is not "
            "importable here still show by name; repeat for more",
            envvar="DOCKET_TASKS",
            show_envvar=True,
        ),
    ] = None,
    docket_: DocketOption = DEFAULT_DOCKET,
    url: UrlOption = DEFAULT_URL,
    partitions: PartitionsOption = None,
) -> None:
    """Show what is scheduled, queued and running right now, and how many workers."""
    taken = run(_take_snapshot(docket_, url, tasks or [], partitions))
    output = _patchable("Console")()
    output.print(_snapshot_table(docket_, taken))
    if not taken.total_tasks:
        output.print("Nothing is scheduled, queued or running")
    elif stats and (taken.running or taken.future):
        output.print()
        output.print(_stats_table(taken))
