"""The built-in tasks, fallback tasks for unknown names, worker-level dependencies,
``Logged`` arguments and ``single`` dependency conflicts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import pytest
from _helpers import wait_for

from docket import (
    CurrentDocket,
    CurrentExecution,
    CurrentWorker,
    Depends,
    Docket,
    Execution,
    ExecutionState,
    ExponentialRetry,
    Logged,
    Perpetual,
    Retry,
    TaskKey,
    TaskLogger,
    Timeout,
    Worker,
)
from docket.dependencies import TaskLoggerAdapter
from docket.tasks import fail, sleep, standard_tasks, trace


def fast_worker(docket: Docket, **options: Any) -> Worker:
    options.setdefault("minimum_check_interval", timedelta(milliseconds=5))
    options.setdefault("scheduling_resolution", timedelta(milliseconds=5))
    return Worker(docket, **options)


# --- built-in tasks ------------------------------------------------------------------------


def test_standard_tasks_are_trace_fail_and_sleep() -> None:
    assert standard_tasks == [trace, fail, sleep]


async def test_every_docket_knows_the_built_in_tasks(docket: Docket) -> None:
    assert docket.tasks["trace"] is trace
    assert docket.tasks["fail"] is fail
    assert docket.tasks["sleep"] is sleep


async def test_register_collection_loads_the_standard_tasks(docket_name: str) -> None:
    docket = Docket(name=docket_name, url="memory://standard-tasks")
    docket.tasks.clear()
    docket.register_collection("docket.tasks:standard_tasks")
    assert docket.tasks == {"trace": trace, "fail": fail, "sleep": sleep}


async def test_trace_logs_its_message(
    docket: Docket, worker: Worker, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    execution = await docket.add("trace", key="tracer")("hello from the trace task")
    await worker.run_until_finished()

    records = [r for r in caplog.records if r.name == "docket.task.trace"]
    # As released: the message, then where it ran and how late.
    (message,) = [r.getMessage() for r in records]
    assert message.startswith("hello from the trace task: 'tracer' added to docket ")
    assert message.endswith(f"now running on worker {worker.name!r}")
    assert getattr(records[0], "docket.key") == "tracer"
    await execution.sync()
    assert execution.state == ExecutionState.COMPLETED


async def test_fail_fails_with_its_message(docket: Docket, worker: Worker, url: str) -> None:
    execution = await docket.add(fail)("this is on purpose")
    await worker.run_until_finished()

    await execution.sync()
    assert execution.state == ExecutionState.FAILED
    assert execution.error is not None and "this is on purpose" in execution.error
    with pytest.raises(Exception, match="this is on purpose"):
        await execution.get_result()


async def test_sleep_takes_its_time(docket: Docket, worker: Worker, url: str) -> None:
    execution = await docket.add("sleep")(0.3)
    began = time.monotonic()
    await worker.run_until_finished()

    assert time.monotonic() - began >= 0.3
    await execution.sync()
    assert execution.state == ExecutionState.COMPLETED
    assert execution.started_at is not None and execution.completed_at is not None
    assert execution.completed_at - execution.started_at >= timedelta(seconds=0.3)


async def test_built_in_arguments_are_logged(docket: Docket) -> None:
    assert (await docket.add("trace", key="k")("hi")).call_repr() == "trace('hi'){k}"
    assert (await docket.add(fail, key="f")("boom")).call_repr() == "fail('boom'){f}"
    assert (await docket.add(sleep, key="s")(1.5)).call_repr() == "sleep(1.5){s}"


# --- fallback tasks ------------------------------------------------------------------------


async def test_unknown_tasks_go_to_the_fallback_with_full_dependency_injection(
    docket: Docket, docket_name: str, url: str
) -> None:
    seen: list[dict[str, Any]] = []
    contexts: list[str] = []

    async def resource() -> AsyncIterator[str]:
        contexts.append("enter")
        try:
            yield "the-resource"
        finally:
            contexts.append("exit")

    async def fallback(
        *args: Any,
        execution: Execution = CurrentExecution(),
        key: str = TaskKey(),
        current_docket: Docket = CurrentDocket(),
        current_worker: Worker = CurrentWorker(),
        logger: TaskLoggerAdapter = TaskLogger(),
        thing: str = Depends(resource),
        retry: Retry = Retry(attempts=2),
        **kwargs: Any,
    ) -> str:
        seen.append(
            {
                "function_name": execution.function_name,
                "args": args,
                "kwargs": kwargs,
                "key": key,
                "docket": current_docket.name,
                "worker": current_worker.name,
                "logger": logger.logger.name,
                "thing": thing,
                "attempt": retry.attempt,
            }
        )
        if retry.attempt == 1:
            raise RuntimeError("first attempt fails")
        return f"handled {execution.function_name}"

    # Another service knows a task this process does not.
    async def somebody_elses_task(a: int, b: int, *, c: str) -> None:
        raise AssertionError("never runs here")  # pragma: no cover

    async with Docket(name=docket_name, url=docket.url) as producer:
        execution = await producer.add(somebody_elses_task, key="foreign")(1, 2, c="three")
    assert "somebody_elses_task" not in docket.tasks

    async with fast_worker(docket, fallback_task=fallback, name="fallback-worker") as worker:
        await worker.run_until_finished()

    assert [s["attempt"] for s in seen] == [1, 2], "the fallback's Retry should apply"
    for call in seen:
        assert call["function_name"] == "somebody_elses_task"
        assert call["args"] == (1, 2)
        assert call["kwargs"] == {"c": "three"}
        assert call["key"] == "foreign"
        assert call["docket"] == docket.name
        assert call["worker"] == "fallback-worker"
        assert call["logger"] == "docket.task.somebody_elses_task"
        assert call["thing"] == "the-resource"
    assert contexts == ["enter", "exit", "enter", "exit"]
    stored = await docket.get_execution("foreign")
    assert stored is not None
    assert stored.state == ExecutionState.COMPLETED
    assert stored.function_name == "somebody_elses_task"
    assert await execution.get_result(timeout=5) == "handled somebody_elses_task"


async def test_a_synchronous_fallback_works_too(docket: Docket, docket_name: str) -> None:
    names: list[str] = []

    def fallback(*args: Any, execution: Execution = CurrentExecution(), **kwargs: Any) -> None:
        names.append(execution.function_name)

    async with Docket(name=docket_name, url=docket.url) as producer:
        producer.register(trace, names=["not_known_here"])
        await producer.add("not_known_here")("x")
    async with fast_worker(docket, fallback_task=fallback) as worker:
        await worker.run_until_finished()
    assert names == ["not_known_here"]


async def test_without_a_fallback_unknown_tasks_are_dead_lettered_and_the_worker_goes_on(
    docket: Docket, docket_name: str, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ran: list[str] = []

    async def known(tag: str) -> None:
        ran.append(tag)

    async def unknown(tag: str) -> None:
        raise AssertionError("never runs")  # pragma: no cover

    async with Docket(name=docket_name, url=docket.url) as producer:
        await producer.add(unknown, key="mystery")("lost")

    worker = fast_worker(docket)
    async with worker:
        runner = asyncio.create_task(worker.run_forever())
        try:
            async with docket.redis() as redis:
                await wait_for(
                    lambda: redis.xlen(f"{{{docket_name}}}:dead-letters"), what="a dead letter"
                )
                await docket.add(known)("after")
                await wait_for(lambda: ran == ["after"], what="the next task to run")
                assert not runner.done(), "the worker stopped"
                dead = await redis.xrange(f"{{{docket_name}}}:dead-letters", "-", "+")
        finally:
            worker.stop()
            await asyncio.wait_for(runner, 10)

    [(_, fields)] = dead
    assert b"unknown task" in fields[b"reason"]
    assert fields[b"field:function"] == b"unknown"
    assert fields[b"field:key"] == b"mystery"
    stored = await docket.get_execution("mystery")
    assert stored is not None
    assert stored.state == ExecutionState.FAILED
    assert stored.error is not None and "dead-letter" in stored.error
    assert any("unknown task" in r.getMessage() for r in caplog.records)
    async with docket.redis() as redis:
        assert await redis.xlen(docket.keys.stream) == 0, "the message should leave the stream"


# --- worker-level dependencies ----------------------------------------------------------------


events: list[str] = []


async def around_every_task(
    execution: Execution = CurrentExecution(),
) -> AsyncIterator[str]:
    events.append(f"enter {execution.function_name}")
    try:
        yield "value"
    except Exception as error:
        events.append(f"saw {error}")
        raise
    finally:
        events.append(f"exit {execution.function_name}")


async def second_wrapper(key: str = TaskKey()) -> str:
    events.append(f"second {key}")
    return "second"


async def first_task(tag: str) -> None:
    events.append(f"run first_task {tag}")


async def second_task() -> None:
    events.append("run second_task")


async def failing_task() -> None:
    events.append("run failing_task")
    raise RuntimeError("failing on purpose")


@pytest.fixture(autouse=True)
def _reset_events() -> None:
    events.clear()


@pytest.mark.parametrize("form", ["list", "dict"])
async def test_worker_dependencies_wrap_every_task(docket: Docket, url: str, form: str) -> None:
    dependencies: Any
    if form == "list":
        dependencies = [Depends(around_every_task), Depends(second_wrapper)]
    else:
        dependencies = {"around": Depends(around_every_task), "second": Depends(second_wrapper)}
    await docket.add(first_task, key="one")("a")
    await docket.add(second_task, key="two", when=datetime.now(UTC) + timedelta(milliseconds=50))()
    await docket.add(failing_task, key="three", when=datetime.now(UTC) + timedelta(seconds=0.1))()

    async with fast_worker(docket, dependencies=dependencies, concurrency=1) as worker:
        await worker.run_until_finished()

    assert events == [
        "enter first_task",
        "second one",
        "run first_task a",
        "exit first_task",
        "enter second_task",
        "second two",
        "run second_task",
        "exit second_task",
        "enter failing_task",
        "second three",
        "run failing_task",
        "saw failing on purpose",
        "exit failing_task",
    ]


async def test_worker_dependencies_are_not_passed_to_tasks(docket: Docket) -> None:
    received: list[dict[str, Any]] = []

    async def task(**kwargs: Any) -> None:
        received.append(kwargs)

    await docket.add(task)(given=1)
    async with fast_worker(docket, dependencies={"around": Depends(around_every_task)}) as worker:
        await worker.run_until_finished()
    assert received == [{"given": 1}]
    assert events == ["enter task", "exit task"]


async def test_a_worker_level_retry_retries_every_task(docket: Docket) -> None:
    attempts: list[int] = []

    async def flaky(execution: Execution = CurrentExecution()) -> None:
        attempts.append(execution.attempt)
        if execution.attempt < 3:
            raise RuntimeError("again")

    execution = await docket.add(flaky)()
    async with fast_worker(docket, dependencies=[Retry(attempts=3)]) as worker:
        await worker.run_until_finished()
    assert attempts == [1, 2, 3]
    await execution.sync()
    assert execution.state == ExecutionState.COMPLETED


async def test_worker_dependency_names_and_types_are_checked(docket: Docket) -> None:
    with pytest.raises(ValueError, match="reserved"):
        Worker(docket, dependencies={"__mine": Depends(second_wrapper)})
    with pytest.raises(TypeError, match="Dependency"):
        Worker(docket, dependencies=[second_wrapper])
    with pytest.raises(ValueError, match="Retry"):
        Worker(docket, dependencies=[Retry(attempts=2), ExponentialRetry(attempts=3)])


# --- Logged arguments ------------------------------------------------------------------------


async def sign_up(
    email: Annotated[str, Logged],
    password: str,
    tags: Annotated[list[str], Logged(length_only=True)],
    *,
    plan: Annotated[str, Logged] = "free",
    token: str = "",
) -> None:
    pass


SECRET = "s3cret-password"
TOKEN = "tok-abcdef"


async def test_call_repr_shows_only_logged_arguments(docket: Docket) -> None:
    execution = await docket.add(sign_up, key="signup")(
        "ada@example.com", SECRET, ["alpha", "beta", "gamma"], plan="pro", token=TOKEN
    )
    assert (
        execution.call_repr()
        == "sign_up('ada@example.com', ..., [len 3], plan='pro', token=...){signup}"
    )


async def test_worker_log_lines_show_only_logged_arguments(
    docket: Docket, worker: Worker, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="docket")
    await docket.add(sign_up, key="signup")(
        "ada@example.com", SECRET, ["alpha", "beta", "gamma"], plan="pro", token=TOKEN
    )
    await worker.run_until_finished()

    lines = [r.getMessage() for r in caplog.records if r.name.startswith("docket")]
    expected = "sign_up('ada@example.com', ..., [len 3], plan='pro', token=...){signup}"
    assert any(line.startswith("↪") and expected in line for line in lines), lines
    assert any(line.startswith("↩") and expected in line for line in lines), lines
    for line in lines:
        assert SECRET not in line and TOKEN not in line and "alpha" not in line


async def test_length_only_shows_a_value_without_a_length_as_released(docket: Docket) -> None:
    async def count(things: Annotated[Any, Logged(length_only=True)]) -> None:
        pass

    execution = await docket.add(count, key="n")(42)
    assert execution.call_repr() == "count(42){n}"
    execution = await docket.add(count, key="d")({"a": 1, "b": 2})
    assert execution.call_repr() == "count({len 2}){d}"


# --- single dependencies ---------------------------------------------------------------------


async def two_retries(
    first: Retry = Retry(attempts=2),
    second: Retry = Retry(attempts=3),
) -> None:
    pass  # pragma: no cover


async def retry_and_exponential(
    first: Retry = Retry(attempts=2),
    second: ExponentialRetry = ExponentialRetry(attempts=3),
) -> None:
    pass  # pragma: no cover


async def two_timeouts(
    first: Timeout = Timeout(timedelta(seconds=1)),
    second: Annotated[None, Timeout(timedelta(seconds=2))] = None,
) -> None:
    pass  # pragma: no cover


async def perpetual_twice(
    once: Perpetual = Perpetual(every=timedelta(seconds=1)),
    again: Perpetual = Perpetual(every=timedelta(seconds=2)),
) -> None:
    pass  # pragma: no cover


def test_the_perpetual_decorator_refuses_a_second_perpetual_at_once() -> None:
    async def with_parameter(again: Perpetual = Perpetual(every=timedelta(seconds=2))) -> None:
        pass  # pragma: no cover

    with pytest.raises(ValueError, match="Perpetual"):
        Perpetual(every=timedelta(seconds=1))(with_parameter)


@pytest.mark.parametrize(
    ("task", "kind"),
    [
        (two_retries, "Retry"),
        (retry_and_exponential, "Retry"),
        (two_timeouts, "Timeout"),
        (perpetual_twice, "Perpetual"),
    ],
)
async def test_conflicting_single_dependencies_fail_at_register(
    docket: Docket, task: Any, kind: str
) -> None:
    with pytest.raises(ValueError, match=kind) as raised:
        docket.register(task)
    assert task.__name__ in str(raised.value)
    assert task.__name__ not in docket.tasks
    with pytest.raises(ValueError, match=kind):
        await docket.add(task)()
    assert (await docket.snapshot()).total_tasks == 0


async def test_distinct_single_kinds_coexist(docket: Docket) -> None:
    async def fine(
        retry: Retry = Retry(attempts=2),
        timeout: Timeout = Timeout(timedelta(seconds=5)),
    ) -> None:
        pass

    docket.register(fine)
    assert docket.tasks["fine"] is fine
