"""``TaskLogger``'s records and ``docket.logging.configure_logging``'s output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from docket.dependencies import TaskLoggerAdapter
from docket.logging import DocketFormatter, configure_logging

CONTEXT = {
    "docket.name": "orders",
    "docket.worker": "host#1",
    "docket.task": "charge",
    "docket.key": "charge-42",
    "docket.attempt": 2,
}


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[tuple[TaskLoggerAdapter, Capture]]:
    logger = logging.getLogger("docket.task.charge")
    handler = Capture()
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield TaskLoggerAdapter(logger, CONTEXT), handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def test_records_carry_the_run_context(captured: tuple[TaskLoggerAdapter, Capture]) -> None:
    logger, handler = captured
    logger.info("charging %s", "card")
    (record,) = handler.records
    assert record.getMessage() == "charging card"
    for name, value in CONTEXT.items():
        assert record.__dict__[name] == value
    assert record.docket_fields == list(CONTEXT)  # type: ignore[attr-defined]


def test_keyword_fields_and_stdlib_extra_both_work(
    captured: tuple[TaskLoggerAdapter, Capture],
) -> None:
    logger, handler = captured
    logger.info("Service status", service_id="s-1", status="up", extra={"region": "eu"})
    logger.warning("plain stdlib", extra={"reason": "slow"}, stack_info=False)
    first, second = handler.records
    assert first.service_id == "s-1"  # type: ignore[attr-defined]
    assert first.status == "up"  # type: ignore[attr-defined]
    assert first.region == "eu"  # type: ignore[attr-defined]
    assert first.docket_fields == ["service_id", "status", "region", *CONTEXT]  # type: ignore[attr-defined]
    assert second.reason == "slow"  # type: ignore[attr-defined]
    assert second.levelno == logging.WARNING


def test_exc_info_still_works(captured: tuple[TaskLoggerAdapter, Capture]) -> None:
    logger, handler = captured
    try:
        raise ValueError("bad")
    except ValueError:
        logger.exception("failed", order=7)
    (record,) = handler.records
    assert record.exc_info is not None and record.exc_info[0] is ValueError
    assert record.order == 7  # type: ignore[attr-defined]


def test_fields_named_like_record_attributes_do_not_break_logging(
    captured: tuple[TaskLoggerAdapter, Capture],
) -> None:
    logger, handler = captured
    logger.info("who", name="bob", message="hi")
    (record,) = handler.records
    assert record.name == "docket.task.charge"
    assert record.name_ == "bob"  # type: ignore[attr-defined]
    assert record.message_ == "hi"  # type: ignore[attr-defined]


def test_bind_adds_context(captured: tuple[TaskLoggerAdapter, Capture]) -> None:
    logger, handler = captured
    logger.bind(customer=9).info("bound")
    (record,) = handler.records
    assert record.customer == 9  # type: ignore[attr-defined]
    assert record.__dict__["docket.key"] == "charge-42"


def test_the_call_line_points_at_the_caller(
    captured: tuple[TaskLoggerAdapter, Capture],
) -> None:
    logger, handler = captured
    logger.info("where am I")
    assert handler.records[0].filename == "test_dependencies_logging.py"


# -- formatting -------------------------------------------------------------------------


def _record(adapter_logger: TaskLoggerAdapter) -> logging.LogRecord:
    handler = Capture()
    adapter_logger.logger.addHandler(handler)
    try:
        adapter_logger.info("Service status", service_id=17, status="all good")
    finally:
        adapter_logger.logger.removeHandler(handler)
    return handler.records[0]


def test_plain_lines(captured: tuple[TaskLoggerAdapter, Capture]) -> None:
    logger, _ = captured
    line = DocketFormatter("plain").format(_record(logger))
    head, _, rest = line.partition(" INFO ")
    assert head[:4].isdigit()  # starts with the time
    assert rest.lstrip().startswith("docket.task.charge Service status service_id=17 ")
    assert 'status="all good"' in rest
    assert "docket.key=charge-42" in rest
    assert rest.index("service_id=") < rest.index("docket.key=")


def test_json_lines(captured: tuple[TaskLoggerAdapter, Capture]) -> None:
    logger, _ = captured
    document = json.loads(DocketFormatter("json").format(_record(logger)))
    assert document["message"] == "Service status"
    assert document["level"] == "INFO"
    assert document["logger"] == "docket.task.charge"
    assert document["service_id"] == 17
    assert document["status"] == "all good"
    assert document["docket.attempt"] == 2
    assert "time" in document


def test_stdlib_extras_without_a_task_logger_are_rendered() -> None:
    record = logging.LogRecord("docket.worker", logging.INFO, __file__, 1, "started", (), None)
    record.__dict__["tasks"] = 3
    assert DocketFormatter("plain").format(record).endswith("docket.worker started tasks=3")


def test_structlog_event_dicts_are_rendered() -> None:
    record = logging.LogRecord(
        "docket.worker", logging.INFO, __file__, 1, {"event": "claimed", "count": 5}, (), None
    )
    assert DocketFormatter("plain").format(record).endswith("docket.worker claimed count=5")


def test_exceptions_are_included() -> None:
    try:
        raise RuntimeError("kaboom")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "docket", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    assert "RuntimeError: kaboom" in DocketFormatter("plain").format(record)
    document = json.loads(DocketFormatter("json").format(record))
    assert "RuntimeError: kaboom" in document["exception"]


def test_configure_logging_installs_one_handler() -> None:
    stream = io.StringIO()
    target = logging.getLogger("docket.configure-test")
    try:
        configure_logging("DEBUG", "json", stream=stream, logger="docket.configure-test")
        configure_logging("DEBUG", "json", stream=stream, logger="docket.configure-test")
        assert len(target.handlers) == 1
        assert target.level == logging.DEBUG
        TaskLoggerAdapter(target, CONTEXT).debug("hello", n=1)
        lines = stream.getvalue().splitlines()
        assert len(lines) == 1
        assert json.loads(lines[0])["n"] == 1

        stream = io.StringIO()
        configure_logging("INFO", "rich", stream=stream, logger="docket.configure-test")
        assert len(target.handlers) == 1
        target.info("coloured", extra={"k": "v"})
        assert "coloured" in stream.getvalue() and "k=v" in stream.getvalue()
    finally:
        for handler in list(target.handlers):
            target.removeHandler(handler)
        target.setLevel(logging.NOTSET)


def test_unknown_formats_are_refused() -> None:
    with pytest.raises(ValueError, match="plain, json, rich"):
        configure_logging("INFO", "xml", logger="docket.configure-test")
