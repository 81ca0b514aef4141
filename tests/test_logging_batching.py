"""``configure_logging(batched=True)``: lines logged during one event-loop step reach the
stream together at the end of the step, in order, and none is lost."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import pytest

from docket.logging import DEFERRABLE, BatchingStreamHandler, configure_logging

LOGGER = "docket.batching-test"


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    target = logging.getLogger(LOGGER)
    target.propagate = False
    handler = configure_logging("INFO", "plain", stream=stream, logger=LOGGER, batched=True)
    assert isinstance(handler, BatchingStreamHandler)
    try:
        yield target, stream
    finally:
        for installed in list(target.handlers):
            target.removeHandler(installed)
            installed.close()
        target.setLevel(logging.NOTSET)
        target.propagate = True


def _messages(stream: io.StringIO) -> list[str]:
    return [line.split(f"{LOGGER} ", 1)[1] for line in stream.getvalue().splitlines()]


async def test_one_steps_lines_are_written_at_its_end_in_order(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    target, stream = logged
    for n in range(3):
        target.info("line %d", n)
    assert stream.getvalue() == ""

    await asyncio.sleep(0)

    assert _messages(stream) == ["line 0", "line 1", "line 2"]


async def test_a_warning_writes_what_is_pending_first(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    target, stream = logged
    target.info("before")
    target.warning("trouble")

    assert _messages(stream) == ["before", "trouble"]


def test_outside_a_loop_each_line_is_written_at_once(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    target, stream = logged
    target.info("no loop here")

    assert _messages(stream) == ["no loop here"]


async def test_close_writes_what_is_pending(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    target, stream = logged
    target.info("last words")
    (handler,) = [h for h in target.handlers if isinstance(h, BatchingStreamHandler)]

    handler.close()

    assert _messages(stream) == ["last words"]


def test_a_line_left_by_a_closed_loop_goes_out_with_the_next_loops_lines(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    target, stream = logged
    loop = asyncio.new_event_loop()

    def log_and_stop() -> None:
        target.info("from the first loop")
        # Stopping now ends the loop before the queued write runs.
        loop.stop()

    loop.call_soon(log_and_stop)
    loop.run_forever()
    loop.close()
    assert stream.getvalue() == ""

    async def later() -> None:
        target.info("from the second loop")

    asyncio.run(later())

    assert _messages(stream) == ["from the first loop", "from the second loop"]


def test_a_broken_stream_is_reported_not_raised(
    logged: tuple[logging.Logger, io.StringIO], capsys: pytest.CaptureFixture[str]
) -> None:
    target, stream = logged
    stream.close()

    target.info("into the void")

    assert "Logging error" in capsys.readouterr().err


async def test_a_deferrable_record_is_formatted_at_the_end_of_the_turn_in_its_place(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    """docket marks its per-run lines (strings and numbers only) so the handler formats
    them after the run they announce has started; order is kept with other lines."""
    target, stream = logged
    seen = ["first"]
    target.info("deferred %s", seen, extra={DEFERRABLE: True})
    target.info("formatted %s", seen)
    # Proof of when each was formatted: the deferred one sees this, the other does not.
    seen.append("later")

    await asyncio.sleep(0)

    assert _messages(stream) == ["deferred ['first', 'later']", "formatted ['first']"]
    assert DEFERRABLE not in stream.getvalue()
