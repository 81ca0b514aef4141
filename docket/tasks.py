"""Built-in tasks every docket knows, handy for smoke tests and the CLI."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from .annotations import Logged
from .dependencies import TaskLogger
from .execution import TaskFunction


async def trace(
    message: Annotated[str, Logged], logger: logging.LoggerAdapter[logging.Logger] = TaskLogger()
) -> None:
    """Log ``message`` from a worker: proof that tasks reach it."""
    logger.info("%s", message)


async def fail(message: Annotated[str, Logged]) -> None:
    """Fail with ``message``: proof that failures are reported."""
    raise Exception(message)


async def sleep(seconds: Annotated[float, Logged]) -> None:
    """Sleep for ``seconds``: something that takes a while."""
    await asyncio.sleep(seconds)


standard_tasks: list[TaskFunction] = [trace, fail, sleep]
