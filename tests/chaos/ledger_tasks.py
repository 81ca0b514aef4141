"""The chaos suite's task: it notes each start and end in a ledger file outside Redis.

Worker processes load it with ``--tasks ledger_tasks:tasks`` (``tests/chaos`` on their
PYTHONPATH) and write to the file named by ``DOCKET_CHAOS_LEDGER``. Every record is one
short line written with one ``write`` to a descriptor opened with ``O_APPEND``, so the
lines of several processes never interleave and a SIGKILL leaves whole lines only.

A line is a JSON object (the ``ledger`` module reads them back):

- ``e``: ``"start"`` or ``"end"``
- ``k``: the task's key
- ``r``: this run's id (``<pid>-<n>``), the same on its start and end
- ``p``: the worker's pid
- ``t``: wall time by the machine's real clock: ``time.time()``, or for a worker whose
  clock is faked (``DOCKET_CHAOS_CLOCK_ANCHOR`` set) the anchor's wall time plus the
  monotonic time since the anchor (see ``real_time``)
- ``f``: only for a faked clock, the worker's own ``time.time()`` (so a test can check
  the fake was in force)
- ``m``: ``time.monotonic()``, one clock for every process of the machine
- ``w``: the ``when`` the producer scheduled the task for (epoch seconds)
- ``d``: on a start, whether the worker took it over from another (``redelivered``)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time

from docket import CurrentExecution, Execution

LEDGER_ENV = "DOCKET_CHAOS_LEDGER"
# "<wall> <monotonic>", read together by a process whose clock is real; see real_time.
CLOCK_ANCHOR_ENV = "DOCKET_CHAOS_CLOCK_ANCHOR"

_fd: int | None = None
_fd_pid: int | None = None
_runs = itertools.count(1)


def _ledger_fd() -> int:
    global _fd, _fd_pid
    pid = os.getpid()
    if _fd is None or _fd_pid != pid:
        path = os.environ[LEDGER_ENV]
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _fd_pid = pid
    return _fd


def _anchor() -> tuple[float, float] | None:
    raw = os.environ.get(CLOCK_ANCHOR_ENV)
    if not raw:
        return None
    wall, mono = raw.split()
    return float(wall), float(mono)


_clock_anchor = _anchor()


def real_time() -> float:
    """The machine's real wall time, even in a worker whose ``time.time()`` is faked.

    The clock-skew scenario runs workers under libfaketime with
    ``FAKETIME_DONT_FAKE_MONOTONIC=1``: their ``time.time()`` is off by the skew, their
    ``time.monotonic()`` is the machine's. A ledger that wrote the faked ``time.time()``
    would call a start early or late by the skew, so the worker is given an anchor (a
    wall and a monotonic reading taken together in the unfaked test process) and
    counts wall time from it by the monotonic clock. The two kernel clocks advance
    together (NTP slews both; only a step of the wall clock would part them, and a step
    would move the Redis server's clock, which the docket schedules by, just as much).
    Reading Redis's TIME instead would cost a round trip per start and report a moment
    after the start, hiding an early start by up to that round trip.
    """
    if _clock_anchor is None:
        return time.time()
    wall, mono = _clock_anchor
    return wall + (time.monotonic() - mono)


def note(event: str, key: str, run: str, when: float, redelivered: bool | None = None) -> None:
    """Append one ledger line (one ``write`` on an ``O_APPEND`` descriptor)."""
    record: dict[str, object] = {
        "e": event,
        "k": key,
        "r": run,
        "p": os.getpid(),
        "t": real_time(),
        "m": time.monotonic(),
        "w": when,
    }
    if _clock_anchor is not None:
        record["f"] = time.time()
    if redelivered is not None:
        record["d"] = redelivered
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    written = os.write(_ledger_fd(), line)
    if written != len(line):  # pragma: no cover - a short write would tear the ledger
        raise OSError(f"short write to the chaos ledger: {written} of {len(line)} bytes")


async def chaos_task(
    when: float, sleep: float, padding: str = "", execution: Execution = CurrentExecution()
) -> None:
    """Note the start, sleep ``sleep`` seconds (so runs overlap with the faults), note
    the end. ``when`` is the time the producer scheduled it for; ``padding`` is ignored
    (it makes a task take more room in Redis)."""
    run = f"{os.getpid()}-{next(_runs)}"
    note("start", execution.key, run, when, execution.redelivered)
    await asyncio.sleep(sleep)
    note("end", execution.key, run, when)


tasks = [chaos_task]
