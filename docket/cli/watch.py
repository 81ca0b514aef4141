"""``docket watch KEY``: follow one task until it ends."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.text import Text

from ..docket import Docket
from ..execution import TERMINAL_STATES, Execution, ExecutionState
from .display import STATE_STYLES, console, describe_span, relative_time, say
from .options import DEFAULT_DOCKET, DEFAULT_URL, CliError, DocketOption, UrlOption, run

__all__ = ["LineView", "LiveView", "Watched", "watch"]

EXIT_FAILED = 1
EXIT_CANCELLED = 3
EXIT_NOT_FOUND = 4

# How long ``watch`` waits for an event before reading the record itself, in case a
# pub/sub message was lost (a reconnect, say).
POLL_SECONDS = 1.0


def _event_time(value: Any) -> datetime | None:
    """Scripts publish epoch seconds, Python ISO text; accept both."""
    if value in (None, ""):
        return None
    with suppress(TypeError, ValueError, OverflowError, OSError):
        return datetime.fromtimestamp(float(value), UTC)
    with suppress(TypeError, ValueError):
        parsed = datetime.fromisoformat(str(value))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


@dataclass
class Watched:
    """What ``watch`` knows about the task, updated from events."""

    key: str
    docket: str
    function: str
    state: ExecutionState
    when: datetime | None = None
    worker: str | None = None
    attempt: int = 1
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None
    current: int | None = None
    total: int = 100
    message: str | None = None
    messages: list[str] = field(default_factory=list)

    @classmethod
    def from_execution(cls, docket: str, execution: Execution) -> Watched:
        watched = cls(execution.key, docket, execution.function_name, execution.state)
        watched.load(execution)
        return watched

    def load(self, execution: Execution) -> None:
        self.state = execution.state
        self.when = execution.when
        self.worker = execution.worker
        self.attempt = execution.attempt
        self.started_at = execution.started_at
        self.completed_at = execution.completed_at
        self.error = execution.error
        progress = execution.progress
        self.current, self.total = progress.current, progress.total
        self._note(progress.message)

    def _note(self, message: str | None) -> bool:
        changed = message != self.message
        self.message = message
        if changed and message:
            self.messages.append(message)
        return changed

    def apply(self, event: dict[str, Any]) -> str | None:
        """Take in one event; returns what changed, for line-by-line output."""
        if event.get("type") == "progress":
            self.current = event.get("current")
            self.total = int(event.get("total") or self.total)
            message_changed = self._note(event.get("message"))
            return "message" if message_changed and self.message else "progress"
        if event.get("type") != "state":
            return None
        state = ExecutionState(event["state"])
        if state == ExecutionState.RUNNING and self.state != ExecutionState.RUNNING:
            # A new run (a retry, say) starts its progress afresh.
            self.current, self.message = None, None
            self.completed_at, self.error = None, None
        self.state = state
        if event.get("worker"):
            self.worker = event["worker"]
        if event.get("when"):
            self.when = _event_time(event["when"]) or self.when
        if event.get("started_at"):
            self.started_at = _event_time(event["started_at"])
        if event.get("completed_at"):
            self.completed_at = _event_time(event["completed_at"])
        if event.get("error"):
            self.error = event["error"]
        return "state"

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    def elapsed(self) -> str | None:
        if self.started_at is None:
            return None
        end = self.completed_at if self.finished and self.completed_at else datetime.now(UTC)
        return describe_span(end - self.started_at)

    def state_line(self) -> str:
        now = datetime.now(UTC)
        text = f"state: {self.state.value}"
        if self.state == ExecutionState.COMPLETED:
            text += " successfully"
        if self.state == ExecutionState.SCHEDULED and self.when is not None:
            text += f", due {relative_time(now, self.when)}"
        elif self.state == ExecutionState.RUNNING:
            text += f" on {self.worker or 'a worker'}"
            if self.attempt > 1:
                text += f" (attempt {self.attempt})"
        elif self.finished:
            elapsed = self.elapsed()
            if elapsed:
                text += f" after {elapsed}"
            if self.error:
                text += f": {self.error}"
        return text

    def progress_line(self) -> str:
        current = self.current or 0
        percent = f" ({100 * current / self.total:.0f}%)" if self.total else ""
        line = f"progress: {current}/{self.total}{percent}"
        return f"{line} {self.message}" if self.message else line


class LineView:
    """For logs and pipes: one line per change."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    def _print(self, kind: str, line: str) -> None:
        if self._last.get(kind) != line:
            self._last[kind] = line
            say(line)

    def __enter__(self) -> LineView:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def start(self, watched: Watched) -> None:
        say(f"Watching {watched.function} {watched.key!r} on docket {watched.docket!r}")
        order = ("progress", "state") if watched.finished else ("state", "progress")
        for change in order:
            self.update(watched, change)

    def update(self, watched: Watched, change: str | None) -> None:
        if change == "state":
            self._print("state", watched.state_line())
        elif change in ("progress", "message") and watched.current is not None:
            self._print("progress", watched.progress_line())


