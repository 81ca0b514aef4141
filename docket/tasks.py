"""Built-in tasks every docket knows, handy for smoke tests and the CLI."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

from .annotations import Logged
from .dependencies import CurrentDocket, CurrentExecution, CurrentWorker, Retry, TaskLogger
from .docket import Docket
from .execution import Execution, TaskFunction

if TYPE_CHECKING:
    from .worker import Worker


async def trace(
    message: Annotated[str, Logged],
    logger: logging.LoggerAdapter[logging.Logger] = TaskLogger(),
    docket: Docket = CurrentDocket(),
    worker: Worker = CurrentWorker(),
    execution: Execution = CurrentExecution(),
) -> None:
    """Log ``message`` from a worker, with where and how late it ran: proof that tasks
    reach it."""
    logger.info(
        "%s: %r added to docket %r %s ago now running on worker %r",
        message,
        execution.key,
        docket.name,
        datetime.now(UTC) - execution.when,
        worker.name,
    )


async def fail(
    message: Annotated[str, Logged],
    docket: Docket = CurrentDocket(),
    worker: Worker = CurrentWorker(),
    execution: Execution = CurrentExecution(),
    retry: Retry = Retry(attempts=2),
) -> None:
    """Fail with ``message`` (and be retried once): proof that failures are reported."""
    raise Exception(
        f"{message}: {execution.key} added to docket {docket.name} "
        f"{datetime.now(UTC) - execution.when} ago now running on worker {worker.name}"
    )


async def sleep(
    seconds: Annotated[float, Logged],
    logger: logging.LoggerAdapter[logging.Logger] = TaskLogger(),
) -> None:
    """Sleep for ``seconds``: something that takes a while."""
    logger.info("Sleeping for %s seconds", seconds)
    await asyncio.sleep(seconds)


standard_tasks: list[TaskFunction] = [trace, fail, sleep]
