"""How times, workers and tables look on the terminal."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..docket import WorkerInfo
from ..execution import ExecutionState

__all__ = [
    "STATE_STYLES",
    "console",
    "describe_span",
    "local_time",
    "relative_time",
    "say",
    "workers_table",
]

console = Console(highlight=False)

STATE_STYLES = {
    ExecutionState.SCHEDULED: "yellow",
    ExecutionState.QUEUED: "cyan",
    ExecutionState.RUNNING: "blue",
    ExecutionState.COMPLETED: "green",
    ExecutionState.FAILED: "red",
    ExecutionState.CANCELLED: "magenta",
}


def local_time(when: datetime) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def describe_span(delta: timedelta) -> str:
    """``750ms``, ``4.2s``, ``3m 05s``, ``2h 10m``, ``3d 4h``."""
    seconds = abs(delta.total_seconds())
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def relative_time(now: datetime, when: datetime | None) -> str:
    """``in 4.2s`` or ``12.0s ago``; a clock time when it is over half an hour away."""
    if when is None:
        return ""
    delta = when - now
    if abs(delta) > timedelta(minutes=30):
        return local_time(when)
    if delta > timedelta(0):
        return f"in {describe_span(delta)}"
    return f"{describe_span(delta)} ago"


def workers_table(workers: Collection[WorkerInfo], highlight_task: str | None = None) -> Table:
    now = datetime.now(UTC)
    table = Table()
    table.add_column("Name", style="cyan", no_wrap=True)
    table.add_column("Last seen", style="green", no_wrap=True)
    table.add_column("Tasks", style="yellow")
    for worker in sorted(workers, key=lambda w: (w.name, w.last_seen)):
        tasks = [
            f"[bold]{escape(task)}[/bold]" if task == highlight_task else escape(task)
            for task in sorted(worker.tasks)
        ]
        table.add_row(
            escape(worker.name), relative_time(now, worker.last_seen), ", ".join(tasks) or "(none)"
        )
    return table


def say(text: str) -> None:
    """Print one plain line (no markup, no wrapping) on stdout."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)
