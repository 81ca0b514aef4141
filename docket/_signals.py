"""The one shutdown-signal policy of every worker entry point (``docket worker``,
``docket worker --app``, ``manage.py docket_worker``): the first SIGTERM/SIGINT stops
claiming and lets in-flight runs finish; a second one aborts them (they are redelivered
after the redelivery timeout) and exits at once."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

logger = logging.getLogger("docket.worker")

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stoppable(Protocol):
    def stop(self) -> None: ...
    def abort(self) -> None: ...


class SignalsSeen:
    """How many shutdown signals have arrived: a worker started after the first one
    should be stopped at once (``shutdown_signals`` cannot reach it before it exists)."""

    def __init__(self) -> None:
        self.count = 0


@contextmanager
def shutdown_signals(
    target: Callable[[], Stoppable | None],
    loop: asyncio.AbstractEventLoop,
    *,
    on_abort: Callable[[], None] | None = None,
) -> Iterator[SignalsSeen]:
    """Route SIGTERM/SIGINT to the worker ``target()`` returns (None: not started yet;
    it is looked up again at each signal) for as long as the block runs.

    The worker runs on ``loop``; its ``stop``/``abort`` are called there, whichever
    thread the signal arrives on. ``on_abort`` runs on the loop after the second
    signal's ``abort`` (the CLI cancels its main task there). Outside the main thread,
    where Python cannot take signals, nothing is installed.
    """
    seen = SignalsSeen()
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def on_signal(signum: int) -> None:
        seen.count += 1
        name = signal.Signals(signum).name
        if seen.count == 1:
            logger.info(
                "Received %s, initiating graceful shutdown (send it again to exit now)", name
            )
        else:
            logger.warning("Received %s again: exiting now", name)
        loop.call_soon_threadsafe(_deliver, seen.count)

    def _deliver(count: int) -> None:
        worker = target()
        if count == 1:
            if worker is not None:
                worker.stop()
            return
        if worker is not None:
            worker.abort()
        if on_abort is not None:
            on_abort()

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    previous: list[tuple[signal.Signals, Any]] = []
    installed: list[signal.Signals] = []
    for signum in SHUTDOWN_SIGNALS:
        if running is loop:
            # The loop runs here: let it take the signal (it wakes from its selector).
            loop.add_signal_handler(signum, on_signal, int(signum))
            installed.append(signum)
        else:
            previous.append(
                (signum, signal.signal(signum, lambda number, _frame: on_signal(number)))
            )
    try:
        yield seen
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        for signum, handler in previous:
            signal.signal(signum, handler)
