"""Reading the chaos ledger back, and what it says about a run.

The ledger (written by ``ledger_tasks``) lives outside Redis, so it is a witness Redis
cannot lose or rewrite. Given the keys the producer added, the faults the test caused
and the final state of each key's docket record, ``analyse`` reports:

- ``lost``: keys added that never ended (no run reached its end line);
- ``stuck``: keys whose docket record is not in a final state;
- ``early``: runs that started before the task's scheduled ``when``;
- ``overlapping``: two runs of one key that ran at the same time on live workers;
- ``duplicates``: keys that ended more than once (at-least-once delivery allows it
  after a fault; it is reported, not forbidden).

A run whose worker was SIGKILLed before its end line is open: it ran until the kill.
A worker frozen with SIGSTOP runs nothing while frozen, so its pause windows are cut
out of its runs. Times for overlaps are ``time.monotonic()``, which every process of
the machine reads from the same clock; ``early`` compares wall times, as the docket's
scheduler does (by the Redis server's clock, on this same machine). A worker whose
clock is faked still writes the real wall time (``ledger_tasks.real_time``).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from docket import Docket

# The docket stores ``when`` with six decimals and compares it with the server's TIME in
# microseconds: a start may precede the float ``when`` by rounding, never by more.
CLOCK_RESOLUTION = 1e-6

Interval = tuple[float, float]


@dataclass(frozen=True)
class Run:
    """One run of a task as the ledger shows it: a start line and perhaps an end line."""

    key: str
    run: str
    pid: int
    when: float
    start_wall: float
    start_mono: float
    redelivered: bool = False
    end_wall: float | None = None
    end_mono: float | None = None
    # The worker's own time.time() at the start, where its clock was faked ("f").
    start_process_wall: float | None = None

    @property
    def ended(self) -> bool:
        return self.end_mono is not None

    def __str__(self) -> str:
        end = f"{self.end_mono:.6f}" if self.end_mono is not None else "open"
        return (
            f"{self.key} run {self.run} (pid {self.pid}, when {self.when:.6f}, "
            f"started {self.start_wall:.6f} mono {self.start_mono:.6f}, ended {end}"
            f"{', redelivered' if self.redelivered else ''})"
        )


def parse_ledger(lines: Iterable[str]) -> list[Run]:
    """The runs in ledger ``lines``, in order of their start lines."""
    starts: dict[str, dict[str, object]] = {}
    ends: dict[str, dict[str, object]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            event, run = record["e"], record["r"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"ledger line {number} is not a ledger record: {line!r}") from error
        book = starts if event == "start" else ends if event == "end" else None
        if book is None:
            raise ValueError(f"ledger line {number} has an unknown event: {line!r}")
        if run in book:
            raise ValueError(f"ledger line {number}: run {run} has two {event} lines")
        if event == "end" and run not in starts:
            raise ValueError(f"ledger line {number}: run {run} ends before it starts")
        book[run] = record
    runs = []
    for run, start in starts.items():
        end = ends.get(run)
        if end is not None and (end["k"], end["p"]) != (start["k"], start["p"]):
            raise ValueError(f"run {run}: its end line names another key or pid")
        runs.append(
            Run(
                key=str(start["k"]),
                run=run,
                pid=int(str(start["p"])),
                when=float(str(start["w"])),
                start_wall=float(str(start["t"])),
                start_mono=float(str(start["m"])),
                redelivered=bool(start.get("d", False)),
                end_wall=None if end is None else float(str(end["t"])),
                end_mono=None if end is None else float(str(end["m"])),
                start_process_wall=float(str(start["f"])) if "f" in start else None,
            )
        )
    return runs


def read_ledger(path: Path) -> list[Run]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as ledger:
        return parse_ledger(ledger)


class LedgerTail:
    """Follows a growing ledger: which keys have ended so far, reading only new lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ended: set[str] = set()
        self.lines = 0
        self._offset = 0

    def poll(self) -> set[str]:
        if not self.path.exists():
            return self.ended
        with self.path.open("rb") as ledger:
            ledger.seek(self._offset)
            data = ledger.read()
        # Only whole lines: a writer may be between two of them.
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            self.lines += 1
            record = json.loads(line)
            if record["e"] == "end":
                self.ended.add(record["k"])
        return self.ended


@dataclass(frozen=True)
class Faults:
    """What the test did to the workers, by pid, in ``time.monotonic()`` seconds.

    ``kills``: when each SIGKILLed worker was seen dead (after ``wait`` returned).
    ``pauses``: the windows in which a worker was known to be frozen: from the moment
    it was seen stopped after SIGSTOP to the moment SIGCONT was sent.
    """

    kills: Mapping[int, float] = field(default_factory=dict)
    pauses: Mapping[int, Sequence[Interval]] = field(default_factory=dict)


def live_intervals(run: Run, faults: Faults) -> list[Interval]:
    """When ``run`` was running on a live, unfrozen worker.

    An open run (no end line) lasted until its worker's kill; a run with neither an end
    nor a kill of its worker is taken to run for ever, which can only add overlaps."""
    end = run.end_mono if run.end_mono is not None else faults.kills.get(run.pid, math.inf)
    pieces: list[Interval] = [(run.start_mono, end)]
    for frozen_from, frozen_to in sorted(faults.pauses.get(run.pid, ())):
        cut: list[Interval] = []
        for low, high in pieces:
            if frozen_to <= low or frozen_from >= high:
                cut.append((low, high))
                continue
            if low < frozen_from:
                cut.append((low, frozen_from))
            if frozen_to < high:
                cut.append((frozen_to, high))
        pieces = cut
    return pieces


