"""Debounce through the public API: Docket + Worker on a real Redis (some on memory://).

No ``from __future__ import annotations`` here: the tasks are closures whose
``Annotated`` metadata names local variables, so it must be evaluated at definition.
"""

import asyncio
import logging
import time
from datetime import timedelta
from typing import Annotated

import pytest
from _helpers import fast_worker, keys_of, run_all, states

from docket import Debounce, Docket, Execution, ExecutionState

# Run times are taken on the process clock, the quiet period on the server's.
SLACK = 0.05


async def wait_until_put_back(docket: Docket, execution: Execution) -> None:
    """Until a worker has seen ``execution`` and put it back to settle."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        current = await docket.get_execution(execution.key)
        assert current is not None
        if current.generation != execution.generation:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{execution.key} was never put back")


@pytest.mark.usefixtures("url")
async def test_a_burst_ends_in_exactly_one_run_after_it_settles(
    docket: Docket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settle = timedelta(milliseconds=300)
    runs: list[tuple[int, float]] = []

    async def rebuild(n: int, debounce: Debounce = Debounce(settle)) -> None:
        runs.append((n, time.monotonic()))

    executions = [await docket.add(rebuild)(n) for n in range(5)]
    last_add = time.monotonic()
    await run_all(docket)

    assert len(runs) == 1
    # Once the burst has been quiet for `settle`.
    assert runs[0][1] - last_add >= settle.total_seconds() - SLACK
    winner = runs[0][0]
    final = await states(executions)
    assert final[winner] == ExecutionState.COMPLETED
    assert final.count(ExecutionState.CANCELLED) == 4

    drops = [
        r
        for r in caplog.records
        if r.name == "docket.worker" and r.levelno == logging.INFO and "dropped" in r.getMessage()
    ]
    assert len(drops) == 4
    assert all("debounce" in r.getMessage() for r in drops)


@pytest.mark.usefixtures("url")
async def test_each_add_of_a_spread_out_burst_pushes_the_run_back(docket: Docket) -> None:
    settle = timedelta(milliseconds=300)
    runs: list[float] = []

    async def rebuild(n: int, debounce: Debounce = Debounce(settle)) -> None:
        runs.append(time.monotonic())

    async with fast_worker(docket) as worker:
        await docket.add(rebuild)(0)
        finished = asyncio.create_task(worker.run_until_finished())
        # Adds every 100 ms for 0.6 s: never `settle` of quiet until the last one.
        for n in range(1, 7):
            await asyncio.sleep(0.1)
            await docket.add(rebuild)(n)
        last_add = time.monotonic()
        await finished

    assert len(runs) == 1
    assert runs[0] - last_add >= settle.total_seconds() - SLACK


@pytest.mark.usefixtures("url")
async def test_bursts_apart_run_once_each(docket: Docket) -> None:
    settle = timedelta(milliseconds=150)
    runs: list[int] = []

    async def rebuild(n: int, debounce: Debounce = Debounce(settle)) -> None:
        runs.append(n)

    for burst in range(2):
        for n in range(3):
            await docket.add(rebuild)(burst * 10 + n)
        await run_all(docket)

    assert len(runs) == 2
    assert runs[0] in (0, 1, 2)
    assert runs[1] in (10, 11, 12)


@pytest.mark.usefixtures("url")
async def test_annotated_debounces_each_argument_value_separately(docket: Docket) -> None:
    settle = timedelta(milliseconds=200)
    runs: list[tuple[int, int]] = []

    async def sync_customer(customer: Annotated[int, Debounce(settle)], n: int) -> None:
        runs.append((customer, n))

    for n in range(3):
        await docket.add(sync_customer)(1, n)
        await docket.add(sync_customer)(2, n)
    await run_all(docket)

    assert sorted(customer for customer, _ in runs) == [1, 2]


async def test_the_first_of_the_burst_goes_with_its_own_arguments(docket: Docket) -> None:
    settle = timedelta(milliseconds=200)
    runs: list[int] = []

    async def sync_customer(customer: Annotated[int, Debounce(settle)], n: int) -> None:
        runs.append(n)

    async with fast_worker(docket) as worker:
        first = await docket.add(sync_customer)(1, 0)
        finished = asyncio.create_task(worker.run_until_finished())
        await wait_until_put_back(docket, first)
        for n in range(1, 4):
            await docket.add(sync_customer)(1, n)
        await finished

    assert runs == [0]


async def test_same_parameter_shares_a_burst_unless_scoped(docket: Docket) -> None:
    settle = timedelta(milliseconds=200)
    runs: list[str] = []

    async def email(customer: Annotated[int, Debounce(settle)]) -> None:
        runs.append("email")

    async def sms(customer: Annotated[int, Debounce(settle)]) -> None:
        runs.append("sms")

    async def email_scoped(customer: Annotated[int, Debounce(settle, scope="email")]) -> None:
        runs.append("email_scoped")

    async def sms_scoped(customer: Annotated[int, Debounce(settle, scope="sms")]) -> None:
        runs.append("sms_scoped")

    for task in (email, sms, email_scoped, sms_scoped):
        await docket.add(task)(7)
    await run_all(docket)

    assert runs.count("email") + runs.count("sms") == 1
    assert runs.count("email_scoped") == 1
    assert runs.count("sms_scoped") == 1


async def test_a_cancelled_winner_does_not_swallow_the_next_burst(docket: Docket) -> None:
    settle = timedelta(milliseconds=300)
    runs: list[str] = []

    async def rebuild(label: str, debounce: Debounce = Debounce(settle)) -> None:
        runs.append(label)

    async with fast_worker(docket) as worker:
        first = await docket.add(rebuild)("cancelled")
        finished = asyncio.create_task(worker.run_until_finished())
        await wait_until_put_back(docket, first)
        await docket.cancel(first.key)
        await docket.add(rebuild)("next")
        await finished
    await run_all(docket)  # in case the first worker ran out of work before the add

    assert runs == ["next"]


def test_a_task_declares_one_debounce(docket: Docket) -> None:
    async def twice(
        a: Annotated[int, Debounce(timedelta(seconds=1))],
        b: Annotated[int, Debounce(timedelta(seconds=1))],
    ) -> None: ...

    with pytest.raises(ValueError, match="Debounce"):
        docket.register(twice)


@pytest.mark.parametrize("scope", ["", "a b", "}x", "*", "{x", "x" * 257])
def test_a_scope_cannot_leave_its_docket(scope: str) -> None:
    with pytest.raises(ValueError, match="scope"):
        Debounce(timedelta(seconds=1), scope=scope)


def test_settle_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Debounce(timedelta(0))


# -- races and keys ----------------------------------------------------------------------


async def test_two_workers_and_concurrent_adds_run_it_once(docket: Docket) -> None:
    settle = timedelta(milliseconds=400)
    runs: list[int] = []

    async def rebuild(n: int, debounce: Debounce = Debounce(settle)) -> None:
        runs.append(n)

    executions = await asyncio.gather(*(docket.add(rebuild)(n) for n in range(30)))
    async with fast_worker(docket, name="w1") as w1, fast_worker(docket, name="w2") as w2:
        await asyncio.gather(w1.run_until_finished(), w2.run_until_finished())

    assert len(runs) == 1
    final = await states(list(executions))
    assert final.count(ExecutionState.COMPLETED) == 1
    assert final.count(ExecutionState.CANCELLED) == 29


@pytest.mark.usefixtures("url")
async def test_no_key_is_left_once_the_burst_has_run(docket: Docket) -> None:
    settle = timedelta(milliseconds=100)

    async def rebuild(customer: Annotated[int, Debounce(settle)]) -> None:
        pass

    for customer in range(3):
        await docket.add(rebuild)(customer)
        await docket.add(rebuild)(customer)
    await run_all(docket)

    assert await keys_of(docket, "debounce") == []


@pytest.mark.usefixtures("url")
async def test_a_burst_whose_winner_vanished_expires(docket: Docket) -> None:
    settle = timedelta(milliseconds=100)

    async def rebuild(debounce: Debounce = Debounce(settle)) -> None:
        pass

    async with fast_worker(docket) as worker:
        first = await docket.add(rebuild)()
        finished = asyncio.create_task(worker.run_until_finished())
        await wait_until_put_back(docket, first)
        await docket.cancel(first.key)
        await finished

    keys = await keys_of(docket, "debounce")
    assert keys, "the burst's key should still be there, waiting for its winner"
    async with docket.redis() as redis:
        for key in keys:
            assert await redis.pttl(key) > 0, f"{key!r} has no expiry"

    deadline = time.monotonic() + 10
    while (left := await keys_of(docket, "debounce")) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert left == []
