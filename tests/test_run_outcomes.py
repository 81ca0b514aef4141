"""How a run ends when something other than its own return or raise has a say: a cancel
it ignores, a CancelledError of its own, run_at_most's last allowed run, a caller's own
Retry, and limits declared in ``Annotated`` metadata.

No ``from __future__ import annotations`` here: the tasks are closures whose
``Annotated`` metadata must be evaluated at definition.
"""

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated

import pytest
from _helpers import fast_worker, in_background, wait_for

from docket import (
    ConcurrencyLimit,
    Docket,
    ExecutionState,
    Perpetual,
    RateLimit,
    Retry,
)

pytestmark = pytest.mark.partitioned_too


async def test_a_task_that_swallows_its_cancel_and_returns_ends_completed(
    docket: Docket,
) -> None:
    started = asyncio.Event()
    caught: list[bool] = []

    async def stubborn() -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            caught.append(True)
        return "finished anyway"

    execution = await docket.add(stubborn)()
    async with fast_worker(docket) as worker, in_background(worker) as run:
        await asyncio.wait_for(started.wait(), 10)
        await docket.cancel(execution.key)
        await asyncio.wait_for(run, 10)

    assert caught == [True]
    await execution.sync()
    assert execution.state == ExecutionState.COMPLETED
    assert await execution.get_result() == "finished anyway"


async def test_a_cancel_the_task_obeys_still_ends_cancelled(docket: Docket) -> None:
    started = asyncio.Event()

    async def obedient() -> None:
        started.set()
        await asyncio.sleep(30)

    execution = await docket.add(obedient)()
    async with fast_worker(docket) as worker, in_background(worker) as run:
        await asyncio.wait_for(started.wait(), 10)
        await docket.cancel(execution.key)
        await asyncio.wait_for(run, 10)

    await execution.sync()
    assert execution.state == ExecutionState.CANCELLED


async def test_a_cancelled_error_raised_by_a_perpetual_body_stops_its_chain(
    docket: Docket,
) -> None:
    runs: list[int] = []

    async def tick(perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=10))) -> None:
        runs.append(1)
        raise asyncio.CancelledError()

    execution = await docket.add(tick, key="tick")()
    async with fast_worker(docket) as worker:
        # Before, the run was treated as a worker shutdown and left pending: this hung.
        await asyncio.wait_for(worker.run_at_most({"tick": 5}), 20)

    assert runs == [1]
    await execution.sync()
    assert execution.state == ExecutionState.CANCELLED


async def test_run_at_most_leaves_the_last_allowed_run_s_own_state(docket: Docket) -> None:
    runs: list[int] = []

    async def flaky(perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=5))) -> None:
        runs.append(1)
        raise ValueError("always")

    execution = await docket.add(flaky, key="flaky")()
    async with fast_worker(docket) as worker:
        await worker.run_at_most({"flaky": 3})

    assert len(runs) == 3
    await execution.sync()
    assert execution.state == ExecutionState.FAILED
    assert (await docket.snapshot()).total_tasks == 0


async def test_a_callers_retry_overrides_the_declared_one(docket: Docket) -> None:
    attempts: list[int] = []

    async def fragile(retry: Retry = Retry(attempts=1)) -> None:
        attempts.append(retry.attempt)
        raise RuntimeError("nope")

    # Declared: no retry. The caller asks for two attempts, and gets them.
    execution = await docket.add(fragile)(retry=Retry(attempts=2))
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()

    assert attempts == [1, 2]
    await execution.sync()
    assert execution.state == ExecutionState.FAILED

    attempts.clear()
    await docket.add(fragile)()
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()
    assert attempts == [1]


async def test_an_annotated_limit_naming_another_argument_limits_by_that_argument(
    docket: Docket,
) -> None:
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    release = asyncio.Event()

    async def export(
        row: Annotated[int, ConcurrencyLimit("tenant", max_concurrent=2)], tenant: str
    ) -> None:
        running[tenant] += 1
        peak[tenant] = max(peak[tenant], running[tenant])
        try:
            await release.wait()
        finally:
            running[tenant] -= 1

    for row in range(5):
        await docket.add(export)(row, tenant="acme")
    async with (
        fast_worker(docket, concurrency=10) as worker,
        in_background(worker, release) as run,
    ):
        # Each row has its own value, so a limit keyed by the annotated parameter would
        # let all five in at once; keyed by tenant only two may run.
        await wait_for(lambda: running["acme"] == 2, what="two exports running")
        await asyncio.sleep(0.1)
        assert running["acme"] == 2
        release.set()
        await asyncio.wait_for(run, 20)
    assert peak["acme"] == 2


async def test_a_scope_may_start_with_the_docket_s_own_prefix(docket: Docket) -> None:
    running = Counter[str]()
    peak = Counter[str]()
    release = asyncio.Event()
    scope = f"{docket.prefix}:my-application:custom"

    async def scoped(
        customer_id: int,
        limit: ConcurrencyLimit = ConcurrencyLimit("customer_id", 1, scope=scope),
    ) -> None:
        running["scoped"] += 1
        peak["scoped"] = max(peak["scoped"], running["scoped"])
        try:
            await release.wait()
        finally:
            running["scoped"] -= 1

    for _ in range(3):
        await docket.add(scoped)(customer_id=1)
    async with fast_worker(docket) as worker, in_background(worker, release) as run:
        await wait_for(lambda: running["scoped"] == 1, what="one scoped run")
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.wait_for(run, 20)
    assert peak["scoped"] == 1