def _overlap(a: list[Interval], b: list[Interval]) -> float:
    return sum(max(0.0, min(ah, bh) - max(al, bl)) for al, ah in a for bl, bh in b)


@dataclass(frozen=True)
class Analysis:
    """What the ledger says; the tuples hold the offending keys or runs, for messages."""

    added: int
    runs: int
    lost: tuple[str, ...]
    stuck: tuple[tuple[str, str | None], ...]
    early: tuple[Run, ...]
    overlapping: tuple[tuple[Run, Run], ...]
    duplicates: tuple[str, ...]
    unexpected: tuple[str, ...]
    # Not invariants, but what shows the faults hit running work: runs that never ended
    # (their worker died or stopped mid-run) and runs a worker took over from another.
    interrupted: int = 0
    redelivered: int = 0

    @property
    def problems(self) -> list[str]:
        """A line for each invariant broken (empty when none is), with examples."""
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} lost (never ended): {list(self.lost[:10])}")
        if self.stuck:
            found.append(f"{len(self.stuck)} stuck (record not final): {list(self.stuck[:10])}")
        if self.early:
            found.append(f"{len(self.early)} started early: " + "; ".join(map(str, self.early[:5])))
        if self.overlapping:
            found.append(
                f"{len(self.overlapping)} overlapping pairs: "
                + "; ".join(f"{a} WITH {b}" for a, b in self.overlapping[:5])
            )
        if self.unexpected:
            found.append(f"{len(self.unexpected)} keys never added: {list(self.unexpected[:10])}")
        return found


def analyse(
    runs: Sequence[Run],
    added: Mapping[str, float],
    states: Mapping[str, str | None],
    faults: Faults | None = None,
    *,
    clock_resolution: float = CLOCK_RESOLUTION,
    missing_is_final: bool = False,
) -> Analysis:
    """Check the ledger's ``runs`` against the keys ``added`` (key -> scheduled ``when``)
    and the final record ``states`` (key -> state, None when there is no record).

    ``missing_is_final``: a key without a record is not stuck (its record expired, which
    only a final record does; a key that never ran is still lost)."""
    faults = faults or Faults()
    by_key: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_key[run.key].append(run)

    lost = tuple(k for k in added if not any(r.ended for r in by_key.get(k, ())))
    final: set[str | None] = set(FINAL_STATES)
    if missing_is_final:
        final.add(None)
    stuck = tuple((k, states.get(k)) for k in added if states.get(k) not in final)
    # By the producer's ``when`` for the key (the task's own copy for keys never added).
    early = tuple(r for r in runs if r.start_wall < added.get(r.key, r.when) - clock_resolution)
    overlapping: list[tuple[Run, Run]] = []
    for key_runs in by_key.values():
        intervals = [live_intervals(r, faults) for r in key_runs]
        for i in range(len(key_runs)):
            for j in range(i + 1, len(key_runs)):
                if _overlap(intervals[i], intervals[j]) > 0:
                    overlapping.append((key_runs[i], key_runs[j]))
    duplicates = tuple(k for k, rs in by_key.items() if sum(r.ended for r in rs) > 1)
    unexpected = tuple(k for k in by_key if k not in added)
    return Analysis(
        added=len(added),
        runs=len(runs),
        lost=lost,
        stuck=stuck,
        early=early,
        overlapping=tuple(overlapping),
        duplicates=duplicates,
        unexpected=unexpected,
        interrupted=sum(not r.ended for r in runs),
        redelivered=sum(r.redelivered for r in runs),
    )


# A task's final states by name, as its record stores them (the released docket, which
# the suite can also run, names them the same).
FINAL_STATES = ("completed", "failed", "cancelled")


def state_name(state: object) -> str:
    """An ``ExecutionState`` by the name its record stores (a plain Enum's str() would
    be ``ExecutionState.COMPLETED``)."""
    return str(getattr(state, "value", state))


async def record_states(
    docket: Docket, keys: Iterable[str], chunk: int = 32
) -> dict[str, str | None]:
    """Each key's state as ``Docket.get_execution`` reads it (None: no record)."""
    keys = list(keys)
    states: dict[str, str | None] = {}
    for offset in range(0, len(keys), chunk):
        part = keys[offset : offset + chunk]
        executions = await asyncio.gather(*(docket.get_execution(k) for k in part))
        for key, execution in zip(part, executions, strict=True):
            states[key] = None if execution is None else state_name(execution.state)
    return states


async def scan_record_states(docket: Docket, count: int = 1000) -> dict[str, str | None]:
    """The state of every task record still in Redis, by key, found with SCAN (for runs
    too big, or records too short-lived, to read key by key)."""
    client = docket.engine.connection.client
    prefix = docket.keys.record_prefix
    states: dict[str, str | None] = {}
    cursor = 0
    while True:
        cursor, names = await client.scan(cursor, match=prefix + "*", count=count)
        if names:
            async with client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hget(name, "state")
                found = await pipe.execute()
            for name, state in zip(names, found, strict=True):
                text = name.decode() if isinstance(name, bytes) else str(name)
                value = state.decode() if isinstance(state, bytes) else state
                states[text[len(prefix) :]] = value
        if not cursor:
            return states
