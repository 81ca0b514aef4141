"""Log output for docket processes: ``configure_logging(level, format)``.

Records are rendered as ``time level logger message key=value ...``. The fields are
a record's extras: those a ``TaskLogger`` adds (listed in ``record.docket_fields``,
rendered first and in order), anything passed as ``extra={...}``, and the event dict
of a structlog logger routed through the standard library.

Formats: ``plain``; ``rich`` (through ``rich`` when it is installed, otherwise plain
text with coloured levels); ``json`` (one object per line).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any, Literal

from .dependencies._task_logger import FIELDS_ATTRIBUTE, RESERVED_ATTRIBUTES

LogFormat = Literal["plain", "json", "rich"]
FORMATS: tuple[str, ...] = ("plain", "json", "rich")

_HANDLER_MARK = "_docket_handler"
# A record attribute: set (true) on records whose message arguments and fields are all
# immutable, which a BatchingStreamHandler may format later than it receives them.
DEFERRABLE = "_docket_deferrable"

_COLOURS = {
    logging.DEBUG: "\x1b[2m",
    logging.INFO: "\x1b[32m",
    logging.WARNING: "\x1b[33m",
    logging.ERROR: "\x1b[31m",
    logging.CRITICAL: "\x1b[1;31m",
}
_RESET = "\x1b[0m"


_ORDER_CACHE_LIMIT = 256
_orders: dict[tuple[str, ...], tuple[str, ...]] = {}


def _field_order(attributes: dict[str, Any], listed: list[str]) -> tuple[str, ...]:
    # Records from one call site have the same attributes in the same order, so the
    # field order is worked out once per shape: this runs for every per-task log line.
    shape = (*attributes, "\0", *listed)
    order = _orders.get(shape)
    if order is None:
        others = sorted(
            name
            for name in attributes.keys() - RESERVED_ATTRIBUTES - set(listed)
            if not name.startswith("_")
        )
        order = (*(name for name in listed if name in attributes), *others)
        if len(_orders) >= _ORDER_CACHE_LIMIT:
            _orders.clear()
        _orders[shape] = order
    return order


def record_fields(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
    """The structured fields of ``record``: task-logger fields first, then the rest."""
    attributes = record.__dict__
    listed: list[str] = getattr(record, FIELDS_ATTRIBUTE, None) or []
    for name in _field_order(attributes, listed):
        yield name, attributes[name]


def _structlog_event(record: logging.LogRecord) -> tuple[str, dict[str, Any]] | None:
    # structlog's stdlib integration hands the formatter its event dict as ``msg``.
    if isinstance(record.msg, dict):
        event = dict(record.msg)
        message = event.pop("event", "")
        return str(message), {k: v for k, v in event.items() if not k.startswith("_")}
    return None


_NEEDS_QUOTES = re.compile(r'[ ="\n\t]')


def _text(value: Any) -> str:
    if isinstance(value, str):
        if not value or _NEEDS_QUOTES.search(value):
            return json.dumps(value, ensure_ascii=False)
        return value
    if isinstance(value, int):
        return str(value)
    return repr(value)


class DocketFormatter(logging.Formatter):
    """``time level logger message key=value ...`` (or one JSON object per line)."""

    def __init__(self, format: LogFormat = "plain", *, colours: bool = False) -> None:
        if format not in FORMATS:
            raise ValueError(f"Log format must be one of {', '.join(FORMATS)}, got {format!r}")
        super().__init__()
        self.output = format
        self.colours = colours
        self._stamp_second = -1
        self._stamp_head = ""
        self._stamp_tail = ""

    def _message_and_fields(self, record: logging.LogRecord) -> tuple[str, list[tuple[str, Any]]]:
        fields = list(record_fields(record))
        if type(record.msg) is str:
            return record.getMessage(), fields
        event = _structlog_event(record)
        if event is not None:
            message, extra = event
            return message, [*extra.items(), *fields]
        return record.getMessage(), fields

    def _timestamp(self, record: logging.LogRecord) -> str:
        # Local time with its offset, to the millisecond. Working out the local offset is
        # slow, so the text up to the second is kept for the second it belongs to.
        second = int(record.created)
        if second != self._stamp_second:
            moment = datetime.fromtimestamp(second, UTC).astimezone()
            self._stamp_head = moment.strftime("%Y-%m-%dT%H:%M:%S")
            self._stamp_tail = moment.isoformat()[19:]
            self._stamp_second = second
        millis = min(int((record.created - second) * 1000), 999)
        return f"{self._stamp_head}.{millis:03d}{self._stamp_tail}"

    @staticmethod
    def _released_asctime(record: logging.LogRecord) -> str:
        """``2025-01-31 12:00:00,123`` in local time: logging's default ``asctime``."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        return f"{stamp},{int(record.msecs):03d}"

    def _exception_text(self, record: logging.LogRecord) -> str | None:
        if record.exc_info and record.exc_info[0] is not None:
            return "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            return record.exc_text
        if record.stack_info:
            return self.formatStack(record.stack_info)
        return None

    def format(self, record: logging.LogRecord) -> str:
        message, fields = self._message_and_fields(record)
        failure = self._exception_text(record)
        if self.output == "json":
            document: dict[str, Any] = {
                "time": self._timestamp(record),
                "level": record.levelname,
                "logger": record.name,
                "message": message,
                # The keys the released docket's JSON lines had, which log pipelines
                # may already select on.
                "name": record.name,
                "levelname": record.levelname,
                "asctime": self._released_asctime(record),
                "exc_info": failure,
            }
            for name, value in fields:
                document.setdefault(name, value)
            if failure:
                document["exception"] = failure
            return json.dumps(document, default=str, ensure_ascii=False)

        level = f"{record.levelname:<8}"
        if self.colours:
            level = f"{_COLOURS.get(record.levelno, '')}{level}{_RESET}"
        line = f"{self._timestamp(record)} {level} {record.name} {message}"
        if fields:
            line += " " + " ".join([f"{name}={_text(value)}" for name, value in fields])
        if failure:
            line += "\n" + failure
        return line