class LiveView:
    """For a terminal: the task's state, a progress bar and its recent messages."""

    def __init__(self) -> None:
        self._watched: Watched | None = None
        self._progress = Progress(
            TextColumn("[bold blue]{task.description}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            console=console,
            expand=True,
        )
        self._bar: TaskID | None = None
        self._live = Live(console=console, get_renderable=self._render, refresh_per_second=8)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._live.refresh()
        self._live.__exit__(None, None, None)

    def start(self, watched: Watched) -> None:
        self._watched = watched
        self.update(watched, "progress")

    def update(self, watched: Watched, change: str | None) -> None:
        if watched.current is None:
            return
        description = escape(watched.message or "Working")
        if self._bar is None:
            self._bar = self._progress.add_task(
                description, total=watched.total, completed=watched.current
            )
        else:
            self._progress.update(
                self._bar, description=description, total=watched.total, completed=watched.current
            )

    def _render(self) -> RenderableType:
        watched = self._watched
        if watched is None:
            return Text("")
        style = STATE_STYLES.get(watched.state, "")
        lines = [
            f"[bold]Task:[/bold] {escape(watched.function)} {escape(repr(watched.key))}",
            f"[bold]Docket:[/bold] {escape(watched.docket)}",
            f"[bold]State:[/bold] [{style}]{watched.state.value.upper()}[/{style}]",
        ]
        now = datetime.now(UTC)
        if watched.state == ExecutionState.SCHEDULED and watched.when is not None:
            lines.append(f"[bold]Due:[/bold] {relative_time(now, watched.when)}")
        if watched.worker:
            lines.append(f"[bold]Worker:[/bold] {escape(watched.worker)}")
        if watched.attempt > 1:
            lines.append(f"[bold]Attempt:[/bold] {watched.attempt}")
        elapsed = watched.elapsed()
        if elapsed:
            label = "Took" if watched.finished else "Running for"
            lines.append(f"[bold]{label}:[/bold] {elapsed}")
        if watched.error:
            lines.append(f"[red bold]Error:[/red bold] {escape(watched.error)}")
        if watched.state == ExecutionState.COMPLETED:
            lines.append("[green bold]✓ completed[/green bold]")
        elif watched.state == ExecutionState.FAILED:
            lines.append("[red bold]✗ failed[/red bold]")
        elif watched.state == ExecutionState.CANCELLED:
            lines.append("[magenta bold]✗ cancelled[/magenta bold]")
        parts: list[RenderableType] = [Text.from_markup("\n".join(lines))]
        if self._bar is not None:
            parts.append(self._progress.get_renderable())
        for message in watched.messages[-5:]:
            parts.append(Text(f"  • {message}", style="dim"))
        return Group(*parts)


async def _watch(docket_name: str, url: str, key: str) -> int:
    async with Docket(name=docket_name, url=url) as docket:
        execution = await docket.get_execution(key)
        if execution is None:
            raise CliError(
                f"there is no task {key!r} on docket {docket_name!r} (never added, or its "
                "record has expired)",
                EXIT_NOT_FOUND,
            )
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def pump() -> None:
            async for event in execution.subscribe():
                events.put_nowait(dict(event))

        async def next_event(timeout: float) -> dict[str, Any] | None:
            """The next event, or None after ``timeout``; raises what stopped the
            listener, if it stopped."""
            getter = asyncio.ensure_future(events.get())
            done, _ = await asyncio.wait(
                {getter, listener}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if getter in done:
                return getter.result()
            getter.cancel()
            if listener.done():
                listener.result()
                raise CliError(f"stopped hearing about task {key!r}")
            return None

        listener = asyncio.create_task(pump(), name=f"watch-{key}")
        view: LineView | LiveView = LiveView() if console.is_terminal else LineView()
        try:
            # The first event is the state read once subscribed: nothing after it is missed.
            first = await next_event(POLL_SECONDS * 10)
            watched = Watched.from_execution(docket_name, execution)
            if first is not None:
                watched.apply(first)
            with view:
                view.start(watched)
                while not watched.finished:
                    event = await next_event(POLL_SECONDS)
                    if event is None:
                        fresh = await docket.get_execution(key)
                        if fresh is None:
                            raise CliError(
                                f"the record of task {key!r} is gone (it expired, or the "
                                "docket keeps none) before it was seen to finish",
                                EXIT_NOT_FOUND,
                            ) from None
                        state_changed = fresh.state != watched.state
                        if not state_changed and fresh.progress.current == watched.current:
                            continue
                        watched.load(fresh)
                        view.update(watched, "state" if state_changed else "progress")
                        continue
                    change = watched.apply(event)
                    if watched.finished:
                        # The final event carries no worker or start time; the record
                        # does, unless the docket keeps none.
                        await execution.sync()
                        if execution.state in TERMINAL_STATES:
                            watched.load(execution)
                    view.update(watched, change)
        finally:
            listener.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await listener
    if watched.state == ExecutionState.COMPLETED:
        return 0
    return EXIT_CANCELLED if watched.state == ExecutionState.CANCELLED else EXIT_FAILED


def watch(
    key: Annotated[str, typer.Argument(help="The key of the task to watch", metavar="KEY")],
    docket: DocketOption = DEFAULT_DOCKET,
    url: UrlOption = DEFAULT_URL,
    exit_code: Annotated[
        bool,
        typer.Option(
            "--exit-code/--no-exit-code",
            help="Exit 1 when the task failed and 3 when it was cancelled (default: 0 "
            "whenever it ended, as the released docket does)",
        ),
    ] = False,
) -> None:
    """Follow one task until it ends: its state, a progress bar and its messages.

    Exits 0 once the task has ended (with ``--exit-code``: 1 when it failed, 3 when it
    was cancelled) and 4 when there is no such task.
    """
    code = run(_watch(docket, url, key))
    if code == EXIT_NOT_FOUND or (code and exit_code):
        raise typer.Exit(code)
