"""The producer side of a docket: adding, replacing, cancelling, striking, looking around.

Everything here runs against the private redis-server of this test process (and, where it
is cheap, on ``memory://`` too through the ``url`` fixture). Tasks are closures registered
on the test's own docket, so the worker finds them by name without any import.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _helpers import in_background
from _redis_server import RedisServer
from redis.asyncio import Redis

from docket import (
    Disposition,
    Docket,
    Execution,
    ExecutionCancelled,
    ExecutionState,
    Progress,
    Worker,
)
from docket import tasks as builtin_tasks
from docket._text import as_text
from docket.execution import TaskCall
from docket.strikes import StrikeCondition

# A subset of the core tests that also runs on a Redis Cluster (see conftest's ``url``).
pytestmark = [pytest.mark.cluster_too, pytest.mark.partitioned_too]


if TYPE_CHECKING:
    # Only type checkers see this name, so the annotation below cannot be resolved at
    # run time: a common pattern that must not stop strikes from matching arguments.
    from decimal import Decimal as OnlyForTypeCheckers

FAST: dict[str, Any] = {
    "minimum_check_interval": timedelta(milliseconds=5),
    "scheduling_resolution": timedelta(milliseconds=5),
}
SAME_INSTANT = timedelta(milliseconds=1)


# --- helpers ------------------------------------------------------------------------------


def later(hours: float = 1) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


def soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        await asyncio.sleep(0.01)


async def state_of(docket: Docket, key: str) -> ExecutionState | None:
    execution = await docket.get_execution(key)
    return None if execution is None else execution.state


async def wait_for_state(
    docket: Docket, key: str, state: ExecutionState, timeout: float = 5.0
) -> None:
    async def reached() -> bool:
        return await state_of(docket, key) == state

    await eventually(reached, timeout, f"task {key!r} reaching {state.value}")


async def keys_matching(client: Redis, pattern: str) -> list[bytes]:
    return [key async for key in client.scan_iter(match=pattern)]


def worker_names(infos: list[Any]) -> set[str]:
    return {info.name for info in infos}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Recorder:
    """A task body that records the values it ran with."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def task(self) -> Callable[..., Awaitable[None]]:
        calls = self.calls

        async def record(value: Any = None) -> None:
            calls.append(value)

        return record


# --- add ------------------------------------------------------------------------------


async def test_add_due_now_is_queued(url: str, docket: Docket) -> None:
    record = Recorder().task()
    execution = await docket.add(record, key="now")(1)

    assert execution.disposition == Disposition.SCHEDULED
    assert await state_of(docket, "now") == ExecutionState.QUEUED


async def test_add_in_the_future_is_scheduled(url: str, docket: Docket) -> None:
    record = Recorder().task()
    when = later()
    execution = await docket.add(record, when=when, key="future")(1)

    assert execution.disposition == Disposition.SCHEDULED
    stored = await docket.get_execution("future")
    assert stored is not None
    assert stored.state == ExecutionState.SCHEDULED
    assert abs(stored.when - when) < SAME_INSTANT


async def test_add_defaults_the_key_to_a_fresh_uuid7(docket: Docket) -> None:
    record = Recorder().task()
    first = await docket.add(record)(1)
    second = await docket.add(record)(2)

    assert isinstance(first.key, str)
    assert uuid.UUID(first.key).version == 7
    assert uuid.UUID(second.key).version == 7
    assert first.key != second.key
    assert await state_of(docket, first.key) == ExecutionState.QUEUED
    assert await state_of(docket, second.key) == ExecutionState.QUEUED


