"""Agenda: collect task calls, then scatter them evenly over a window."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from docket import Agenda, Disposition, Docket, ExecutionState, Retry, Worker

ran: list[tuple[str, Any]] = []


pytestmark = pytest.mark.partitioned_too


async def process(item: int, *, label: str = "") -> None:
    ran.append(("process", (item, label)))


async def notify(user: str) -> None:
    ran.append(("notify", user))


@pytest.fixture(autouse=True)
def _reset_ran() -> None:
    ran.clear()


def in_an_hour() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)


def assert_close(actual: datetime, expected: datetime, what: str = "") -> None:
    # Times go through Redis as float seconds with microsecond precision.
    assert abs(actual - expected) < timedelta(milliseconds=1), f"{what}: {actual} != {expected}"


async def stored_times(docket: Docket) -> dict[str, datetime]:
    snapshot = await docket.snapshot()
    return {execution.key: execution.when for execution in snapshot.future}


# --- the collection --------------------------------------------------------------------------


def test_an_agenda_collects_calls_without_touching_anything() -> None:
    agenda = Agenda()
    assert len(agenda) == 0
    assert list(agenda) == []

    assert agenda.add(process)(1, label="one") is None
    agenda.add("notify", key="n-1")("ada")

    assert len(agenda) == 2
    items = list(agenda)
    assert items[0] == (process, (1,), {"label": "one"}, None)
    function, args, kwargs, key = items[1]
    assert (function, args, kwargs, key) == ("notify", ("ada",), {}, "n-1")
    assert items[1].key == "n-1"

    agenda.clear()
    assert len(agenda) == 0
    assert list(agenda) == []


async def test_an_empty_agenda_scatters_nothing(docket: Docket) -> None:
    assert await Agenda().scatter(docket, over=timedelta(minutes=1)) == []
    assert (await docket.snapshot()).total_tasks == 0


@pytest.mark.parametrize("over", [timedelta(0), timedelta(seconds=-1)])
async def test_the_window_must_be_positive(docket: Docket, over: timedelta) -> None:
    agenda = Agenda()
    agenda.add(process)(1)
    with pytest.raises(ValueError, match="over"):
        await agenda.scatter(docket, over=over)
    assert (await docket.snapshot()).total_tasks == 0


async def test_negative_jitter_is_refused(docket: Docket) -> None:
    agenda = Agenda()
    agenda.add(process)(1)
    with pytest.raises(ValueError, match="jitter"):
        await agenda.scatter(docket, over=timedelta(minutes=1), jitter=timedelta(seconds=-1))


# --- spacing -----------------------------------------------------------------------------------


async def test_tasks_are_spread_evenly_from_start_to_end(docket: Docket, url: str) -> None:
    agenda = Agenda()
    for item in range(5):
        agenda.add(process)(item)
    start = in_an_hour()

    executions = await agenda.scatter(docket, over=timedelta(minutes=4), start=start)

    assert [e.disposition for e in executions] == [Disposition.SCHEDULED] * 5
    assert [e.args for e in executions] == [(i,) for i in range(5)]
    stored = await stored_times(docket)
    for index, execution in enumerate(executions):
        expected = start + timedelta(minutes=index)
        assert_close(execution.when, expected, f"task {index}")
        assert_close(stored[execution.key], expected, f"stored time of task {index}")
        assert execution.state == ExecutionState.SCHEDULED


async def test_a_single_task_goes_in_the_middle_of_the_window(docket: Docket, url: str) -> None:
    agenda = Agenda()
    agenda.add(process)(1)
    start = in_an_hour()

    [execution] = await agenda.scatter(docket, over=timedelta(minutes=10), start=start)

    assert_close(execution.when, start + timedelta(minutes=5))
    assert_close((await stored_times(docket))[execution.key], start + timedelta(minutes=5))


async def test_the_window_starts_now_by_default(docket: Docket) -> None:
    agenda = Agenda()
    agenda.add(process)(1)
    agenda.add(process)(2)
    before = datetime.now(UTC)

    first, second = await agenda.scatter(docket, over=timedelta(minutes=10))

    after = datetime.now(UTC)
    assert before <= first.when <= after
    assert before + timedelta(minutes=10) <= second.when <= after + timedelta(minutes=10)


async def test_a_naive_start_means_utc(docket: Docket) -> None:
    agenda = Agenda()
    agenda.add(process)(1)
    agenda.add(process)(2)
    aware = in_an_hour()

    first, second = await agenda.scatter(
        docket, over=timedelta(minutes=2), start=aware.replace(tzinfo=None)
    )

    assert_close(first.when, aware)
    assert_close(second.when, aware + timedelta(minutes=2))


# --- jitter ------------------------------------------------------------------------------------


async def test_jitter_stays_within_its_bounds_and_never_before_start(docket: Docket) -> None:
    agenda = Agenda()
    count = 40
    for item in range(count):
        agenda.add(process)(item)
    start = in_an_hour()
    over = timedelta(seconds=39)
    jitter = timedelta(seconds=5)

    executions = await agenda.scatter(docket, over=over, start=start, jitter=jitter)

    offsets = []
    for index, execution in enumerate(executions):
        nominal = start + timedelta(seconds=index)
        assert execution.when >= start, f"task {index} moved before the start"
        assert abs(execution.when - nominal) <= jitter + timedelta(milliseconds=1)
        offsets.append(execution.when - nominal)
    assert len(set(offsets)) > count // 2, "jitter should move tasks by random amounts"


async def test_jitter_is_clamped_to_the_start(
    docket: Docket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The most negative offset every time: tasks near the start would land before it.
    monkeypatch.setattr(random, "uniform", lambda low, high: low)
    agenda = Agenda()
    for item in range(4):
        agenda.add(process)(item)
    start = in_an_hour()

    executions = await agenda.scatter(
        docket, over=timedelta(minutes=3), start=start, jitter=timedelta(seconds=90)
    )

    expected = [
        start,  # 0 - 90s, clamped
        start,  # 60s - 90s, clamped
        start + timedelta(seconds=30),
        start + timedelta(seconds=90),
    ]
    for execution, when in zip(executions, expected, strict=True):
        assert_close(execution.when, when)


# --- validation before scheduling --------------------------------------------------------------


async def test_an_unknown_task_name_schedules_nothing(docket: Docket, url: str) -> None:
    agenda = Agenda()
    agenda.add(process)(1)
    agenda.add(notify)("ada")
    agenda.add("no_such_task")(3)

    with pytest.raises(KeyError, match="no_such_task"):
        await agenda.scatter(docket, over=timedelta(minutes=1))

    assert (await docket.snapshot()).total_tasks == 0


async def conflicted(
    first: Retry = Retry(attempts=2),
    second: Retry = Retry(attempts=3),
) -> None:
    pass  # pragma: no cover - never registered


async def test_a_task_with_invalid_dependencies_schedules_nothing(docket: Docket) -> None:
    agenda = Agenda()
    agenda.add(process)(1)
    agenda.add(conflicted)()

    with pytest.raises(ValueError, match="Retry"):
        await agenda.scatter(docket, over=timedelta(minutes=1))

    assert (await docket.snapshot()).total_tasks == 0
    assert "conflicted" not in docket.tasks


async def test_unregistered_functions_are_registered(docket: Docket) -> None:
    assert "notify" not in docket.tasks
    agenda = Agenda()
    agenda.add(notify)("ada")

    [execution] = await agenda.scatter(docket, over=timedelta(minutes=1))

    assert docket.tasks["notify"] is notify
    assert execution.function_name == "notify"


async def test_registered_names_and_aliases_are_kept(docket: Docket) -> None:
    docket.register(notify, names=["tell"])
    agenda = Agenda()
    agenda.add("tell")("ada")
    agenda.add("trace")("hello")

    executions = await agenda.scatter(docket, over=timedelta(minutes=1))

    assert [e.function_name for e in executions] == ["tell", "trace"]
    snapshot = await docket.snapshot()
    assert sorted(e.function_name for e in snapshot.future) == ["tell", "trace"]


async def test_task_handles_from_the_decorator_work(docket: Docket, worker: Worker) -> None:
    @docket.add
    async def decorated(value: int) -> None:
        ran.append(("decorated", value))

    agenda = Agenda()
    agenda.add(decorated)(7)
    await agenda.scatter(docket, over=timedelta(milliseconds=10))
    await worker.run_until_finished()

    assert ran == [("decorated", 7)]


# --- keys --------------------------------------------------------------------------------------


async def test_stable_keys_make_a_rescatter_idempotent(docket: Docket, url: str) -> None:
    agenda = Agenda()
    for item in range(3):
        agenda.add(process, key=f"item-{item}")(item)
    start = in_an_hour()

    first = await agenda.scatter(docket, over=timedelta(minutes=2), start=start)
    again = await agenda.scatter(
        docket, over=timedelta(minutes=2), start=start + timedelta(hours=1)
    )

    assert [e.key for e in first] == ["item-0", "item-1", "item-2"]
    assert [e.disposition for e in first] == [Disposition.SCHEDULED] * 3
    assert [e.disposition for e in again] == [Disposition.ALREADY_SCHEDULED] * 3
    stored = await stored_times(docket)
    assert set(stored) == {"item-0", "item-1", "item-2"}
    for item in range(3):
        # The first schedule stands.
        assert_close(stored[f"item-{item}"], start + timedelta(minutes=item))


async def test_without_keys_each_scatter_schedules_afresh(docket: Docket) -> None:
    agenda = Agenda()
    agenda.add(process)(1)
    agenda.add(process)(2)

    first = await agenda.scatter(docket, over=timedelta(minutes=1), start=in_an_hour())
    second = await agenda.scatter(docket, over=timedelta(minutes=1), start=in_an_hour())

    keys = {e.key for e in first + second}
    assert len(keys) == 4
    assert (await docket.snapshot()).total_tasks == 4


async def test_struck_tasks_come_back_struck(docket: Docket) -> None:
    await docket.strike(notify)
    agenda = Agenda()
    agenda.add(process)(1)
    agenda.add(notify)("ada")

    executions = await agenda.scatter(docket, over=timedelta(minutes=1))

    assert [e.disposition for e in executions] == [Disposition.SCHEDULED, Disposition.STRUCK]
    assert (await docket.snapshot()).total_tasks == 1


# --- running -----------------------------------------------------------------------------------


async def test_scattered_tasks_run_in_order_with_their_arguments(
    docket: Docket, worker: Worker, url: str
) -> None:
    agenda = Agenda()
    for item in range(4):
        agenda.add(process)(item, label=f"#{item}")
    agenda.add(notify)("ada")
    start = datetime.now(UTC)

    executions = await agenda.scatter(docket, over=timedelta(milliseconds=400), start=start)
    await worker.run_until_finished()

    assert ran == [("process", (i, f"#{i}")) for i in range(4)] + [("notify", "ada")]
    for execution in executions:
        await execution.sync()
        assert execution.state == ExecutionState.COMPLETED
        assert execution.started_at is not None
        assert execution.started_at >= execution.when - timedelta(milliseconds=50)
    assert datetime.now(UTC) - start >= timedelta(milliseconds=400)
