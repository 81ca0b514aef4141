"""``docket workers ls`` and ``docket workers for-task TASK``: the live workers."""

from __future__ import annotations

from typing import Annotated

import typer

from ..docket import Docket, WorkerInfo
from .display import console, say, workers_table
from .options import DEFAULT_DOCKET, DEFAULT_URL, DocketOption, UrlOption, run

__all__ = ["list_workers", "workers_app", "workers_for_task"]

workers_app = typer.Typer(help="See the workers of a docket", no_args_is_help=True)


async def _workers(docket_name: str, url: str, task: str | None) -> list[WorkerInfo]:
    async with Docket(name=docket_name, url=url) as docket:
        if task is None:
            return await docket.workers()
        return await docket.task_workers(task)


def _show(docket_name: str, url: str, task: str | None) -> None:
    """Print the live workers, or those that can run ``task``, or say there are none."""
    workers = run(_workers(docket_name, url, task))
    if not workers:
        say(
            f"No live workers in docket {docket_name!r}"
            if task is None
            else f"No live worker of docket {docket_name!r} can run {task!r}"
        )
        return
    able = "" if task is None else f" that can run {task!r}"
    say(f"Workers of docket {docket_name!r}{able}:")
    console.print(workers_table(workers, highlight_task=task))


@workers_app.command("ls")
def list_workers(
    docket: DocketOption = DEFAULT_DOCKET,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """List the live workers (those whose heartbeat is recent) and their tasks."""
    _show(docket, url, None)


@workers_app.command("for-task")
def workers_for_task(
    task: Annotated[str, typer.Argument(help="The task's name", metavar="TASK")],
    docket: DocketOption = DEFAULT_DOCKET,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """List the live workers that can run TASK."""
    _show(docket, url, task)