class _RichFieldsFormatter(DocketFormatter):
    """For rich's handler, which draws time, level and location itself."""

    def format(self, record: logging.LogRecord) -> str:
        message, fields = self._message_and_fields(record)
        if fields:
            message += " " + " ".join(f"{name}={_text(value)}" for name, value in fields)
        return message


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` that writes the lines logged during one event-loop step at
    the end of that step, in one write.

    A worker logs two lines per run; written one by one, the writes cost more than the
    rest of a no-op run. Lines logged outside a running loop, lines at WARNING and above,
    ``flush()`` and ``close()`` write everything pending at once, in order.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(stream)
        self._pending: list[str | logging.LogRecord] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        urgent = record.levelno >= logging.WARNING
        # docket's own per-run lines hold immutable values only: they are formatted at
        # the end of the turn, after the run they announce has started.
        deferred = not urgent and getattr(record, DEFERRABLE, False)
        self._pending.append(record if deferred else self._line(record))
        if not urgent:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                if self._flush_on is not loop:
                    # A loop that closed with a flush still queued never ran it; the
                    # next loop queues its own.
                    self._flush_on = loop
                    loop.call_soon(self._flush_from_loop)
                return
        self.flush()

    def _flush_from_loop(self) -> None:
        self._flush_on = None
        self.flush()

    def _line(self, item: str | logging.LogRecord) -> str:
        """``item`` as text: a record is formatted (or reported, and dropped, when its
        formatting fails, as StreamHandler does)."""
        if isinstance(item, str):
            return item
        try:
            return self.format(item) + self.terminator
        except RecursionError:
            raise
        except Exception:
            self.handleError(item)
            return ""

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            text = "".join([self._line(item) for item in self._pending])
            self._pending.clear()
            try:
                if text:
                    self.stream.write(text)
                super().flush()
            except Exception:
                # As StreamHandler does: a broken stream is reported, never raised into
                # the code that logged.
                if logging.raiseExceptions:
                    with contextlib.suppress(Exception):
                        sys.stderr.write("--- Logging error: cannot write the log ---\n")
                        traceback.print_exc(file=sys.stderr)

    def close(self) -> None:
        self.flush()
        super().close()


def _rich_handler(stream: IO[str] | None) -> logging.Handler | None:
    try:
        from rich.console import Console  # type: ignore[import-not-found, unused-ignore]
        from rich.logging import RichHandler  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    console = Console(file=stream) if stream is not None else Console(stderr=True)
    handler: logging.Handler = RichHandler(console=console, rich_tracebacks=True)
    handler.setFormatter(_RichFieldsFormatter("plain"))
    return handler


def configure_logging(
    level: str | int = "INFO",
    format: LogFormat | str = "plain",
    *,
    stream: IO[str] | None = None,
    logger: str | None = None,
    batched: bool = False,
) -> logging.Handler:
    """Send log records to ``stream`` (stderr by default) in ``format``.

    Installs one handler on the root logger (or on ``logger``) and sets its level;
    calling again replaces the handler this function installed before. Returns it.
    ``batched`` (plain and json formats) writes what one event-loop step logged below
    WARNING in one write at the end of the step (``BatchingStreamHandler``); the
    ``docket worker`` command turns it on.
    """
    if format not in FORMATS:
        raise ValueError(f"Log format must be one of {', '.join(FORMATS)}, got {format!r}")
    target = logging.getLogger(logger)

    handler: logging.Handler | None = None
    if format == "rich":
        handler = _rich_handler(stream)
    if handler is None:
        output: LogFormat = "json" if format == "json" else "plain"
        target_stream = stream if stream is not None else sys.stderr
        handler = (
            BatchingStreamHandler(target_stream)
            if batched
            else logging.StreamHandler(target_stream)
        )
        handler.setFormatter(DocketFormatter(output, colours=format == "rich"))
    setattr(handler, _HANDLER_MARK, True)

    for existing in list(target.handlers):
        if getattr(existing, _HANDLER_MARK, False):
            target.removeHandler(existing)
            existing.close()
    target.addHandler(handler)
    target.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
