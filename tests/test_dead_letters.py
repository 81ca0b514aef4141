"""``docket.dead_letters``: list, requeue and purge the dead-letter stream.

A message lands there here the way it does in production: the worker that reads it does
not know its task (the test removes the task from the docket's registry after adding
it), or the entry is garbage written straight into the stream. Both backends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

import docket.worker as worker_module
from docket import Docket, Execution, ExecutionState, Worker
from docket.dead_letters import (
    DeadLetter,
    count_dead_letters,
    is_entry_id,
    list_dead_letters,
    purge,
    requeue,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.partitioned_too]

calls: list[str] = []


async def greet(name: str) -> None:
    calls.append(name)


@pytest.fixture(autouse=True)
def _quick_and_unsigned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "BLOCK_SECONDS", 0.05)
    monkeypatch.delenv("DOCKET_SIGNING_KEY", raising=False)
    calls.clear()


async def dead_letter_unknown(docket: Docket, worker: Worker, *names: str) -> list[Execution]:
    """Add greet(name) for each name, then run a worker that does not know greet."""
    executions = [await docket.add(greet, key=f"greet-{name}")(name) for name in names]
    del docket.tasks["greet"]
    await worker.run_until_finished()
    return executions


async def test_list_shows_each_message_and_why(url: str, docket: Docket, worker: Worker) -> None:
    [execution] = await dead_letter_unknown(docket, worker, "ada")
    assert await count_dead_letters(docket) == 1

    [letter] = await list_dead_letters(docket)
    assert is_entry_id(letter.id)
    assert letter.reason == "unknown task 'greet'"
    assert letter.deliveries == 1
    assert letter.stream_id == execution.message_id
    assert letter.worker == worker.name
    assert letter.dead_lettered_at is not None
    assert abs(letter.dead_lettered_at - datetime.now(UTC)) < timedelta(seconds=30)
    assert letter.function == "greet" and letter.key == "greet-ada"
    assert set(letter.fields) >= {"key", "gen", "function", "when", "attempt", "payload"}
    assert isinstance(letter.fields["payload"], bytes)
    assert letter.problem() is None

    await execution.sync()
    assert execution.state == ExecutionState.FAILED
    assert execution.error == "dead-lettered: unknown task 'greet'"


async def test_list_pages(docket: Docket, worker: Worker) -> None:
    await dead_letter_unknown(docket, worker, "a", "b", "c")
    everything = await list_dead_letters(docket)
    assert [letter.key for letter in everything] == ["greet-a", "greet-b", "greet-c"]
    first_two = await list_dead_letters(docket, count=2)
    assert first_two == everything[:2]
    rest = await list_dead_letters(docket, start=f"({first_two[-1].id}")
    assert rest == everything[2:]
    with pytest.raises(ValueError, match="count"):
        await list_dead_letters(docket, count=0)


async def test_requeue_runs_the_task_once_a_worker_knows_it(
    url: str, docket: Docket, worker: Worker
) -> None:
    [execution] = await dead_letter_unknown(docket, worker, "grace")
    [letter] = await list_dead_letters(docket)
    generation = execution.generation

    docket.register(greet)
    [result] = await requeue(docket, [letter.id])
    assert result.status == "requeued"
    assert is_entry_id(result.detail)
    assert (result.function, result.key) == ("greet", "greet-grace")
    assert await count_dead_letters(docket) == 0

    await execution.sync()
    assert execution.state == ExecutionState.QUEUED
    assert execution.error is None
    # The requeued run is a new generation of the key (the producer's execution keeps
    # the one it was added as, and follows the key's state).
    stored = await docket.get_execution(execution.key)
    assert stored is not None and stored.generation > generation

    await worker.run_until_finished()
    assert calls == ["grace"]
    await execution.sync()
    assert execution.state == ExecutionState.COMPLETED
    assert await count_dead_letters(docket) == 0


async def test_requeue_without_a_record(docket: Docket, worker: Worker) -> None:
    """The task's record expired before anyone requeued it: a new one is made."""
    await dead_letter_unknown(docket, worker, "lin")
    async with docket.redis() as redis:
        await redis.delete(docket.keys.record("greet-lin"))
    docket.register(greet)
    [result] = await requeue(docket, all_entries=True)
    assert result.status == "requeued"
    execution = await docket.get_execution("greet-lin")
    assert execution is not None and execution.state == ExecutionState.QUEUED
    await worker.run_until_finished()
    assert calls == ["lin"]


async def test_requeue_again_without_the_task_dead_letters_again(
    docket: Docket, worker: Worker
) -> None:
    await dead_letter_unknown(docket, worker, "once")
    [first] = await list_dead_letters(docket)
    [result] = await requeue(docket, all_entries=True)
    assert result.status == "requeued"
    await worker.run_until_finished()
    [second] = await list_dead_letters(docket)
    assert second.id != first.id and second.key == "greet-once"
    assert second.reason == "unknown task 'greet'"


