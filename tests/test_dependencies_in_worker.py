"""Dependency injection through the public API: Docket, Worker, docket.add.

Every test runs on both backends: the module uses the ``url`` fixture, so conftest's
``docket`` is built on a private real redis-server and on ``memory://`` in turn.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import pytest
from _helpers import fast_worker, run_all

from docket import (
    CallArgument,
    CurrentDocket,
    CurrentExecution,
    CurrentWorker,
    Depends,
    Docket,
    Execution,
    Progress,
    Retry,
    Shared,
    TaskArgument,
    TaskKey,
    TaskLogger,
    Worker,
)
from docket.dependencies import DependencyExceptionGroup, TaskLoggerAdapter

# Every test gets conftest's ``docket`` on each backend in turn.
pytestmark = pytest.mark.usefixtures("url")

# -- values and cleanup ----------------------------------------------------------------


EVENTS: list[str] = []


def sync_value() -> str:
    return "sync"


async def async_value() -> str:
    return "async"


def sync_generator() -> Iterator[str]:
    EVENTS.append("open sync generator")
    yield "sync generator"
    EVENTS.append("close sync generator")


async def async_generator() -> AsyncIterator[str]:
    EVENTS.append("open async generator")
    yield "async generator"
    EVENTS.append("close async generator")


async def test_every_kind_of_function_and_cleanup_in_reverse(docket: Docket) -> None:
    EVENTS.clear()
    received: list[Any] = []

    async def task(
        label: str,
        a: str = Depends(sync_value),
        b: Annotated[str, Depends(async_value)] = "",
        c: str = Depends(sync_generator),
        d: str = Depends(async_generator),
    ) -> None:
        received.append((label, a, b, c, d))
        EVENTS.append("task body")

    await docket.add(task)("first")
    await run_all(docket)

    assert received == [("first", "sync", "async", "sync generator", "async generator")]
    assert EVENTS == [
        "open sync generator",
        "open async generator",
        "task body",
        "close async generator",
        "close sync generator",
    ]


async def test_the_task_exception_reaches_generator_dependencies(docket: Docket) -> None:
    seen: list[str] = []

    async def transaction() -> AsyncIterator[str]:
        try:
            yield "tx"
        except Exception as error:
            seen.append(f"rollback after {error}")
            raise
        else:
            seen.append("commit")

    async def task(fail: bool, tx: str = Depends(transaction)) -> None:
        if fail:
            raise ValueError("boom")

    ok = await docket.add(task)(False)
    bad = await docket.add(task)(True)
    await run_all(docket)

    await ok.get_result()
    with pytest.raises(ValueError, match="boom"):
        await bad.get_result()
    assert sorted(seen) == ["commit", "rollback after boom"]


async def test_dependencies_are_resolved_once_per_run(docket: Docket) -> None:
    connections: list[int] = []

    async def connection() -> AsyncIterator[int]:
        connections.append(len(connections) + 1)
        yield connections[-1]

    def repository(conn: int = Depends(connection)) -> str:
        return f"repo on {conn}"

    seen: list[tuple[str, int]] = []

    async def task(repo: str = Depends(repository), conn: int = Depends(connection)) -> None:
        seen.append((repo, conn))

    await docket.add(task)()
    await docket.add(task)()
    await run_all(docket)

    assert sorted(seen) == [("repo on 1", 1), ("repo on 2", 2)]


async def test_bindings_and_task_arguments(docket: Docket) -> None:
    accounts = {"alice": 100, "bob": 5}

    def balance(user: str, bonus: int = 0) -> int:
        return accounts[user] + bonus

    def customer_name(customer_id: int = TaskArgument()) -> str:
        return f"customer-{customer_id}"

    def coupon(code: str | None = TaskArgument(optional=True)) -> str:
        return code or "none"

    seen: list[tuple[Any, ...]] = []

    async def task(
        owner: str,
        customer_id: int,
        mine: int = Depends(balance, user=CallArgument("owner")),
        boosted: int = Depends(balance, user=CallArgument("owner"), bonus=10),
        name: str = Depends(customer_name),
        discount: str = Depends(coupon),
    ) -> None:
        seen.append((owner, mine, boosted, name, discount))

    await docket.add(task)("alice", customer_id=7)
    await run_all(docket)
    assert seen == [("alice", 100, 110, "customer-7", "none")]


async def test_arguments_the_caller_passes_win(docket: Docket) -> None:
    def never() -> str:
        raise AssertionError("the caller supplied this one")

    seen: list[tuple[str, str]] = []

    async def task(a: str = Depends(never), b: str = Depends(never)) -> None:
        seen.append((a, b))

    await docket.add(task)("positional", b="keyword")
    await run_all(docket)
    assert seen == [("positional", "keyword")]


async def test_sync_task_functions_get_dependencies(docket: Docket) -> None:
    seen: list[str] = []

    def task(key: str = TaskKey()) -> None:
        seen.append(key)

    await docket.add(task, key="sync-task")()
    await run_all(docket)
    assert seen == ["sync-task"]


# -- failures --------------------------------------------------------------------------


async def test_a_failing_dependency_fails_the_run_naming_it(docket: Docket) -> None:
    def database() -> str:
        raise ConnectionError("database is down")

    ran: list[bool] = []

    async def task(db: str = Depends(database)) -> None:
        ran.append(True)

    execution = await docket.add(task)()
    await run_all(docket)

    assert ran == []
    with pytest.raises(DependencyExceptionGroup) as caught:
        await execution.get_result()
    assert caught.value.parameters == ("db",)
    assert "Failed to resolve dependencies for parameter(s): db" in str(caught.value)
    assert "ConnectionError: database is down" in str(caught.value)
    assert isinstance(caught.value.exceptions[0], ConnectionError)


async def test_a_run_whose_dependency_failed_is_retried(docket: Docket) -> None:
    def flaky(execution: Execution = CurrentExecution()) -> str:
        if execution.attempt < 3:
            raise ConnectionError(f"attempt {execution.attempt}")
        return "connected"

    seen: list[tuple[str, int]] = []

    async def task(conn: str = Depends(flaky), retry: Retry = Retry(attempts=3)) -> str:
        seen.append((conn, retry.attempt))
        return conn

    execution = await docket.add(task)()
    await run_all(docket)
    assert seen == [("connected", 3)]
    assert await execution.get_result() == "connected"


# -- Shared ----------------------------------------------------------------------------


async def test_shared_values_last_for_the_worker(docket: Docket) -> None:
    events: list[str] = []

    async def pool() -> AsyncIterator[str]:
        events.append("open")
        yield f"pool {len(events)}"
        events.append("close")

    seen: list[str] = []

    async def task(p: str = Shared(pool)) -> None:
        seen.append(p)
        assert events == ["open"]

    for _ in range(3):
        await docket.add(task)()
    await run_all(docket, concurrency=2)
    assert seen == ["pool 1"] * 3
    assert events == ["open", "close"]

    await docket.add(task)()
    events.clear()
    await run_all(docket)
    assert seen[-1] == "pool 1"  # a new worker builds a new value
    assert events == ["open", "close"]


# -- worker dependencies ---------------------------------------------------------------


async def test_worker_dependencies_wrap_every_run(docket: Docket) -> None:
    events: list[str] = []

    async def request_scope(key: str = TaskKey()) -> AsyncIterator[None]:
        events.append(f"enter {key}")
        yield
        events.append(f"exit {key}")

    async def task(**kwargs: Any) -> None:
        assert kwargs == {}  # worker dependencies are not passed to the task
        events.append("task")

    await docket.add(task, key="one")()
    await run_all(docket, dependencies={"scope": Depends(request_scope)})
    assert events == ["enter one", "task", "exit one"]

    events.clear()
    await docket.add(task, key="two")()
    await run_all(docket, dependencies=[Depends(request_scope)])
    assert events == ["enter two", "task", "exit two"]


async def test_a_worker_retry_retries_every_task(docket: Docket) -> None:
    attempts: list[int] = []

    async def task(execution: Execution = CurrentExecution()) -> None:
        attempts.append(execution.attempt)
        if execution.attempt < 3:
            raise RuntimeError("again")

    await docket.add(task)()
    await run_all(docket, dependencies={"retry": Retry(attempts=5)})
    assert attempts == [1, 2, 3]


async def test_a_task_and_worker_retry_conflict(docket: Docket) -> None:
    ran: list[bool] = []

    async def task(retry: Retry = Retry(attempts=2)) -> None:
        ran.append(True)

    execution = await docket.add(task)()
    await run_all(docket, dependencies={"retry": Retry(attempts=5)})
    assert ran == []
    with pytest.raises(DependencyExceptionGroup, match="Only one Retry"):
        await execution.get_result()


# -- context ---------------------------------------------------------------------------


async def test_context_dependencies(docket: Docket) -> None:
    seen: dict[str, Any] = {}

    async def task(
        key: str = TaskKey(),
        current_docket: Docket = CurrentDocket(),
        worker: Worker = CurrentWorker(),
        execution: Execution = CurrentExecution(),
    ) -> None:
        seen.update(key=key, docket=current_docket, worker=worker, execution=execution)

    await docket.add(task, key="ctx")()
    async with fast_worker(docket, name="ctx-worker") as worker:
        await worker.run_until_finished()

    assert seen["key"] == "ctx"
    assert seen["docket"] is docket
    assert seen["worker"] is worker
    assert seen["execution"].key == "ctx"
    assert seen["execution"].function_name == "task"
    assert seen["execution"].attempt == 1


async def test_task_logger_in_a_run(docket: Docket, caplog: pytest.LogCaptureFixture) -> None:
    async def report(
        status: str,
        logger: TaskLoggerAdapter = TaskLogger(),
        via_depends: TaskLoggerAdapter = Depends(TaskLogger),
    ) -> None:
        logger.info("Service status", service_id="svc-1", status=status)
        via_depends.warning("stdlib style", extra={"detail": 3})

    await docket.add(report, key="log-key")("up")
    with caplog.at_level(logging.INFO, logger="docket.task.report"):
        async with fast_worker(docket, name="log-worker") as worker:
            await worker.run_until_finished()

    records = [r for r in caplog.records if r.name == "docket.task.report"]
    structured, plain = records
    assert structured.getMessage() == "Service status"
    assert structured.service_id == "svc-1"  # type: ignore[attr-defined]
    assert structured.status == "up"  # type: ignore[attr-defined]
    assert plain.detail == 3  # type: ignore[attr-defined]
    for record in records:
        assert record.__dict__["docket.key"] == "log-key"
        assert record.__dict__["docket.task"] == "report"
        assert record.__dict__["docket.worker"] == "log-worker"
        assert record.__dict__["docket.name"] == docket.name
        assert record.__dict__["docket.attempt"] == 1


async def test_progress_reports(docket: Docket) -> None:
    seen: list[tuple[int | None, int, str | None]] = []

    async def task(progress: Progress = Progress()) -> None:
        await progress.set_total(4)
        await progress.increment()
        await progress.increment(2)
        await progress.set_message("almost")
        seen.append((progress.current, progress.total, progress.message))

    await docket.add(task)()
    await run_all(docket)
    assert seen == [(3, 4, "almost")]
