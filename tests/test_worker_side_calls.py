"""The one-at-a-time worker-side calls code written for the released docket makes by hand
(custom runners, tools, tests): Execution.from_message, claim, mark_as_*, schedule,
Docket.schedule and a standalone ExecutionProgress. Each goes through the same records
and scripts the worker uses."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _helpers import fast_worker

from docket import (
    CurrentExecution,
    Disposition,
    Docket,
    Execution,
    ExecutionProgress,
    ExecutionState,
)
from docket._redis import confirm_subscriptions


async def greet(name: str, *, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


async def first_entry(docket: Docket) -> dict[bytes, bytes]:
    async with docket.redis() as redis:
        entries = await redis.xrange(docket.stream_key, count=1)
    assert entries, "nothing is queued"
    _, fields = entries[0]
    return dict(fields)


def lifecycle(execution: Execution) -> dict[str, Any]:
    return {
        "state": execution.state,
        "worker": execution.worker,
        "started_at": execution.started_at,
        "completed_at": execution.completed_at,
        "error": execution.error,
        "current": execution.progress.current,
        "total": execution.progress.total,
        "message": execution.progress.message,
    }


# --- from_message ---------------------------------------------------------------------


async def test_from_message_rebuilds_the_call_a_queued_entry_carries(docket: Docket) -> None:
    docket.register(greet)
    added = await docket.add(greet, key="greeting")("ada", punctuation="?")

    rebuilt = await Execution.from_message(docket, await first_entry(docket))

    assert rebuilt.function is greet
    assert (rebuilt.key, rebuilt.args, rebuilt.kwargs) == (
        "greeting",
        ("ada",),
        {"punctuation": "?"},
    )
    assert rebuilt.generation == added.generation
    assert rebuilt.state == ExecutionState.QUEUED  # read back from Redis (sync=True)


async def test_from_message_of_an_unknown_task_raises_value_error_naming_it(
    docket: Docket, redis_url: str
) -> None:
    docket.register(greet)
    await docket.add(greet, key="greeting")("ada")
    entry = await first_entry(docket)

    async with Docket(name=docket.name, url=redis_url) as elsewhere:
        with pytest.raises(ValueError, match="'greet' is not registered"):
            await Execution.from_message(elsewhere, entry)

        async def stand_in(*args: Any, **kwargs: Any) -> None: ...

        rebuilt = await Execution.from_message(elsewhere, entry, fallback_task=stand_in)
    assert rebuilt.function is stand_in
    assert rebuilt.function_name == "greet"


async def test_from_message_refuses_an_entry_that_is_not_a_docket_call(docket: Docket) -> None:
    docket.register(greet)
    released_layout = {
        b"function": b"greet",
        b"key": b"k",
        b"when": b"2024-01-01T00:00:00+00:00",
        b"attempt": b"1",
        b"args": b"...",
        b"kwargs": b"...",
    }
    with pytest.raises(ValueError, match="missing field"):
        await Execution.from_message(docket, released_layout, sync=False)


async def test_a_claimed_run_reports_what_a_rebuilt_and_synced_one_does(docket: Docket) -> None:
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []

    async def observe(execution: Execution = CurrentExecution()) -> None:
        synced = await Execution.from_message(docket, await first_entry(docket))
        seen.append((lifecycle(execution), lifecycle(synced)))

    await docket.add(observe, key="observed")()
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()

    claimed, synced = seen[0]
    assert claimed == synced
    assert claimed["state"] == ExecutionState.RUNNING


# --- claim and the final states ---------------------------------------------------------


async def test_claim_then_mark_as_failed_without_a_message(docket: Docket) -> None:
    docket.register(greet)
    execution = await docket.add(greet, key="by-hand")("ada")

    assert await execution.claim("hand-runner")
    assert (execution.state, execution.worker) == (ExecutionState.RUNNING, "hand-runner")
    await execution.mark_as_failed(error=None)

    await execution.sync()
    assert execution.state == ExecutionState.FAILED
    assert execution.error is None
    assert execution.completed_at is not None


async def test_a_claim_for_a_replaced_run_is_refused_and_shows_the_newer_run(
    docket: Docket,
) -> None:
    docket.register(greet)
    await docket.add(greet, key="contested")("first")
    stale = await Execution.from_message(docket, await first_entry(docket))
    await docket.replace(greet, datetime.now(UTC), "contested")("second")

    assert not await stale.claim("late-runner")
    assert lifecycle(stale) == {
        "state": ExecutionState.QUEUED,
        "worker": None,
        "started_at": None,
        "completed_at": None,
        "error": None,
        "current": None,
        "total": 100,
        "message": None,
    }
    # Nor does the stale run's end overwrite the newer run's record.
    await stale.mark_as_completed()
    fresh = await docket.get_execution("contested")
    assert fresh is not None
    assert (fresh.state, fresh.args) == (ExecutionState.QUEUED, ("second",))


async def test_a_claim_for_a_cancelled_task_is_refused(docket: Docket) -> None:
    docket.register(greet)
    execution = await docket.add(
        greet, key="called-off", when=datetime.now(UTC) + timedelta(hours=1)
    )("ada")
    await docket.cancel("called-off")

    assert not await execution.claim("hand-runner")
    assert execution.state == ExecutionState.CANCELLED


async def test_the_final_state_event_carries_error_only_for_a_failure(docket: Docket) -> None:
    docket.register(greet)
    done = await docket.add(greet, key="done")("ada")
    doomed = await docket.add(greet, key="doomed")("bob")
    events: dict[str, dict[str, Any]] = {}
    async with docket.redis() as redis:
        pubsub = redis.pubsub()
        await pubsub.subscribe(docket.keys.events("done"), docket.keys.events("doomed"))
        await confirm_subscriptions(pubsub, 2)
        for execution in (done, doomed):
            assert await execution.claim("hand-runner")
        await done.mark_as_completed()
        await doomed.mark_as_failed("it broke")
        while len(events) < 2:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert message is not None, f"no final events; saw {events}"
            event = json.loads(message["data"])
            if event["state"] in ("completed", "failed"):
                events[event["key"]] = event
        await pubsub.aclose()

    assert "error" not in events["done"]
    assert events["doomed"]["error"] == "it broke"


# --- scheduling an execution ------------------------------------------------------------


async def test_docket_schedule_is_idempotent_per_key_and_respects_strikes(docket: Docket) -> None:
    docket.register(greet)
    when = datetime.now(UTC) + timedelta(minutes=5)
    first = Execution(docket, greet, ("first",), {}, "dup", when, 1)
    second = Execution(docket, greet, ("second",), {}, "dup", when, 1)

    await docket.schedule(first)
    await docket.schedule(second)

    assert (first.disposition, second.disposition) == (
        Disposition.SCHEDULED,
        Disposition.ALREADY_SCHEDULED,
    )
    stored = await docket.get_execution("dup")
    assert stored is not None and stored.args == ("first",)

    await docket.strike("greet")
    struck = Execution(docket, greet, ("third",), {}, "struck", when, 1)
    await docket.schedule(struck)
    assert struck.disposition is Disposition.STRUCK
    assert await docket.get_execution("struck") is None


async def test_schedule_with_a_stale_expected_generation_is_superseded(docket: Docket) -> None:
    docket.register(greet)
    original = await docket.add(greet, key="chain")("ada")
    await docket.replace(greet, datetime.now(UTC), "chain")("bob")

    disposition = await original.schedule(expected_generation=original.generation)

    assert disposition is Disposition.SUPERSEDED
    stored = await docket.get_execution("chain")
    assert stored is not None and stored.args == ("bob",)


# --- ExecutionProgress on its own --------------------------------------------------------


async def test_a_standalone_progress_reports_for_the_run_holding_the_key(docket: Docket) -> None:
    docket.register(greet)
    execution = await docket.add(greet, key="tracked")("ada")
    assert await execution.claim("hand-runner")

    reporters = [ExecutionProgress(docket, "tracked") for _ in range(3)]
    await reporters[0].set_total(30)

    async def ten_steps(progress: ExecutionProgress) -> None:
        for _ in range(10):
            await progress.increment()

    await asyncio.gather(*(ten_steps(progress) for progress in reporters))
    await reporters[1].set_message("nearly there")

    read = await ExecutionProgress.create(docket, "tracked")
    assert (read.current, read.total, read.message) == (30, 30, "nearly there")

    await execution.mark_as_completed()
    after = await ExecutionProgress.create(docket, "tracked")
    assert after.current is None  # a final state drops the run's progress


async def test_progress_reported_for_a_key_no_run_holds_expires(docket: Docket) -> None:
    progress = ExecutionProgress(docket, "not-claimed-yet")
    await progress.set_total(5)

    read = await ExecutionProgress.create(docket, "not-claimed-yet")
    assert read.total == 5
    async with docket.redis() as redis:
        assert await redis.pttl(docket.keys.record("not-claimed-yet")) > 0
    with pytest.raises(ValueError):
        await progress.increment(0)


async def test_a_claim_keeps_a_record_progress_wrote_ahead_of_it(docket: Docket) -> None:
    await ExecutionProgress(docket, "early").set_message("warming up")
    execution = Execution(docket, greet, ("ada",), {}, "early", datetime.now(UTC), 1)

    assert await execution.claim("hand-runner")
    async with docket.redis() as redis:
        assert await redis.pttl(docket.keys.record("early")) == -1
    await execution.mark_as_completed()


async def test_a_sync_after_a_replace_leaves_a_run_its_own_generation(docket: Docket) -> None:
    docket.register(greet)
    run = await docket.add(greet, key="moving")("ada")
    await docket.replace(greet, datetime.now(UTC), "moving")("bob")

    await run.sync()

    assert await run.is_superseded()
    await run.mark_as_failed("too late")  # fenced off: the replacement's record stays
    stored = await docket.get_execution("moving")
    assert stored is not None
    assert (stored.state, stored.args) == (ExecutionState.QUEUED, ("bob",))


async def test_subscribe_of_a_finished_run_yields_its_state_and_progress_then_ends_quietly(
    docket: Docket,
) -> None:
    docket.register(greet)
    execution = await docket.add(greet, key="finished")("ada")
    assert await execution.claim("hand-runner")
    await execution.mark_as_completed()

    async with aclosing(execution.subscribe()) as events:
        first = await anext(events)
        second = await anext(events)
    assert (first["type"], first["state"]) == ("state", ExecutionState.COMPLETED)
    assert second["type"] == "progress"
