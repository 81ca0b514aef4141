"""The fallback task the released docket offered for messages of unknown tasks."""

from __future__ import annotations

import logging
from typing import Any

from .dependencies import CurrentExecution, TaskLogger
from .execution import Execution


async def default_fallback_task(
    *args: Any,
    execution: Execution = CurrentExecution(),
    logger: logging.LoggerAdapter[logging.Logger] = TaskLogger(),
    **kwargs: Any,
) -> None:
    """Log a warning and drop the message, as a worker does with ``fallback_task=
    default_fallback_task`` (without a fallback, ours dead-letters it instead, so it can
    be looked at and replayed)."""
    logger.warning(
        "Unknown task %r received - dropping. Register via CLI (--tasks your.module:tasks) "
        "or API (docket.register(func)).",
        execution.function_name,
    )