def test_a_scope_under_another_docket_s_prefix_is_refused(docket: Docket) -> None:
    from docket.dependencies._windows import scope_within

    assert scope_within(docket, f"{docket.prefix}:billing") == "billing"
    with pytest.raises(ValueError, match="another docket's prefix"):
        scope_within(docket, "{someone-else}:billing")
    # The shape is checked where it is declared.
    RateLimit(1, per=timedelta(seconds=1), scope="{shop}:billing")
    with pytest.raises(ValueError, match="scope"):
        RateLimit(1, per=timedelta(seconds=1), scope="{shop}")


async def test_run_at_most_withdraws_the_retry_of_the_last_allowed_run(docket: Docket) -> None:
    attempts: list[int] = []

    async def fragile(retry: Retry = Retry(attempts=3)) -> None:
        attempts.append(retry.attempt)
        raise ValueError("fail")

    execution = await docket.add(fragile)()
    async with fast_worker(docket) as worker:
        await worker.run_at_most({execution.key: 1})

    # The retry is this run going on; it was scheduled, then withdrawn.
    assert attempts == [1]
    await execution.sync()
    assert execution.state == ExecutionState.CANCELLED


async def test_a_bug_that_escapes_a_run_stops_the_worker_loop_loudly(docket: Docket) -> None:
    async def task() -> None: ...

    await docket.add(task)()
    async with fast_worker(docket) as worker:

        async def broken(execution: object) -> None:
            raise RuntimeError("a bug in the worker")

        # Stands in for a defect in the worker's own run path: it must surface from the
        # run loop, not vanish into an unobserved asyncio task.
        worker._execute = broken  # type: ignore[method-assign,assignment]
        with pytest.raises(ExceptionGroup) as caught:
            await asyncio.wait_for(worker.run_until_finished(), 20)
    assert any("a bug in the worker" in str(error) for error in caught.value.exceptions)


async def test_a_running_limit_knows_its_concurrency_key(docket: Docket) -> None:
    seen: list[str] = []

    async def sync_customer(
        customer_id: int,
        limit: ConcurrencyLimit = ConcurrencyLimit("customer_id", max_concurrent=1),
    ) -> None:
        seen.append(limit.concurrency_key)

    await docket.add(sync_customer)(7)
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()

    assert len(seen) == 1
    assert seen[0].startswith(f"{docket.prefix}:") and seen[0].endswith("7")
    with pytest.raises(RuntimeError, match="not initialized"):
        _ = ConcurrencyLimit("customer_id").concurrency_key


async def test_a_cancelled_task_s_record_keeps_its_call(docket: Docket) -> None:
    async def later(customer: str, *, amount: int) -> None: ...

    docket.register(later)
    queued = await docket.add(later, key="queued")("acme", amount=3)
    scheduled = await docket.add(
        later, key="scheduled", when=datetime.now(UTC) + timedelta(hours=1)
    )("initech", amount=5)
    for execution in (queued, scheduled):
        await docket.cancel(execution.key)

    for key, args, kwargs in (
        ("queued", ("acme",), {"amount": 3}),
        ("scheduled", ("initech",), {"amount": 5}),
    ):
        stored = await docket.get_execution(key)
        assert stored is not None
        assert stored.state == ExecutionState.CANCELLED
        assert (stored.args, stored.kwargs) == (args, kwargs)


async def test_get_execution_of_an_unknown_task_gives_a_placeholder_named_after_it(
    docket: Docket, redis_url: str
) -> None:
    async def import_catalog(page: int) -> None: ...

    docket.register(import_catalog)
    await docket.add(import_catalog, key="catalog")(3)

    # Another process (the CLI, a dashboard) that never imported the task.
    async with Docket(name=docket.name, url=redis_url) as elsewhere:
        stored = await elsewhere.get_execution("catalog")
    assert stored is not None
    assert stored.function is not None
    assert stored.function.__name__ == "import_catalog"
    assert stored.function_name == "import_catalog"
    assert stored.args == (3,)


async def test_get_result_on_a_fire_and_forget_docket_waits_out_its_timeout(
    redis_url: str, docket_name: str
) -> None:
    async with Docket(name=docket_name, url=redis_url, execution_ttl=timedelta(0)) as quiet:

        async def noop() -> None: ...

        execution = await quiet.add(noop)()
        async with fast_worker(quiet) as worker:
            await worker.run_until_finished()
        # No record is kept, so nothing will ever report back: as released, a wait with
        # a limit runs it out.
        with pytest.raises(TimeoutError):
            await execution.get_result(timeout=timedelta(milliseconds=100))


async def test_a_task_called_without_a_required_argument_fails_naming_it(
    docket: Docket, url: str
) -> None:
    async def needs(n: int, m: int) -> None: ...

    def raises_its_own(n: int) -> None:
        raise TypeError("the body's own TypeError")

    missing = await docket.add(needs)(1)
    own = await docket.add(raises_its_own)(1)
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()
    await missing.sync()
    await own.sync()
    assert missing.state is ExecutionState.FAILED
    assert missing.error is not None
    assert "Task 'needs' was run without a value for its parameter(s) 'm'" in missing.error
    assert "web app" not in missing.error
    # A TypeError the body raises is the body's, left as it is.
    assert own.error is not None and "the body's own TypeError" in own.error
    assert "was run without" not in own.error
