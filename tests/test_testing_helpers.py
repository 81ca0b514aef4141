"""docket.testing: assertions about what is scheduled, and running what is pending."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from docket import (
    CurrentDocket,
    CurrentExecution,
    Depends,
    Docket,
    Execution,
    ExecutionState,
    Perpetual,
    Retry,
    Worker,
)
from docket.testing import (
    assert_no_tasks,
    assert_task_count,
    assert_task_not_scheduled,
    assert_task_scheduled,
    run_pending,
)

log: list[str] = []


async def send_email(address: str, subject: str = "", *, urgent: bool = False) -> None:
    log.append(f"email {address}")


async def charge(customer: int, amount: int) -> str:
    log.append(f"charge {customer}")
    return f"charged {amount}"


async def explode(reason: str) -> None:
    raise RuntimeError(reason)


@pytest.fixture(autouse=True)
def _reset_log() -> None:
    log.clear()


def later(minutes: int = 10) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


# --- assert_task_scheduled ------------------------------------------------------------------------


async def test_scheduled_matches_by_function_name_or_handle(docket: Docket, url: str) -> None:
    await docket.add(send_email)("ada@example.com")

    await assert_task_scheduled(docket, send_email)
    await assert_task_scheduled(docket, "send_email")
    await assert_task_scheduled(docket, docket.add(send_email))


async def test_scheduled_sees_future_and_queued_tasks(docket: Docket) -> None:
    await docket.add(send_email, when=later())("future@example.com")
    await docket.add(charge)(1, 100)  # due now: queued

    await assert_task_scheduled(docket, send_email, args=("future@example.com",))
    await assert_task_scheduled(docket, charge, args=(1, 100))


async def test_scheduled_matches_args_exactly_kwargs_as_a_subset_and_key(
    docket: Docket,
) -> None:
    await docket.add(send_email, key="welcome")("ada@example.com", "hi", urgent=True)

    await assert_task_scheduled(docket, send_email, args=("ada@example.com", "hi"))
    await assert_task_scheduled(docket, send_email, kwargs={"urgent": True})
    await assert_task_scheduled(docket, send_email, kwargs={})
    await assert_task_scheduled(docket, send_email, key="welcome")
    await assert_task_scheduled(
        docket, send_email, args=("ada@example.com", "hi"), kwargs={"urgent": True}, key="welcome"
    )

    for mismatch in [
        {"args": ("ada@example.com",)},  # a prefix is not a match
        {"args": ("bob@example.com", "hi")},
        {"kwargs": {"urgent": False}},
        {"kwargs": {"urgent": True, "cc": "x"}},
        {"key": "other"},
    ]:
        with pytest.raises(AssertionError):
            await assert_task_scheduled(docket, send_email, **mismatch)  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        await assert_task_scheduled(docket, charge)


async def test_a_failed_match_lists_what_is_scheduled(docket: Docket) -> None:
    await docket.add(send_email, key="welcome")("ada@example.com")
    await docket.add(charge, when=later(), key="invoice-7")(7, 250)

    with pytest.raises(AssertionError) as raised:
        await assert_task_scheduled(docket, send_email, args=("bob@example.com",))

    message = str(raised.value)
    assert "send_email" in message
    assert "bob@example.com" in message  # what was looked for
    assert "ada@example.com" in message and "'welcome'" in message  # what is there
    assert "charge" in message and "(7, 250)" in message and "'invoice-7'" in message


async def test_a_failed_match_on_an_empty_docket_says_so(docket: Docket) -> None:
    with pytest.raises(AssertionError, match="no tasks scheduled on docket"):
        await assert_task_scheduled(docket, send_email)


async def test_finished_and_cancelled_tasks_are_not_scheduled(
    docket: Docket, worker: Worker, url: str
) -> None:
    await docket.add(send_email)("ada@example.com")
    await docket.add(charge, when=later(), key="doomed")(1, 1)
    await docket.cancel("doomed")
    await worker.run_until_finished()

    assert log == ["email ada@example.com"]
    with pytest.raises(AssertionError):
        await assert_task_scheduled(docket, send_email)
    with pytest.raises(AssertionError):
        await assert_task_scheduled(docket, charge)
    await assert_no_tasks(docket)


async def test_running_tasks_are_not_counted(docket: Docket, worker: Worker) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> None:
        started.set()
        await release.wait()

    await docket.add(slow)()
    runner = asyncio.create_task(worker.run_until_finished())
    try:
        await asyncio.wait_for(started.wait(), 10)
        await assert_no_tasks(docket)
        await assert_task_not_scheduled(docket, slow)
        await assert_task_count(docket, slow, count=0)
    finally:
        release.set()
        await runner


# --- assert_task_not_scheduled ----------------------------------------------------------------


async def test_not_scheduled_passes_when_nothing_matches(docket: Docket) -> None:
    await assert_task_not_scheduled(docket, send_email)
    await docket.add(send_email, key="welcome")("ada@example.com", urgent=True)

    await assert_task_not_scheduled(docket, charge)
    await assert_task_not_scheduled(docket, send_email, args=("bob@example.com",))
    await assert_task_not_scheduled(docket, send_email, kwargs={"urgent": False})
    await assert_task_not_scheduled(docket, send_email, key="other")


async def test_not_scheduled_fails_and_shows_the_match(docket: Docket, url: str) -> None:
    await docket.add(send_email, key="welcome")("ada@example.com", urgent=True)

    for criteria in [
        {},
        {"args": ("ada@example.com",)},
        {"kwargs": {"urgent": True}},
        {"key": "welcome"},
    ]:
        with pytest.raises(AssertionError) as raised:
            await assert_task_not_scheduled(docket, "send_email", **criteria)  # type: ignore[arg-type]
        message = str(raised.value)
        assert "should not be scheduled" in message
        assert "ada@example.com" in message and "'welcome'" in message


# --- assert_task_count and assert_no_tasks ------------------------------------------------------


async def test_count_all_tasks_and_per_function(docket: Docket, url: str) -> None:
    await assert_task_count(docket, count=0)
    await docket.add(send_email)("a@example.com")
    await docket.add(send_email, when=later())("b@example.com")
    await docket.add(charge)(1, 5)

    await assert_task_count(docket, count=3)
    await assert_task_count(docket, send_email, count=2)
    await assert_task_count(docket, "charge", count=1)
    await assert_task_count(docket, explode, count=0)


async def test_a_wrong_count_says_what_was_found(docket: Docket) -> None:
    await docket.add(send_email)("a@example.com")
    await docket.add(charge)(1, 5)

    with pytest.raises(AssertionError, match="Expected 2 tasks for send_email, found 1") as raised:
        await assert_task_count(docket, send_email, count=2)
    assert "charge" in str(raised.value)
    with pytest.raises(AssertionError, match="Expected 1 all tasks, found 2"):
        await assert_task_count(docket, count=1)


async def test_no_tasks_fails_listing_every_task(docket: Docket, url: str) -> None:
    await assert_no_tasks(docket)
    await docket.add(send_email, key="welcome")("ada@example.com")
    await docket.add(charge, when=later(), key="invoice")(3, 9)

    with pytest.raises(AssertionError) as raised:
        await assert_no_tasks(docket)

    message = str(raised.value)
    assert "found 2 task(s)" in message
    assert "send_email" in message and "'welcome'" in message
    assert "charge" in message and "'invoice'" in message


async def test_tasks_for_unknown_functions_are_still_seen(docket: Docket, docket_name: str) -> None:
    # Another process scheduled a task this process has never heard of.
    async with Docket(name=docket_name, url=docket.url) as producer:
        await producer.add(charge, when=later(), key="elsewhere")(5, 10)
    fresh = Docket(name=docket_name, url=docket.url)
    fresh.tasks.pop("charge", None)
    async with fresh:
        await assert_task_scheduled(fresh, "charge", key="elsewhere")
        await assert_task_count(fresh, "charge", count=1)


# --- run_pending -----------------------------------------------------------------------------


async def test_run_pending_runs_everything_and_returns_final_states(
    docket: Docket, url: str
) -> None:
    await docket.add(send_email, key="welcome")("ada@example.com")
    await docket.add(charge, key="invoice")(1, 250)
    await docket.add(explode, key="boom")("no fuel")

    ran = await run_pending(docket)

    assert {e.key for e in ran} == {"welcome", "invoice", "boom"}
    states = {e.key: e.state for e in ran}
    assert states == {
        "welcome": ExecutionState.COMPLETED,
        "invoice": ExecutionState.COMPLETED,
        "boom": ExecutionState.FAILED,
    }
    by_key = {e.key: e for e in ran}
    assert await by_key["invoice"].get_result() == "charged 250"
    assert by_key["boom"].error is not None and "no fuel" in by_key["boom"].error
    with pytest.raises(RuntimeError, match="no fuel"):
        await by_key["boom"].get_result()
    assert sorted(log) == ["charge 1", "email ada@example.com"]
    await assert_no_tasks(docket)


async def test_run_pending_on_an_empty_docket_returns_nothing(docket: Docket) -> None:
    assert await run_pending(docket) == []


async def fan_out(count: int, docket: Docket = CurrentDocket()) -> None:
    for index in range(count):
        await docket.add(send_email, key=f"fan-{index}")(f"user{index}@example.com")


async def test_run_pending_runs_what_the_tasks_schedule_too(docket: Docket, url: str) -> None:
    await docket.add(fan_out, key="fan")(3)

    ran = await run_pending(docket)

    assert ran[0].key == "fan"
    assert {e.key for e in ran} == {"fan", "fan-0", "fan-1", "fan-2"}
    assert all(e.state == ExecutionState.COMPLETED for e in ran)
    assert len(log) == 3
    await assert_no_tasks(docket)


async def test_run_pending_leaves_later_tasks_scheduled(docket: Docket, url: str) -> None:
    await docket.add(send_email, key="now")("now@example.com")
    await docket.add(send_email, when=later(60), key="in-an-hour")("later@example.com")

    ran = await asyncio.wait_for(run_pending(docket), 10)

    assert [e.key for e in ran] == ["now"]
    assert log == ["email now@example.com"]
    await assert_task_scheduled(docket, send_email, key="in-an-hour")
    await assert_task_count(docket, count=1)


async def test_run_pending_can_wait_for_future_tasks(docket: Docket, url: str) -> None:
    soon = datetime.now(UTC) + timedelta(milliseconds=300)
    await docket.add(send_email, when=soon, key="soon")("soon@example.com")
    await docket.add(send_email, key="now")("now@example.com")

    ran = await run_pending(docket, include_future=True)

    assert datetime.now(UTC) >= soon
    assert [e.key for e in ran] == ["now", "soon"]
    assert log == ["email now@example.com", "email soon@example.com"]
    await assert_no_tasks(docket)


attempts: list[int] = []


async def flaky(retry: Retry = Retry(attempts=3)) -> None:
    attempts.append(retry.attempt)
    if retry.attempt < 3:
        raise RuntimeError("not yet")


async def test_run_pending_reports_one_execution_per_key_after_retries(docket: Docket) -> None:
    attempts.clear()
    await docket.add(flaky, key="flaky")()

    ran = await run_pending(docket)

    assert attempts == [1, 2, 3]
    [execution] = ran
    assert execution.key == "flaky"
    assert execution.state == ExecutionState.COMPLETED
    assert execution.attempt == 3


async def slow_to_retry(retry: Retry = Retry(attempts=2, delay=timedelta(hours=1))) -> None:
    attempts.append(retry.attempt)
    raise RuntimeError("try again in an hour")


async def test_run_pending_leaves_a_delayed_retry_scheduled(docket: Docket) -> None:
    attempts.clear()
    await docket.add(slow_to_retry, key="slow")()

    [execution] = await asyncio.wait_for(run_pending(docket), 10)

    assert attempts == [1]
    assert execution.state == ExecutionState.SCHEDULED
    assert execution.attempt == 2
    await assert_task_scheduled(docket, slow_to_retry, key="slow")


ticks: list[str] = []


async def tick(perpetual: Perpetual = Perpetual()) -> None:
    ticks.append("tick")  # always due again at once


async def tock(perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=20))) -> None:
    ticks.append("tock")


async def test_run_pending_bounds_perpetual_tasks_with_at_most(docket: Docket) -> None:
    ticks.clear()
    await docket.add(tick, key="ticker")()

    ran = await asyncio.wait_for(run_pending(docket, at_most={"ticker": 3}), 20)

    assert ticks == ["tick"] * 3
    assert [e.key for e in ran] == ["ticker"]
    await assert_no_tasks(docket)


async def test_run_pending_runs_a_perpetual_task_once_when_its_next_run_is_later(
    docket: Docket,
) -> None:
    ticks.clear()
    await docket.add(tock, key="tocker")()

    [execution] = await asyncio.wait_for(run_pending(docket), 20)

    # The next run may already be due by the time the first one settles; then it runs.
    assert ticks and set(ticks) == {"tock"}
    await assert_task_scheduled(docket, tock, key="tocker")
    assert execution.state in (ExecutionState.SCHEDULED, ExecutionState.QUEUED)

    ticks.clear()
    await asyncio.wait_for(run_pending(docket, include_future=True, at_most={"tocker": 3}), 20)
    assert ticks == ["tock"] * 3
    await assert_no_tasks(docket)


async def test_run_pending_passes_worker_options(docket: Docket) -> None:
    seen: list[tuple[str, str]] = []

    async def audit(execution: Execution = CurrentExecution()) -> None:
        seen.append(("audit", execution.function_name))

    async def fallback(*args: object, execution: Execution = CurrentExecution()) -> None:
        seen.append(("fallback", execution.function_name))

    await docket.add(send_email)("ada@example.com")
    async with Docket(name=docket.name, url=docket.url) as other:
        other.register(charge)
        await other.add(charge, key="unknown-here")(1, 1)
    assert "charge" not in docket.tasks

    ran = await run_pending(
        docket,
        fallback_task=fallback,
        dependencies={"audit": Depends(audit)},
        concurrency=1,
        name="test-runner",
    )

    assert sorted(seen) == [
        ("audit", "charge"),
        ("audit", "send_email"),
        ("fallback", "charge"),
    ]
    assert {e.worker for e in ran} == {"test-runner"}
    assert {e.state for e in ran} == {ExecutionState.COMPLETED}
