"""``TaskLogger``: a standard-library logger bound to one run.

Every record carries the run's context (docket, worker, task, key, attempt) as
``extra`` fields, named as the released docket names them (``docket.key``...). Calls
take stdlib ``extra={...}`` and, like structlog, keyword fields::

    logger.info("Service status", service_id=service.id, status="up")

Keyword fields become ``extra`` too, and ``record.docket_fields`` lists every field
name the adapter added (call fields first, then context) so a formatter can render
them as ``key=value`` (``docket.logging.configure_logging`` installs one that does).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Any, cast

from ._base import Provider, current_docket, current_execution, current_worker

FIELDS_ATTRIBUTE = "docket_fields"

_STDLIB_KEYWORDS = frozenset({"exc_info", "stack_info", "stacklevel", "extra"})

# Names a record already uses; an extra field with one of them would make
# ``makeRecord`` raise, so such fields get a trailing underscore instead.
RESERVED_ATTRIBUTES = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        "taskName",
        FIELDS_ATTRIBUTE,
    }
)


def _field_name(name: str) -> str:
    return f"{name}_" if name in RESERVED_ATTRIBUTES else name


class TaskLoggerAdapter(logging.LoggerAdapter[logging.Logger]):
    """A ``LoggerAdapter`` that adds its context and keyword fields to every record."""

    def __init__(self, logger: logging.Logger, context: Mapping[str, object]) -> None:
        super().__init__(logger, dict(context))

    def bind(self, **fields: object) -> TaskLoggerAdapter:
        """A logger with more context fields on every record."""
        return TaskLoggerAdapter(self.logger, {**(self.extra or {}), **fields})

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        fields = {name: kwargs.pop(name) for name in list(kwargs) if name not in _STDLIB_KEYWORDS}
        call_extra: Mapping[str, object] = kwargs.get("extra") or {}
        merged: dict[str, object] = {}
        # The call's own fields win over the bound context when names collide.
        for source in (fields, call_extra, self.extra or {}):
            for name, value in source.items():
                merged.setdefault(_field_name(name), value)
        merged[FIELDS_ATTRIBUTE] = list(merged)
        kwargs["extra"] = merged
        return msg, kwargs


class _TaskLogger(Provider[TaskLoggerAdapter]):
    async def __aenter__(self) -> TaskLoggerAdapter:
        execution = current_execution.get()
        docket = current_docket.get(None)
        worker = current_worker.get(None)
        logger = logging.getLogger(f"docket.task.{execution.function_name}")
        return TaskLoggerAdapter(
            logger,
            {
                "docket.name": docket.name if docket is not None else execution.docket.name,
                "docket.worker": worker.name if worker is not None else execution.worker,
                "docket.task": execution.function_name,
                "docket.key": execution.key,
                "docket.attempt": execution.attempt,
            },
        )


def TaskLogger() -> TaskLoggerAdapter:
    """A logger for the running task, named ``docket.task.<function name>``.

    Use as a parameter default (``logger: LoggerAdapter[Logger] = TaskLogger()``) or
    through ``Depends(TaskLogger)``; both give the same per-run logger.
    """
    return cast(TaskLoggerAdapter, _TaskLogger())