@pytest.fixture
def local_zone_not_utc(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the process's local time zone UTC+05:30, so naive-as-local shows up."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    assert time.timezone != 0
    yield
    monkeypatch.undo()
    time.tzset()


async def test_add_treats_a_naive_when_as_utc(docket: Docket, local_zone_not_utc: Any) -> None:
    record = Recorder().task()
    naive = (datetime.now(UTC) + timedelta(hours=2)).replace(tzinfo=None, microsecond=0)

    await docket.add(record, when=naive, key="naive")(1)

    stored = await docket.get_execution("naive")
    assert stored is not None
    assert stored.state == ExecutionState.SCHEDULED
    assert abs(stored.when - naive.replace(tzinfo=UTC)) < SAME_INSTANT


async def test_add_same_key_while_scheduled_writes_nothing(url: str, docket: Docket) -> None:
    record = Recorder().task()
    original_when = later(1)
    await docket.add(record, when=original_when, key="dup")(1)

    again = await docket.add(record, when=later(5), key="dup")(2)

    assert again.disposition == Disposition.ALREADY_SCHEDULED
    stored = await docket.get_execution("dup")
    assert stored is not None
    assert stored.args == (1,)
    assert abs(stored.when - original_when) < SAME_INSTANT
    assert stored.state == ExecutionState.SCHEDULED


async def test_add_same_key_while_queued_writes_nothing(docket: Docket, worker: Worker) -> None:
    recorder = Recorder()
    record = recorder.task()
    await docket.add(record, key="dup")(1)

    again = await docket.add(record, when=later(), key="dup")(2)

    assert again.disposition == Disposition.ALREADY_SCHEDULED
    stored = await docket.get_execution("dup")
    assert stored is not None
    assert stored.args == (1,)
    assert stored.state == ExecutionState.QUEUED
    await worker.run_until_finished()
    assert recorder.calls == [1]


async def test_add_same_key_while_running_writes_nothing(docket: Docket, worker: Worker) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    calls: list[int] = []

    async def hold(value: int) -> None:
        calls.append(value)
        started.set()
        await release.wait()

    await docket.add(hold, key="dup")(1)
    async with in_background(worker, release) as run:
        await asyncio.wait_for(started.wait(), 5)
        again = await docket.add(hold, key="dup")(2)
        assert again.disposition == Disposition.ALREADY_SCHEDULED
        assert await state_of(docket, "dup") == ExecutionState.RUNNING
        release.set()
        await asyncio.wait_for(run, 5)

    assert calls == [1]
    assert await state_of(docket, "dup") == ExecutionState.COMPLETED


async def test_a_key_can_be_reused_after_its_task_finished(
    url: str, docket: Docket, worker: Worker
) -> None:
    recorder = Recorder()
    record = recorder.task()
    await docket.add(record, key="reused")(1)
    await worker.run_until_finished()

    again = await docket.add(record, key="reused")(2)
    assert again.disposition == Disposition.SCHEDULED
    await worker.run_until_finished()

    assert recorder.calls == [1, 2]


async def test_add_as_a_decorator_returns_a_handle_that_adds_now(
    docket: Docket, worker: Worker
) -> None:
    seen: list[str] = []

    @docket.add
    async def greet(name: str) -> None:
        seen.append(name)

    assert "greet" in docket.tasks
    execution = await greet("ada")
    assert isinstance(execution, Execution)
    assert execution.disposition == Disposition.SCHEDULED
    assert await state_of(docket, execution.key) == ExecutionState.QUEUED

    await worker.run_until_finished()
    assert seen == ["ada"]


async def test_task_handle_schedule_takes_a_key_and_a_time(docket: Docket) -> None:
    @docket.add
    async def greet(name: str) -> None:
        pass

    when = later()
    execution = await greet.schedule("bob", key="greeting", when=when)

    assert execution.key == "greeting"
    stored = await docket.get_execution("greeting")
    assert stored is not None
    assert stored.state == ExecutionState.SCHEDULED
    assert stored.args == ("bob",)
    assert abs(stored.when - when) < SAME_INSTANT


async def test_task_handle_fn_is_the_original_function(docket: Docket) -> None:
    seen: list[str] = []

    @docket.add
    async def greet(name: str) -> str:
        seen.append(name)
        return name.upper()

    assert greet.fn.__name__ == "greet"
    assert docket.tasks["greet"] is greet.fn
    # Calling the function itself runs it here and schedules nothing.
    assert await greet.fn("direct") == "DIRECT"
    assert seen == ["direct"]
    assert (await docket.snapshot()).total_tasks == 0


async def test_docket_add_accepts_a_task_handle(docket: Docket, worker: Worker) -> None:
    seen: list[str] = []

    @docket.add
    async def greet(name: str) -> None:
        seen.append(name)

    execution = await docket.add(greet, key="via-handle")("carl")

    assert execution.function_name == "greet"
    assert execution.disposition == Disposition.SCHEDULED
    await worker.run_until_finished()
    assert seen == ["carl"]


async def test_add_by_registered_name(docket: Docket, worker: Worker) -> None:
    recorder = Recorder()
    record = recorder.task()
    docket.register(record)

    execution = await docket.add("record")(7)

    assert execution.function_name == "record"
    await worker.run_until_finished()
    assert recorder.calls == [7]


async def test_add_of_an_unknown_name_raises_key_error(docket: Docket) -> None:
    with pytest.raises(KeyError, match="no_such_task_here"):
        await docket.add("no_such_task_here")()


# --- replace --------------------------------------------------------------------------


async def test_replace_changes_the_args_and_time_of_a_scheduled_task(
    docket: Docket, worker: Worker
) -> None:
    recorder = Recorder()
    record = recorder.task()
    await docket.add(record, when=later(), key="moving")(1)

    new_when = soon(0.05)
    replaced = await docket.replace(record, new_when, "moving")(2)

    assert replaced.disposition == Disposition.SCHEDULED
    stored = await docket.get_execution("moving")
    assert stored is not None
    assert stored.args == (2,)
    assert abs(stored.when - new_when) < SAME_INSTANT
    await worker.run_until_finished()
    assert recorder.calls == [2]


async def test_replace_a_queued_task(docket: Docket, worker: Worker) -> None:
    recorder = Recorder()
    record = recorder.task()
    await docket.add(record, key="queued")(1)

    replaced = await docket.replace(record, None, "queued")(2)

    assert replaced.disposition == Disposition.SCHEDULED
    await worker.run_until_finished()
    assert recorder.calls == [2]


async def test_replace_requires_a_key(docket: Docket) -> None:
    record = Recorder().task()
    with pytest.raises(ValueError, match="key"):
        await docket.replace(record, None, None)(1)  # type: ignore[arg-type]
    assert (await docket.snapshot()).total_tasks == 0


# --- cancel ---------------------------------------------------------------------------


async def test_cancel_a_scheduled_task(docket: Docket, worker: Worker) -> None:
    recorder = Recorder()
    record = recorder.task()
    await docket.add(record, when=soon(0.1), key="doomed")(1)

    await docket.cancel("doomed")

    assert await state_of(docket, "doomed") == ExecutionState.CANCELLED
    assert (await docket.snapshot()).total_tasks == 0
    await worker.run_until_finished()
    assert recorder.calls == []
    assert await state_of(docket, "doomed") == ExecutionState.CANCELLED


async def test_cancel_a_queued_task(docket: Docket, worker: Worker) -> None:
    recorder = Recorder()
    record = recorder.task()
    await docket.add(record, key="doomed")(1)

    await docket.cancel("doomed")

    assert await state_of(docket, "doomed") == ExecutionState.CANCELLED
    assert (await docket.snapshot()).total_tasks == 0
    await worker.run_until_finished()
    assert recorder.calls == []
    assert await state_of(docket, "doomed") == ExecutionState.CANCELLED


async def test_cancel_a_running_task_stops_it(docket: Docket, worker: Worker) -> None:
    started, stopped, never = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def long_haul() -> str:
        started.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            stopped.set()
            raise
        return "finished anyway"

    execution = await docket.add(long_haul, key="long")()
    async with in_background(worker, never) as run:
        await asyncio.wait_for(started.wait(), 5)
        await docket.cancel("long")
        await asyncio.wait_for(stopped.wait(), 5)
        with pytest.raises(ExecutionCancelled):
            await execution.get_result(timeout=timedelta(seconds=5))
        await asyncio.wait_for(run, 5)

    assert await state_of(docket, "long") == ExecutionState.CANCELLED


async def test_cancel_of_an_unknown_key_is_harmless(url: str, docket: Docket) -> None:
    await docket.cancel("never-added")

    assert await docket.get_execution("never-added") is None
    assert (await docket.snapshot()).total_tasks == 0


# --- get_execution --------------------------------------------------------------------


async def compute(a: int, b: str = "x", *, c: float = 0.0) -> None:
    pass


@pytest.mark.parametrize("delay", [None, 3600.0], ids=["queued", "scheduled"])
async def test_get_execution_is_rebuilt_from_the_stored_record(
    url: str, docket: Docket, delay: float | None
) -> None:
    when = datetime.now(UTC) if delay is None else soon(delay)
    await docket.add(compute, when=when, key="rebuilt")(1, "two", c=3.5)

    stored = await docket.get_execution("rebuilt")

    assert stored is not None
    assert stored.key == "rebuilt"
    assert stored.function_name == "compute"
    assert stored.args == (1, "two")
    assert stored.kwargs == {"c": 3.5}
    assert abs(stored.when - when) < SAME_INSTANT
    assert stored.attempt == 1
    expected = ExecutionState.QUEUED if delay is None else ExecutionState.SCHEDULED
    assert stored.state == expected


async def test_get_execution_works_for_a_task_this_process_does_not_know(
    docket: Docket, redis_url: str
) -> None:
    when = later()
    await docket.add(compute, when=when, key="foreign")(5, "six", c=7.0)

    async with Docket(name=docket.name, url=redis_url) as other:
        assert "compute" not in other.tasks
        stored = await other.get_execution("foreign")

    assert stored is not None
    assert stored.function_name == "compute"
    assert stored.args == (5, "six")
    assert stored.kwargs == {"c": 7.0}
    assert abs(stored.when - when) < SAME_INSTANT
    assert stored.state == ExecutionState.SCHEDULED


async def test_get_execution_of_an_unknown_key_is_none(url: str, docket: Docket) -> None:
    assert await docket.get_execution("no-such-key") is None


# --- registry -------------------------------------------------------------------------


async def test_register_under_other_names(docket: Docket, worker: Worker) -> None:
    recorder = Recorder()
    original = recorder.task()

    docket.register(original, names=["alias_one", "alias_two"])

    assert docket.tasks["alias_one"] is original
    assert docket.tasks["alias_two"] is original
    execution = await docket.add("alias_two")(5)
    await worker.run_until_finished()
    assert recorder.calls == [5]
    assert execution.function_name == "alias_two"


async def test_register_collection_imports_module_and_member(
    docket: Docket, worker: Worker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module_name = f"collection_{uuid.uuid4().hex}"
    (tmp_path / f"{module_name}.py").write_text(
        textwrap.dedent(
            """
            async def plus_one(x: int) -> int:
                return x + 1

            async def twice(text: str) -> str:
                return text * 2

            my_tasks = [plus_one, twice]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        docket.register_collection(f"{module_name}:my_tasks")

        assert docket.tasks["plus_one"].__module__ == module_name
        assert docket.tasks["twice"].__module__ == module_name
        execution = await docket.add("plus_one")(41)
        await worker.run_until_finished()
        assert await execution.get_result(timeout=timedelta(seconds=5)) == 42
    finally:
        sys.modules.pop(module_name, None)


async def test_tasks_start_with_the_built_ins(docket: Docket) -> None:
    assert docket.tasks["trace"] is builtin_tasks.trace
    assert docket.tasks["fail"] is builtin_tasks.fail
    assert docket.tasks["sleep"] is builtin_tasks.sleep


async def test_built_in_tasks_run_by_name(docket: Docket, worker: Worker) -> None:
    traced = await docket.add("trace")("hello")
    slept = await docket.add("sleep")(0.01)
    failed = await docket.add("fail")("on purpose 31")

    await worker.run_until_finished()

    assert await state_of(docket, traced.key) == ExecutionState.COMPLETED
    assert await state_of(docket, slept.key) == ExecutionState.COMPLETED
    with pytest.raises(Exception, match="on purpose 31"):
        await failed.get_result(timeout=timedelta(seconds=5))


@pytest.mark.parametrize("path", ["no_colon_here", "json:", ":member", "json:no_such_member_here"])
async def test_register_collection_with_a_bad_path_raises_value_error(
    docket: Docket, path: str
) -> None:
    with pytest.raises(ValueError):
        docket.register_collection(path)


# --- strikes --------------------------------------------------------------------------


async def pay(amount: Any) -> None:
    pass


async def strike_settled(
    docket: Docket,
    function: Any = None,
    parameter: str | None = None,
    operator: str = "==",
    value: Any = None,
) -> None:
    """Strike, then wait until the docket's own strike list holds it. Whether a strike
    counts at once on the docket that made it is the business of the two whole-task
    tests; the tests that use this check what a strike matches."""
    await docket.strike(function, parameter, operator, value)
    name = function if function is None or isinstance(function, str) else function.__name__
    condition = StrikeCondition(name, parameter, operator, value)  # type: ignore[arg-type]

    async def held() -> bool:
        return condition in docket.strike_list

    await eventually(held, timeout=1.0, what=f"strike {condition} in the docket's list")


async def refund(amount: Any) -> None:
    pass


async def test_a_strike_counts_at_once_on_the_docket_that_made_it(docket: Docket) -> None:
    # No waiting: the docket that struck must not schedule the very next add (the
    # released docket updates its own strike list as part of strike()).
    await docket.strike(pay)
    execution = await docket.add(pay, key="struck")(1)

    assert execution.disposition == Disposition.STRUCK
    assert await docket.get_execution("struck") is None

    await docket.restore(pay)
    execution = await docket.add(pay, key="restored")(1)

    assert execution.disposition == Disposition.SCHEDULED


async def test_strike_a_whole_task(url: str, docket: Docket) -> None:
    await strike_settled(docket, pay)

    execution = await docket.add(pay, key="struck")(1)

    assert execution.disposition == Disposition.STRUCK
    assert await docket.get_execution("struck") is None
    assert (await docket.snapshot()).total_tasks == 0
    other = await docket.add(refund, key="other")(1)
    assert other.disposition == Disposition.SCHEDULED


async def test_strike_a_whole_task_by_name(docket: Docket) -> None:
    await strike_settled(docket, "pay")

    execution = await docket.add(pay, key="struck")(1)

    assert execution.disposition == Disposition.STRUCK
    assert await docket.get_execution("struck") is None


@pytest.mark.parametrize(
    ("operator", "value", "struck", "allowed"),
    [
        ("==", 5, 5, 6),
        ("!=", 5, 6, 5),
        (">", 5, 6, 5),
        (">=", 5, 5, 4),
        ("<", 5, 4, 5),
        ("<=", 5, 5, 6),
        ("between", (3, 5), 4, 6),
    ],
)
async def test_strike_by_parameter_value(
    url: str, docket: Docket, operator: str, value: Any, struck: Any, allowed: Any
) -> None:
    await strike_settled(docket, None, "amount", operator, value)

    hit = await docket.add(pay, key="hit")(struck)
    miss = await docket.add(pay, key="miss")(allowed)
    by_keyword = await docket.add(refund, key="kw")(amount=struck)

    assert hit.disposition == Disposition.STRUCK
    assert await docket.get_execution("hit") is None
    assert miss.disposition == Disposition.SCHEDULED
    assert await state_of(docket, "miss") == ExecutionState.QUEUED
    assert by_keyword.disposition == Disposition.STRUCK


async def charge(amount: int, memo: OnlyForTypeCheckers | None = None) -> None:
    pass


async def test_strike_by_parameter_matches_positional_arguments_of_any_task(
    docket: Docket,
) -> None:
    await strike_settled(docket, None, "amount", "==", 5)

    assert (await docket.add(charge)(5)).disposition == Disposition.STRUCK
    assert (await docket.add(charge)(amount=5)).disposition == Disposition.STRUCK
    assert (await docket.add(charge)(6)).disposition == Disposition.SCHEDULED


async def test_strike_a_task_and_parameter_pair(docket: Docket) -> None:
    await strike_settled(docket, pay, "amount", "==", 1)

    assert (await docket.add(pay)(1)).disposition == Disposition.STRUCK
    assert (await docket.add(pay)(2)).disposition == Disposition.SCHEDULED
    assert (await docket.add(refund)(1)).disposition == Disposition.SCHEDULED


async def test_restore_lifts_a_strike(url: str, docket: Docket) -> None:
    await strike_settled(docket, pay, "amount", ">", 10)
    await strike_settled(docket, refund)
    assert (await docket.add(pay)(11)).disposition == Disposition.STRUCK
    assert (await docket.add(refund)(1)).disposition == Disposition.STRUCK

    await docket.restore(pay, "amount", ">", 10)
    await docket.restore(refund)

    assert (await docket.add(pay)(11)).disposition == Disposition.SCHEDULED
    assert (await docket.add(refund)(1)).disposition == Disposition.SCHEDULED


async def test_strikes_reach_another_docket_instance_within_a_second(
    docket: Docket, redis_url: str
) -> None:
    async with Docket(name=docket.name, url=redis_url) as other:
        await other.wait_for_strikes_loaded()

        await docket.strike(pay, "amount", "==", 7)
        struck_at = time.monotonic()

        async def struck_there() -> bool:
            execution = await other.add(pay, key="probe-strike")(7)
            return execution.disposition == Disposition.STRUCK

        await eventually(struck_there, timeout=1.0, what="the strike reaching the other docket")
        assert time.monotonic() - struck_at <= 1.0

        await docket.restore(pay, "amount", "==", 7)

        async def restored_there() -> bool:
            execution = await other.add(pay, key="probe-restore")(7)
            return execution.disposition != Disposition.STRUCK

        await eventually(restored_there, timeout=1.0, what="the restore reaching the other docket")


async def test_queued_tasks_that_become_struck_are_skipped_by_the_worker(
    url: str, docket: Docket, worker: Worker
) -> None:
    recorder = Recorder()
    record = recorder.task()
    await docket.add(record, key="one")(1)
    await docket.add(record, key="two")(2)
    assert await state_of(docket, "one") == ExecutionState.QUEUED

    await strike_settled(docket, None, "value", "==", 1)
    await worker.run_until_finished()

    assert recorder.calls == [2]
    assert await state_of(docket, "one") != ExecutionState.COMPLETED


# --- clear ----------------------------------------------------------------------------


async def test_clear_cancels_what_has_not_started(docket: Docket) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    ran: list[Any] = []

    async def hold() -> None:
        started.set()
        await release.wait()
        ran.append("hold")

    async def record(value: int) -> None:
        ran.append(value)

    async with Worker(docket, concurrency=1, **FAST) as worker:
        running = await docket.add(hold)()
        async with in_background(worker, release) as run:
            await asyncio.wait_for(started.wait(), 5)
            queued = await docket.add(record)(1)
            scheduled = await docket.add(record, when=later())(2)
            assert await state_of(docket, queued.key) == ExecutionState.QUEUED

            count = await docket.clear()

            assert count == 2
            assert await state_of(docket, queued.key) == ExecutionState.CANCELLED
            assert await state_of(docket, scheduled.key) == ExecutionState.CANCELLED
            assert await state_of(docket, running.key) == ExecutionState.RUNNING
            release.set()
            await asyncio.wait_for(run, 5)

    assert ran == ["hold"]
    assert await state_of(docket, running.key) == ExecutionState.COMPLETED


async def test_clear_on_an_empty_docket_returns_zero(url: str, docket: Docket) -> None:
    assert await docket.clear() == 0


# --- snapshot -------------------------------------------------------------------------


@asynccontextmanager
async def one_running_one_queued_one_scheduled(
    docket: Docket,
) -> AsyncIterator[tuple[Worker, Execution, Execution, Execution]]:
    started, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        started.set()
        await release.wait()

    record = Recorder().task()
    async with Worker(docket, concurrency=1, **FAST) as worker:
        running = await docket.add(hold)()
        async with in_background(worker, release) as run:
            await asyncio.wait_for(started.wait(), 5)
            queued = await docket.add(record)(1)
            scheduled = await docket.add(record, when=later())(2)
            yield worker, running, queued, scheduled
            release.set()
            await docket.cancel(scheduled.key)
            await asyncio.wait_for(run, 5)


async def test_snapshot_shows_future_running_and_workers(docket: Docket) -> None:
    async with one_running_one_queued_one_scheduled(docket) as (worker, running, queued, scheduled):
        await eventually(lambda: _listed(docket, worker.name), what="the worker's first heartbeat")
        snapshot = await docket.snapshot()

    future = {execution.key: execution for execution in snapshot.future}
    assert set(future) == {queued.key, scheduled.key}
    assert future[queued.key].state == ExecutionState.QUEUED
    assert future[scheduled.key].state == ExecutionState.SCHEDULED
    assert [execution.key for execution in snapshot.running] == [running.key]
    assert snapshot.running[0].worker == worker.name
    started_at = snapshot.running[0].started_at
    assert started_at is not None
    assert started_at <= snapshot.taken
    assert snapshot.total_tasks == 3
    assert worker.name in worker_names(snapshot.workers)


async def test_snapshot_running_items_carry_started(docket: Docket) -> None:
    # SPEC section 1: "`running` items carry `.worker` and `.started`" (the released
    # docket's RunningExecution.started).
    async with one_running_one_queued_one_scheduled(docket) as (worker, running, _, _):
        snapshot = await docket.snapshot()

    [item] = snapshot.running
    assert item.key == running.key
    assert item.worker == worker.name
    started = getattr(item, "started", None)
    assert isinstance(started, datetime)
    assert started <= snapshot.taken


async def test_snapshot_lists_every_task_past_one_pipelined_batch(docket: Docket, url: str) -> None:
    from docket.docket import SNAPSHOT_BATCH

    async def numbered(n: int) -> None: ...

    docket.register(numbered)
    count = SNAPSHOT_BATCH + 7
    scheduled = await docket.add_many(
        docket.call(numbered, when=later(), key=f"s-{n}")(n) for n in range(count)
    )
    queued = await docket.add_many(docket.call(numbered, key=f"q-{n}")(n) for n in range(count))

    snapshot = await docket.snapshot()

    listed = {execution.key: execution for execution in snapshot.future}
    assert set(listed) == {e.key for e in scheduled} | {e.key for e in queued}
    for n in (0, SNAPSHOT_BATCH, count - 1):  # either side of each batch's edge
        assert listed[f"s-{n}"].state == ExecutionState.SCHEDULED
        assert listed[f"s-{n}"].args == (n,)
        assert listed[f"q-{n}"].state == ExecutionState.QUEUED
        assert listed[f"q-{n}"].args == (n,)
    assert snapshot.total_tasks == 2 * count


# --- workers --------------------------------------------------------------------------


async def _listed(docket: Docket, name: str) -> bool:
    return name in worker_names(await docket.workers())


async def test_a_live_worker_is_listed_with_its_tasks(docket: Docket) -> None:
    async def distinctive_job() -> None:
        pass

    docket.register(distinctive_job)
    name = f"worker-{uuid.uuid4().hex[:8]}"
    async with Worker(docket, name=name, **FAST):
        await eventually(lambda: _listed(docket, name), what="the worker's heartbeat")
        [info] = [w for w in await docket.workers() if w.name == name]
        for_task = await docket.task_workers("distinctive_job")
        for_nothing = await docket.task_workers("no_worker_runs_this")

    assert {"distinctive_job", "trace", "fail", "sleep"} <= info.tasks
    assert abs(info.last_seen - datetime.now(UTC)) < timedelta(seconds=10)
    assert worker_names(for_task) == {name}
    assert for_nothing == []


async def test_a_worker_that_exited_is_not_listed(docket: Docket) -> None:
    name = f"worker-{uuid.uuid4().hex[:8]}"
    async with Worker(docket, name=name, **FAST):
        await eventually(lambda: _listed(docket, name), what="the worker's heartbeat")

    assert name not in worker_names(await docket.workers())
    assert name not in worker_names(await docket.task_workers("trace"))


WORKER_SCRIPT = """
import asyncio, sys
from datetime import timedelta
from docket import Docket, Worker

async def main():
    async with Docket(name=sys.argv[1], url=sys.argv[2],
                      heartbeat_interval=timedelta(milliseconds=100),
                      missed_heartbeats=10) as docket:
        async with Worker(docket, name=sys.argv[3]):
            print("ready", flush=True)
            await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_a_worker_with_a_stale_heartbeat_is_not_listed(
    docket_name: str, redis_url: str
) -> None:
    name = f"doomed-{uuid.uuid4().hex[:8]}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER_SCRIPT,
        docket_name,
        redis_url,
        name,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 20) == b"ready\n"
        async with Docket(
            name=docket_name,
            url=redis_url,
            heartbeat_interval=timedelta(milliseconds=100),
            missed_heartbeats=10,
        ) as docket:
            await eventually(lambda: _listed(docket, name), what="the worker's heartbeat")

            process.kill()  # no goodbye: only its heartbeat going stale can unlist it
            await process.wait()
            assert await _listed(docket, name)

            await eventually(
                lambda: _not(_listed(docket, name)),
                timeout=5.0,
                what="the dead worker dropping out",
            )
            assert await docket.task_workers("trace") == []
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


# --- call, add_many, replace_many -----------------------------------------------------


async def test_call_touches_nothing(url: str, docket: Docket) -> None:
    record = Recorder().task()

    call = docket.call(record, key="described")(1)

    assert call.key == "described"
    assert await docket.get_execution("described") is None
    assert (await docket.snapshot()).total_tasks == 0


async def test_add_many_gives_each_call_its_disposition(url: str, docket: Docket) -> None:
    record = Recorder().task()
    await docket.add(record, when=later(), key="taken")(0)
    await strike_settled(docket, record, "value", "==", 99)

    results = await docket.add_many(
        [
            docket.call(record, key="first")(1),
            docket.call(record, key="first")(2),
            docket.call(record, key="taken")(3),
            docket.call(record, key="struck")(99),
            docket.call(record, when=later(), key="future")(5),
        ]
    )

    assert [r.key for r in results] == ["first", "first", "taken", "struck", "future"]
    assert [r.disposition for r in results] == [
        Disposition.SCHEDULED,
        Disposition.ALREADY_SCHEDULED,
        Disposition.ALREADY_SCHEDULED,
        Disposition.STRUCK,
        Disposition.SCHEDULED,
    ]
    first = await docket.get_execution("first")
    assert first is not None
    assert first.args == (1,)
    assert first.state == ExecutionState.QUEUED
    taken = await docket.get_execution("taken")
    assert taken is not None
    assert taken.args == (0,)
    assert await docket.get_execution("struck") is None
    assert await state_of(docket, "future") == ExecutionState.SCHEDULED


async def test_replace_many_replaces_each_call(docket: Docket, worker: Worker) -> None:
    recorder = Recorder()
    record = recorder.task()
    await docket.add(record, when=later(), key="scheduled")(1)
    await docket.add(record, key="queued")(2)

    results = await docket.replace_many(
        [
            docket.call(record, when=soon(0.05), key="scheduled")(10),
            docket.call(record, key="queued")(20),
            docket.call(record, key="fresh")(30),
        ]
    )

    assert [r.disposition for r in results] == [Disposition.SCHEDULED] * 3
    for key, value in [("scheduled", 10), ("queued", 20), ("fresh", 30)]:
        stored = await docket.get_execution(key)
        assert stored is not None
        assert stored.args == (value,)
    await worker.run_until_finished()
    assert sorted(recorder.calls) == [10, 20, 30]


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 1000])
async def test_add_many_in_chunks(docket: Docket, chunk_size: int | None) -> None:
    record = Recorder().task()
    keys = [f"task-{i}" for i in range(5)]

    results = await docket.add_many(
        [docket.call(record, key=key)(i) for i, key in enumerate(keys)], chunk_size=chunk_size
    )

    assert [r.key for r in results] == keys
    assert [r.disposition for r in results] == [Disposition.SCHEDULED] * 5
    for i, key in enumerate(keys):
        stored = await docket.get_execution(key)
        assert stored is not None
        assert stored.args == (i,)


@pytest.mark.parametrize("chunk_size", [0, -1])
async def test_add_many_with_a_chunk_size_below_one_raises(docket: Docket, chunk_size: int) -> None:
    record = Recorder().task()
    with pytest.raises(ValueError):
        await docket.add_many([docket.call(record, key="never")(1)], chunk_size=chunk_size)
    with pytest.raises(ValueError):
        await docket.replace_many([docket.call(record, key="never")(1)], chunk_size=chunk_size)
    assert await docket.get_execution("never") is None


async def test_an_add_sent_twice_after_a_dropped_reply_reports_what_it_did(
    url: str, docket: Docket, worker: Worker
) -> None:
    """The lean connection sends a call again when its connection drops before the reply.
    An add with no key of its own gets a generated one, which only that call can have
    written: the second attempt reports the first one's scheduling, and never schedules
    the task again, even once it has run."""
    recorder = Recorder()
    record = recorder.task()
    docket.register(record)
    execution, call = docket.engine.prepare("add", TaskCall(record, None, None, (1,), {}))
    assert call is not None

    first = await docket.engine.scripts.send(call)
    again = await docket.engine.scripts.send(call)
    assert [as_text(part) for part in again] == [as_text(part) for part in first]
    assert as_text(again[0]) == "scheduled"

    await worker.run_until_finished()
    assert recorder.calls == [1]
    late = await docket.engine.scripts.send(call)
    assert as_text(late[0]) == "scheduled"
    await worker.run_until_finished()
    assert recorder.calls == [1]
    assert await state_of(docket, execution.key) == ExecutionState.COMPLETED


async def test_an_add_with_its_own_key_still_finds_the_key_taken(docket: Docket) -> None:
    record = Recorder().task()
    _, call = docket.engine.prepare("add", TaskCall(record, None, "mine", (1,), {}))
    assert call is not None
    await docket.engine.scripts.send(call)

    again = await docket.engine.scripts.send(call)

    assert as_text(again[0]) == "already_scheduled"


async def test_a_bad_call_in_a_later_chunk_leaves_earlier_chunks_scheduled(docket: Docket) -> None:
    """Chunks go to Redis while later ones are still being prepared; a call that cannot
    be prepared raises, after the chunks before it were scheduled, and nothing after it."""
    record = Recorder().task()
    calls = [
        docket.call(record, key="one")(1),
        docket.call(record, key="two")(2),
        docket.call(record, key="three")(3),
        docket.call(record)(4),  # replace_many needs a key
        docket.call(record, key="five")(5),
    ]

    with pytest.raises(ValueError, match="needs a key"):
        await docket.replace_many(calls, chunk_size=1)

    for key in ("one", "two", "three"):
        assert await state_of(docket, key) == ExecutionState.QUEUED
    assert await docket.get_execution("five") is None


async def test_add_many_over_many_chunks_keeps_call_order(docket: Docket) -> None:
    record = Recorder().task()
    keys = [f"ordered-{i}" for i in range(250)]

    results = await docket.add_many(
        [docket.call(record, key=key)(i) for i, key in enumerate(keys)], chunk_size=7
    )

    assert [r.key for r in results] == keys
    assert [r.disposition for r in results] == [Disposition.SCHEDULED] * len(keys)
    again = await docket.add_many([docket.call(record, key=key)(0) for key in keys], chunk_size=7)
    assert [r.disposition for r in again] == [Disposition.ALREADY_SCHEDULED] * len(keys)


async def test_add_many_reports_a_per_call_redis_error(docket: Docket, redis_client: Redis) -> None:
    record = Recorder().task()
    broken = f"broken-{uuid.uuid4().hex}"
    await docket.add(record, when=later(), key=broken)(0)
    # Turn every key holding this task's state into a plain string, so the next
    # schedule of this one key meets a wrong-type value inside Redis.
    stored_under = await keys_matching(redis_client, f"*{broken}*")
    assert stored_under
    for redis_key in stored_under:
        await redis_client.set(redis_key, "not what docket wrote")

    results = await docket.add_many(
        [
            docket.call(record, key="before")(1),
            docket.call(record, key=broken)(2),
            docket.call(record, key="after")(3),
        ]
    )

    assert [r.disposition for r in results] == [
        Disposition.SCHEDULED,
        Disposition.FAILED,
        Disposition.SCHEDULED,
    ]
    assert isinstance(results[1].schedule_exception, Exception)
    assert results[0].schedule_exception is None
    assert await state_of(docket, "before") == ExecutionState.QUEUED
    assert await state_of(docket, "after") == ExecutionState.QUEUED


# --- execution_ttl --------------------------------------------------------------------


async def answer(base: int) -> int:
    return base * 2


async def test_records_and_results_expire_after_the_ttl(
    docket_name: str, redis_url: str, redis_client: Redis
) -> None:
    ttl = timedelta(seconds=30)
    async with Docket(name=docket_name, url=redis_url, execution_ttl=ttl) as docket:
        execution = await docket.add(answer)(21)
        async with Worker(docket, **FAST) as worker:
            await worker.run_until_finished()
        await execution.sync()
        assert await execution.get_result(timeout=timedelta(seconds=5)) == 42

    assert execution.result_key == f"{execution.key}:{execution.generation}"
    kept = set(await keys_matching(redis_client, f"*{execution.key}*"))
    assert docket.keys.result(execution.key, execution.generation).encode() in kept
    assert len(kept) >= 2  # the record and the result
    for redis_key in kept:
        pttl = await redis_client.pttl(redis_key)
        assert 0 < pttl <= ttl.total_seconds() * 1000, (redis_key, pttl)


async def test_records_and_results_are_gone_after_the_ttl(
    docket_name: str, redis_url: str, redis_client: Redis
) -> None:
    ttl = timedelta(seconds=1)
    async with Docket(name=docket_name, url=redis_url, execution_ttl=ttl) as docket:
        execution = await docket.add(answer)(21)
        async with Worker(docket, **FAST) as worker:
            await worker.run_until_finished()
        finished = time.monotonic()
        assert await state_of(docket, execution.key) == ExecutionState.COMPLETED

        await asyncio.sleep(ttl.total_seconds() - (time.monotonic() - finished) + 0.2)

        assert await docket.get_execution(execution.key) is None
        assert await keys_matching(redis_client, f"*{execution.key}*") == []


async def test_execution_ttl_zero_keeps_no_record_and_no_result(
    docket_name: str, redis_url: str, redis_client: Redis
) -> None:
    async with Docket(name=docket_name, url=redis_url, execution_ttl=timedelta(0)) as docket:
        execution = await docket.add(answer)(21)
        async with Worker(docket, **FAST) as worker:
            await worker.run_until_finished()

        assert await keys_matching(redis_client, f"*{execution.key}*") == []
        assert await docket.get_execution(execution.key) is None
        # Nothing will report back: as released, a wait with a limit runs out; one
        # without a limit returns None rather than waiting forever.
        with pytest.raises(TimeoutError):
            await execution.get_result(timeout=timedelta(seconds=0.2))
        assert await execution.get_result() is None


# --- URLs -----------------------------------------------------------------------------


async def test_a_unix_socket_url_reaches_the_same_server(
    docket_name: str, redis_server: RedisServer, redis_url: str
) -> None:
    recorder = Recorder()
    record = recorder.task()
    async with Docket(name=docket_name, url=redis_server.unix_url) as over_unix:
        await over_unix.add(record, key="via-unix")(1)
        async with Docket(name=docket_name, url=redis_url) as over_tcp:
            assert await state_of(over_tcp, "via-unix") == ExecutionState.QUEUED
        async with Worker(over_unix, **FAST) as worker:
            await worker.run_until_finished()

    assert recorder.calls == [1]


async def test_dockets_on_the_same_memory_url_share_data(docket_name: str, memory_url: str) -> None:
    recorder = Recorder()
    record = recorder.task()
    async with (
        Docket(name=docket_name, url=memory_url) as producer,
        Docket(name=docket_name, url=memory_url) as consumer,
    ):
        await producer.add(record, key="shared")(1)
        stored = await consumer.get_execution("shared")
        assert stored is not None
        assert stored.args == (1,)
        consumer.register(record)
        async with Worker(consumer, **FAST) as worker:
            await worker.run_until_finished()

    assert recorder.calls == [1]


async def test_memory_urls_with_different_ids_are_isolated(docket_name: str) -> None:
    record = Recorder().task()
    async with (
        Docket(name=docket_name, url=f"memory://{uuid.uuid4()}") as one,
        Docket(name=docket_name, url=f"memory://{uuid.uuid4()}") as two,
    ):
        await one.add(record, key="mine")(1)
        assert await two.get_execution("mine") is None
        assert (await two.snapshot()).total_tasks == 0
        assert (await one.snapshot()).total_tasks == 1


async def test_an_unsupported_url_scheme_raises_value_error(docket_name: str) -> None:
    with pytest.raises(ValueError, match="mongodb"):
        async with Docket(name=docket_name, url="mongodb://localhost:27017/0"):
            pass


async def test_an_unreachable_redis_raises_connection_error_without_the_password(
    docket_name: str,
) -> None:
    url = f"redis://someone:hunter2-secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(ConnectionError) as caught:
        async with Docket(name=docket_name, url=url):
            pass

    assert "hunter2-secret" not in str(caught.value)
    assert "hunter2-secret" not in repr(caught.value)


# --- names ----------------------------------------------------------------------------


async def _exercise(docket: Docket) -> Worker:
    """Touch every kind of state a docket keeps: tasks, results, failures, progress,
    schedules, replacements, cancellations, strikes and a worker's heartbeat."""

    async def fine(x: int) -> int:
        return x

    async def broken() -> None:
        raise RuntimeError("broken on purpose")

    async def reporting(progress: Any = Progress()) -> None:
        await progress.set_total(2)
        await progress.increment()
        await progress.set_message("half")

    await docket.add(fine)(1)
    await docket.add(broken)()
    await docket.add(reporting)()
    await docket.add(fine, key="replaced")(2)
    await docket.replace(fine, None, "replaced")(3)
    worker = Worker(docket, **FAST)
    await worker.__aenter__()
    await worker.run_until_finished()
    await docket.add(fine, when=later(), key="future")(4)
    await docket.add(fine, when=later(), key="cancelled")(5)
    await docket.cancel("cancelled")
    await docket.strike(fine, "x", "==", 99)
    await docket.strike("broken")
    await eventually(lambda: _listed(docket, worker.name), what="the worker's heartbeat")
    return worker


async def test_every_key_a_docket_writes_starts_with_its_hash_tagged_name(
    docket_name: str, private_redis: RedisServer
) -> None:
    async with Docket(name=docket_name, url=private_redis.url) as docket:
        worker = await _exercise(docket)
        try:
            client = Redis.from_url(private_redis.url)
            try:
                everything = await keys_matching(client, "*")
            finally:
                await client.aclose()
        finally:
            await worker.__aexit__(None, None, None)

    assert docket.prefix == "{" + docket_name + "}"
    assert len(everything) >= 5
    strays = [key for key in everything if not key.startswith(b"{" + docket_name.encode() + b"}")]
    assert strays == []


async def test_every_channel_a_docket_uses_starts_with_its_hash_tagged_name(
    docket_name: str, private_redis: RedisServer
) -> None:
    async with Docket(name=docket_name, url=private_redis.url) as docket:
        worker = await _exercise(docket)
        execution = await docket.add(answer, when=later())(1)
        events = execution.subscribe()
        try:
            await anext(events)
            client = Redis.from_url(private_redis.url)
            try:
                channels = await client.pubsub_channels()
            finally:
                await client.aclose()
        finally:
            await events.aclose()
            await worker.__aexit__(None, None, None)

    assert len(channels) >= 2
    prefix = b"{" + docket_name.encode() + b"}"
    assert [channel for channel in channels if not channel.startswith(prefix)] == []


@pytest.mark.parametrize("name", ["a b", "x*", "{x}", "a:b", "", "x?", "a[b]"])
def test_invalid_docket_names_raise_value_error(name: str) -> None:
    with pytest.raises(ValueError):
        Docket(name=name, url="memory://names")
