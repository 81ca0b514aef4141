"""Cooldown through the public API: Docket + Worker on a real Redis (some on memory://).

No ``from __future__ import annotations`` here: the tasks are closures whose
``Annotated`` metadata names local variables, so it must be evaluated at definition.
"""

import asyncio
import itertools
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

import pytest
from _helpers import fast_worker, keys_of, run_all, states, wait_until_no_keys

from docket import Cooldown, Docket, ExecutionState, RateLimit


@pytest.mark.usefixtures("url")
async def test_first_run_goes_the_rest_inside_the_window_are_dropped(
    docket: Docket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    window = timedelta(milliseconds=500)
    runs: list[int] = []

    async def refresh(n: int, cooldown: Cooldown = Cooldown(window)) -> None:
        runs.append(n)

    async with fast_worker(docket) as worker:
        first = await docket.add(refresh)(0)
        await worker.run_until_finished()
        executions = [first] + [await docket.add(refresh)(n) for n in range(1, 4)]
        await worker.run_until_finished()

    final = await states(executions)
    assert len(runs) == final.count(ExecutionState.COMPLETED) >= 1
    assert final.count(ExecutionState.CANCELLED) == 4 - len(runs) >= 1
    # Leading edge: the first run went at once.
    assert runs[0] == 0

    drops = [
        r
        for r in caplog.records
        if r.name == "docket.worker" and r.levelno == logging.INFO and "dropped" in r.getMessage()
    ]
    assert len(drops) == final.count(ExecutionState.CANCELLED)
    assert all("cooldown" in r.getMessage() for r in drops)


@pytest.mark.usefixtures("url")
async def test_a_run_after_the_window_goes_again(docket: Docket) -> None:
    window = timedelta(milliseconds=200)
    starts: list[float] = []

    async def refresh(cooldown: Cooldown = Cooldown(window)) -> None:
        starts.append(time.monotonic())

    await docket.add(refresh)()
    await run_all(docket)
    await asyncio.sleep(0.3)
    await docket.add(refresh)()
    await run_all(docket)

    assert len(starts) == 2
    assert starts[1] - starts[0] >= 0.2


@pytest.mark.usefixtures("url")
async def test_annotated_cools_each_argument_value_separately(docket: Docket) -> None:
    window = timedelta(milliseconds=500)
    runs: list[tuple[int, int]] = []

    async def notify(customer: Annotated[int, Cooldown(window)], n: int) -> None:
        runs.append((customer, n))

    for n in range(3):
        await docket.add(notify)(1, n)
        await docket.add(notify)(2, n)
    await run_all(docket)

    customers = [customer for customer, _ in runs]
    assert customers.count(1) >= 1
    assert customers.count(2) >= 1
    assert len(runs) < 6


async def test_same_parameter_shares_a_window_unless_scoped(docket: Docket) -> None:
    window = timedelta(milliseconds=500)
    runs: list[str] = []

    async def email(customer: Annotated[int, Cooldown(window)]) -> None:
        runs.append("email")

    async def sms(customer: Annotated[int, Cooldown(window)]) -> None:
        runs.append("sms")

    async def email_scoped(customer: Annotated[int, Cooldown(window, scope="email")]) -> None:
        runs.append("email_scoped")

    async def sms_scoped(customer: Annotated[int, Cooldown(window, scope="sms")]) -> None:
        runs.append("sms_scoped")

    for task in (email, sms, email_scoped, sms_scoped):
        await docket.add(task)(7)
    await run_all(docket)

    assert runs.count("email") + runs.count("sms") == 1
    assert runs.count("email_scoped") == 1
    assert runs.count("sms_scoped") == 1


@pytest.mark.parametrize("scope", ["", "a b", "}x", "*", "{x", "x" * 257])
def test_a_scope_cannot_leave_its_docket(scope: str) -> None:
    with pytest.raises(ValueError, match="scope"):
        Cooldown(timedelta(seconds=1), scope=scope)


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Cooldown(timedelta(0))


# -- combined with RateLimit ---------------------------------------------------------------


@pytest.mark.usefixtures("url")
async def test_cooldown_and_rate_limit_combine(docket: Docket) -> None:
    """Each refuses on its own terms: the cooldown drops repeats of one customer, the
    task's rate limit spaces out the runs, and nothing else is lost."""
    per = timedelta(milliseconds=300)
    starts: dict[int, float] = {}

    async def notify(
        customer: Annotated[int, Cooldown(timedelta(seconds=2))],
        rate: RateLimit = RateLimit(1, per=per),
    ) -> None:
        starts[customer] = time.monotonic()

    executions = [await docket.add(notify)(customer) for customer in (1, 1, 2, 2, 3)]
    await run_all(docket)

    assert sorted(starts) == [1, 2, 3]
    final = await states(executions)
    assert final.count(ExecutionState.COMPLETED) == 3
    assert final.count(ExecutionState.CANCELLED) == 2
    ordered = sorted(starts.values())
    for earlier, later in itertools.pairwise(ordered):
        assert later - earlier >= 0.2, "two runs inside one rate-limit window"


async def test_a_run_refused_by_a_later_dependency_does_not_start_the_cooldown(
    docket: Docket, caplog: pytest.LogCaptureFixture
) -> None:
    """A run let through by the cooldown but rescheduled by the rate limit behind it
    must not find its own cooldown when it comes back (it would be dropped: lost)."""
    caplog.set_level(logging.DEBUG, logger="docket.worker")
    per = timedelta(milliseconds=500)
    runs: list[str] = []

    # Both limit the customer's shared rate-limit window.
    async def charge(customer: Annotated[int, RateLimit(1, per=per)]) -> None:
        runs.append("charge")

    async def notify(
        customer: Annotated[int, Cooldown(timedelta(seconds=2)), RateLimit(1, per=per)],
    ) -> None:
        runs.append("notify")

    await docket.add(charge)(1)
    later = datetime.now(UTC) + timedelta(milliseconds=50)
    notified = await docket.add(notify, when=later)(1)
    await run_all(docket)

    assert runs == ["charge", "notify"]
    assert await states([notified]) == [ExecutionState.COMPLETED]
    # The path under test was taken: notify passed the cooldown and was put back.
    assert any(
        "blocked by rate limit" in r.getMessage() and "notify" in r.getMessage()
        for r in caplog.records
    )


# -- races and keys ----------------------------------------------------------------------


async def test_two_workers_and_concurrent_adds_run_it_once_per_window(docket: Docket) -> None:
    window = timedelta(milliseconds=500)
    starts: list[float] = []

    async def refresh(n: int, cooldown: Cooldown = Cooldown(window)) -> None:
        starts.append(time.monotonic())

    executions = await asyncio.gather(*(docket.add(refresh)(n) for n in range(30)))
    async with fast_worker(docket, name="w1") as w1, fast_worker(docket, name="w2") as w2:
        await asyncio.gather(w1.run_until_finished(), w2.run_until_finished())

    final = await states(list(executions))
    assert final.count(ExecutionState.COMPLETED) == len(starts) >= 1
    assert final.count(ExecutionState.CANCELLED) == 30 - len(starts)
    ordered = sorted(starts)
    for earlier, later in itertools.pairwise(ordered):
        assert later - earlier >= 0.35, "two runs inside one cooldown window"


@pytest.mark.usefixtures("url")
async def test_no_key_outlives_its_window(docket: Docket) -> None:
    window = timedelta(milliseconds=200)

    async def refresh(
        customer: Annotated[int, Cooldown(window)], cooldown: Cooldown = Cooldown(window)
    ) -> None:
        pass

    for customer in range(3):
        await docket.add(refresh)(customer)
    await run_all(docket)

    async with docket.redis() as redis:
        for key in await keys_of(docket, "cooldown"):
            assert await redis.pttl(key) > 0, f"{key!r} has no expiry"
    assert await wait_until_no_keys(docket, "cooldown") == []