async def test_requeue_leaves_garbage_and_reports_missing_ids(
    url: str, docket: Docket, worker: Worker
) -> None:
    async with docket.redis() as redis:
        await redis.xadd(docket.keys.stream, {"not": "a task"})
        await redis.xadd(
            docket.keys.stream,
            {
                "key": "k",
                "gen": "x",
                "function": "greet",
                "when": "1",
                "attempt": "1",
                "payload": b"",
            },
        )
    await worker.run_until_finished()
    letters = await list_dead_letters(docket)
    assert len(letters) == 2

    results = await requeue(docket, all_entries=True)
    assert [r.status for r in results] == ["invalid", "invalid"]
    assert results[0].detail.startswith("missing field(s): key, gen, function")
    assert results[1].detail == "field 'gen' is not an integer: b'x'"
    assert await count_dead_letters(docket) == 2

    [missing] = await requeue(docket, ["1-1"])
    assert (missing.id, missing.status) == ("1-1", "missing")

    with pytest.raises(ValueError, match="not a dead-letter id"):
        await requeue(docket, ["latest"])
    with pytest.raises(ValueError, match="all_entries"):
        await requeue(docket)
    with pytest.raises(ValueError, match="all_entries"):
        await requeue(docket, ["1-1"], all_entries=True)


async def test_requeue_leaves_a_letter_whose_key_is_busy(docket: Docket, worker: Worker) -> None:
    await dead_letter_unknown(docket, worker, "busy")
    docket.register(greet)
    later = datetime.now(UTC) + timedelta(hours=1)
    newer = await docket.add(greet, when=later, key="greet-busy")("newer")

    [result] = await requeue(docket, all_entries=True)
    assert result.status == "active"
    assert result.detail == "task key 'greet-busy' has a scheduled task now"
    assert await count_dead_letters(docket) == 1
    await newer.sync()
    assert newer.state == ExecutionState.SCHEDULED


async def test_requeue_all_pages_through_many(docket: Docket, worker: Worker) -> None:
    names = [f"n{i}" for i in range(230)]
    calls_made = docket.call(greet)
    await docket.add_many(calls_made(name) for name in names)
    del docket.tasks["greet"]
    await worker.run_until_finished()
    assert await count_dead_letters(docket) == len(names)

    docket.register(greet)
    results = await requeue(docket, all_entries=True)
    assert len(results) == len(names)
    assert {r.status for r in results} == {"requeued"}
    await worker.run_until_finished()
    assert sorted(calls) == sorted(names)


async def test_purge(url: str, docket: Docket, worker: Worker) -> None:
    await dead_letter_unknown(docket, worker, "a", "b", "c")
    letters = await list_dead_letters(docket)

    assert await purge(docket, [letters[0].id, "1-1"]) == 1
    assert [letter.id for letter in await list_dead_letters(docket)] == [
        letter.id for letter in letters[1:]
    ]
    assert await purge(docket, all_entries=True) == 2
    assert await count_dead_letters(docket) == 0
    assert await purge(docket, all_entries=True) == 0

    with pytest.raises(ValueError, match="not a dead-letter id"):
        await purge(docket, ["0"])
    with pytest.raises(ValueError, match="all_entries"):
        await purge(docket)


@pytest.fixture
async def signed(redis_url: str, docket_name: str) -> AsyncIterator[Docket]:
    async with Docket(name=docket_name, url=redis_url, signing_key="s3cret") as entered:
        yield entered


async def test_a_requeued_signed_message_still_verifies(signed: Docket) -> None:
    async with Worker(signed, minimum_check_interval=timedelta(milliseconds=5)) as worker:
        await dead_letter_unknown(signed, worker, "signed")
        [letter] = await list_dead_letters(signed)
        assert letter.fields["sig"]
        signed.register(greet)
        [result] = await requeue(signed, [letter.id])
        assert result.status == "requeued"
        await worker.run_until_finished()
    assert calls == ["signed"]
    assert await count_dead_letters(signed) == 0


def test_entry_ids() -> None:
    assert is_entry_id("1712345678901-0")
    assert not is_entry_id("1712345678901")
    assert not is_entry_id("-")
    assert not is_entry_id("1-1 ")


def test_a_letter_from_odd_fields() -> None:
    letter = DeadLetter.from_entry(
        b"1-1", {b"reason": b"r", b"deliveries": b"many", b"dead_lettered_at": b"soon"}
    )
    assert (letter.deliveries, letter.dead_lettered_at, letter.key, letter.function) == (
        0,
        None,
        None,
        None,
    )
    assert letter.problem() is not None
