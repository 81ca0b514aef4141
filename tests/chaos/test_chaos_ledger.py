"""The chaos ledger's analysis, on hand-built ledgers: it must catch what it claims to."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import ledger_tasks
import pytest
from ledger import (
    CLOCK_RESOLUTION,
    Analysis,
    Faults,
    LedgerTail,
    analyse,
    live_intervals,
    parse_ledger,
    read_ledger,
)


def line(event: str, key: str, run: str, pid: int, mono: float, when: float = 0.0) -> str:
    # Wall time = 1000 + monotonic time, so tests can reason in one clock.
    return json.dumps(
        {"e": event, "k": key, "r": run, "p": pid, "t": 1000.0 + mono, "m": mono, "w": when}
    )


def ran(key: str, run: str, pid: int, start: float, end: float | None) -> list[str]:
    lines = [line("start", key, run, pid, start, when=1000.0)]
    if end is not None:
        lines.append(line("end", key, run, pid, end, when=1000.0))
    return lines


def check(
    lines: list[str],
    added: dict[str, float] | None = None,
    states: dict[str, str | None] | None = None,
    faults: Faults | None = None,
) -> Analysis:
    runs = parse_ledger(lines)
    if added is None:
        added = dict.fromkeys(sorted({run.key for run in runs}), 1000.0)
    if states is None:
        states = dict.fromkeys(added, "completed")
    return analyse(runs, added, states, faults)


def test_a_clean_ledger_breaks_nothing() -> None:
    analysis = check([*ran("a", "1-1", 1, 1.0, 1.01), *ran("b", "1-2", 1, 1.0, 1.02)])
    assert analysis.problems == []
    assert (analysis.added, analysis.runs) == (2, 2)
    assert not (analysis.lost or analysis.stuck or analysis.early or analysis.overlapping)
    assert analysis.duplicates == ()


def test_a_task_that_never_ended_is_lost() -> None:
    analysis = check(
        [*ran("a", "1-1", 1, 1.0, 1.01), *ran("b", "1-2", 1, 1.0, None)],
        added={"a": 1000.0, "b": 1000.0, "c": 1000.0},
        faults=Faults(kills={1: 1.5}),
    )
    # b started and its worker died; c never started at all.
    assert analysis.lost == ("b", "c")
    assert "2 lost" in analysis.problems[0]


def test_a_record_not_in_a_final_state_is_stuck() -> None:
    analysis = check(
        [*ran("a", "1-1", 1, 1.0, 1.01), *ran("b", "1-2", 1, 1.0, 1.01)],
        states={"a": "running", "b": None},
    )
    assert analysis.stuck == (("a", "running"), ("b", None))
    assert analysis.lost == ()
    for final in ("completed", "failed", "cancelled"):
        assert check(ran("a", "1-1", 1, 1.0, 1.01), states={"a": final}).stuck == ()


def test_a_start_before_its_when_is_early() -> None:
    # Started at wall 1000.999, due at 1001.0.
    early = check(ran("a", "1-1", 1, 0.999, 1.01), added={"a": 1001.0})
    assert [run.key for run in early.early] == ["a"]
    assert "started early" in early.problems[0]
    # Within the clock's resolution (the docket stores when to the microsecond).
    on_time = check(
        [line("start", "a", "1-1", 1, 1.0 - CLOCK_RESOLUTION / 2), line("end", "a", "1-1", 1, 2)],
        added={"a": 1001.0},
    )
    assert on_time.early == ()


def test_two_runs_of_one_key_at_once_on_live_workers_overlap() -> None:
    analysis = check([*ran("a", "1-1", 1, 1.0, 1.5), *ran("a", "2-1", 2, 1.4, 1.6)])
    [(first, second)] = analysis.overlapping
    assert (first.pid, second.pid) == (1, 2)
    assert "1 overlapping pairs" in analysis.problems[0]
    # One after the other is a duplicate, not an overlap.
    after = check([*ran("a", "1-1", 1, 1.0, 1.5), *ran("a", "2-1", 2, 1.5, 1.6)])
    assert after.overlapping == ()
    assert after.duplicates == ("a",)
    assert after.problems == []


def test_a_run_cut_short_by_a_kill_overlaps_only_what_ran_before_the_kill() -> None:
    lines = [*ran("a", "1-1", 1, 1.0, None), *ran("a", "2-1", 2, 3.5, 3.6)]
    assert check(lines, faults=Faults(kills={1: 1.2})).overlapping == ()
    # Killed only after the second run had started: both ran at once.
    assert len(check(lines, faults=Faults(kills={1: 3.55})).overlapping) == 1
    # No end and no kill on record: it may still be running, so it overlaps.
    assert len(check(lines).overlapping) == 1


def test_a_frozen_worker_runs_nothing_while_frozen() -> None:
    lines = [*ran("a", "1-1", 1, 1.0, 10.0), *ran("a", "2-1", 2, 4.0, 4.1)]
    paused = Faults(pauses={1: [(2.0, 9.0)]})
    assert check(lines, faults=paused).overlapping == ()
    assert live_intervals(parse_ledger(lines)[0], paused) == [(1.0, 2.0), (9.0, 10.0)]
    # The new owner still running when the frozen one woke: an overlap.
    late = [*ran("a", "1-1", 1, 1.0, 10.0), *ran("a", "2-1", 2, 8.5, 9.5)]
    assert len(check(late, faults=paused).overlapping) == 1
    assert len(check(lines).overlapping) == 1


def test_keys_never_added_are_reported() -> None:
    analysis = check(ran("z", "1-1", 1, 1.0, 1.1), added={}, states={})
    assert analysis.unexpected == ("z",)
    assert "never added" in analysis.problems[0]


@pytest.mark.parametrize(
    "lines",
    [
        ["not json"],
        [json.dumps({"e": "middle", "k": "a", "r": "1-1"})],
        [line("end", "a", "1-1", 1, 1.0)],
        [line("start", "a", "1-1", 1, 1.0), line("start", "a", "1-1", 1, 1.1)],
        [line("start", "a", "1-1", 1, 1.0), line("end", "b", "1-1", 1, 1.1)],
    ],
    ids=["garbage", "unknown-event", "end-without-start", "two-starts", "end-of-another-key"],
)
def test_a_torn_or_inconsistent_ledger_is_refused(lines: list[str]) -> None:
    with pytest.raises(ValueError):
        parse_ledger(lines)


def test_the_task_module_writes_lines_the_analysis_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(ledger_tasks.LEDGER_ENV, str(path))
    monkeypatch.setattr(ledger_tasks, "_fd", None)
    ledger_tasks.note("start", "k1", "r1", 1234.5, redelivered=True)
    ledger_tasks.note("end", "k1", "r1", 1234.5)
    ledger_tasks.note("start", "k2", "r2", 1234.5, redelivered=False)
    fd = ledger_tasks._fd
    assert fd is not None
    os.close(fd)
    monkeypatch.setattr(ledger_tasks, "_fd", None)

    runs = read_ledger(path)
    assert [(r.key, r.pid, r.when, r.redelivered, r.ended) for r in runs] == [
        ("k1", os.getpid(), 1234.5, True, True),
        ("k2", os.getpid(), 1234.5, False, False),
    ]
    assert runs[0].start_mono <= runs[0].end_mono  # type: ignore[operator]
    assert LedgerTail(path).poll() == {"k1"}


def test_the_tail_reads_only_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    first, second = ran("a", "1-1", 1, 1.0, 1.1)
    path.write_text(first + "\n" + second[:10])
    tail = LedgerTail(path)
    assert tail.poll() == set()
    with path.open("a") as out:
        out.write(second[10:] + "\n")
    assert tail.poll() == {"a"}
    assert tail.lines == 2


def test_a_worker_whose_clock_is_faked_writes_the_real_time_from_its_anchor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(ledger_tasks.LEDGER_ENV, str(path))
    monkeypatch.setattr(ledger_tasks, "_fd", None)
    # An anchor 60 s behind this process's clock: as if this clock ran 60 s fast.
    monkeypatch.setenv(ledger_tasks.CLOCK_ANCHOR_ENV, f"{time.time() - 60} {time.monotonic()}")
    monkeypatch.setattr(ledger_tasks, "_clock_anchor", ledger_tasks._anchor())
    ledger_tasks.note("start", "k1", "r1", 1234.5, redelivered=False)
    fd = ledger_tasks._fd
    assert fd is not None
    os.close(fd)
    monkeypatch.setattr(ledger_tasks, "_fd", None)

    [run] = read_ledger(path)
    assert run.start_process_wall is not None
    assert run.start_process_wall - run.start_wall == pytest.approx(60, abs=0.5)
    # Without an anchor the wall time is time.time() and no process clock is written.
    monkeypatch.setattr(ledger_tasks, "_clock_anchor", None)
    ledger_tasks.note("start", "k2", "r2", 1234.5, redelivered=False)
    os.close(ledger_tasks._fd)  # type: ignore[arg-type]
    monkeypatch.setattr(ledger_tasks, "_fd", None)
    second = read_ledger(path)[1]
    assert second.start_process_wall is None
    assert abs(second.start_wall - time.time()) < 5
