"""Declaring dependencies: validation, the ``@Perpetual`` decorator, and the handlers'
own logic (Retry, Perpetual, Cron, Timeout) on stand-in executions. No engine needed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import pytest

from docket.dependencies import (
    Cron,
    Depends,
    ExponentialRetry,
    ForcedRetry,
    Perpetual,
    Retry,
    TaskOutcome,
    Timeout,
    current_execution,
    get_perpetual,
    validate_task,
    validate_worker_dependencies,
)
from docket.dependencies._retry import backoff_delay
from docket.execution import Disposition


class RecordingDocket:
    name = "stub-docket"

    def __init__(self, disposition: Disposition = Disposition.SCHEDULED) -> None:
        self.disposition = disposition
        self.calls: list[dict[str, Any]] = []
        # Stands in for the docket and its engine, which is what Retry reschedules through.
        self.engine = self

    async def reschedule(
        self,
        execution: Any,
        when: datetime,
        *,
        attempt: int | None = None,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> Disposition:
        self.calls.append({"when": when, "attempt": attempt, "args": args, "kwargs": kwargs})
        return self.disposition


class StubExecution:
    def __init__(self, attempt: int = 1, *args: Any, **kwargs: Any) -> None:
        self.docket = RecordingDocket()
        self.function_name = "task"
        self.key = "the-key"
        self.attempt = attempt
        self.generation = 3
        self.args = args
        self.kwargs = kwargs
        self.started_at: datetime | None = None

    def call_repr(self) -> str:
        return "task(...){the-key}"


async def entered[T](dependency: Any, execution: StubExecution) -> Any:
    """The per-run value of ``dependency`` for ``execution``."""
    token = current_execution.set(execution)  # type: ignore[arg-type]
    try:
        return await dependency.__aenter__()
    finally:
        current_execution.reset(token)


def failed(error: BaseException | None = None, seconds: float = 0.5) -> TaskOutcome:
    return TaskOutcome(duration=timedelta(seconds=seconds), exception=error or ValueError("x"))


def succeeded(seconds: float = 0.5) -> TaskOutcome:
    return TaskOutcome(duration=timedelta(seconds=seconds), result=1)


# -- validation ------------------------------------------------------------------------


def test_two_retries_are_rejected_naming_task_and_parameters() -> None:
    async def sync_everything(first: Retry = Retry(2), second: Retry = Retry(3)) -> None: ...

    with pytest.raises(ValueError) as caught:
        validate_task(sync_everything)
    message = str(caught.value)
    assert "Only one Retry dependency is allowed" in message
    assert "sync_everything" in message
    assert "'first'" in message and "'second'" in message


def test_a_retry_and_an_exponential_retry_conflict() -> None:
    async def task(a: Retry = Retry(2), b: ExponentialRetry = ExponentialRetry(2)) -> None: ...

    with pytest.raises(
        ValueError, match=r"Only one Retry .*'a' \(Retry\), .*'b' \(ExponentialRetry\)"
    ):
        validate_task(task)


def test_two_timeouts_conflict_even_in_metadata() -> None:
    async def task(
        a: Annotated[Timeout, Timeout(timedelta(seconds=1))],
        b: Timeout = Timeout(timedelta(seconds=2)),
    ) -> None: ...

    with pytest.raises(ValueError, match="Only one Timeout dependency is allowed"):
        validate_task(task)


def test_a_cron_and_a_perpetual_conflict() -> None:
    async def task(a: Perpetual = Perpetual(), b: Cron = Cron("@daily")) -> None: ...

    with pytest.raises(ValueError, match=r"Only one Perpetual .*'a'.*'b'"):
        validate_task(task)


def test_a_perpetual_parameter_and_the_decorator_conflict() -> None:
    async def task(perpetual: Perpetual = Perpetual()) -> None: ...

    with pytest.raises(ValueError, match=r"Only one Perpetual .*@Perpetual decorator"):
        Perpetual(interval=timedelta(seconds=1))(task)


def test_distinct_single_kinds_coexist() -> None:
    async def task(
        retry: Retry = Retry(2),
        timeout: Timeout = Timeout(timedelta(seconds=1)),
        perpetual: Perpetual = Perpetual(),
        other: int = Depends(lambda: 1),
        another: int = Depends(lambda: 2),
    ) -> None: ...

    validate_task(task)


def test_two_value_sources_for_one_parameter_are_rejected() -> None:
    async def task(value: Annotated[int, Depends(int)] = Depends(float)) -> None: ...  # type: ignore[assignment]

    with pytest.raises(ValueError, match="more than one dependency for its value"):
        validate_task(task)


def test_registration_validates() -> None:
    from docket import Docket

    async def task(a: Retry = Retry(2), b: Retry = Retry(3)) -> None: ...

    docket = Docket(name="validation-test", url="memory://validation-test")
    with pytest.raises(ValueError, match="Only one Retry"):
        docket.register(task)


def test_worker_dependencies_are_checked() -> None:
    assert validate_worker_dependencies(None) == {}
    named = validate_worker_dependencies({"retry": Retry(2)})
    assert list(named) == ["retry"]
    listed = validate_worker_dependencies([Retry(2), Timeout(timedelta(seconds=1))])
    assert len(listed) == 2
    with pytest.raises(ValueError, match="reserved"):
        validate_worker_dependencies({"__x": Retry(2)})
    with pytest.raises(TypeError, match="must be a Dependency"):
        validate_worker_dependencies({"x": 42})
    with pytest.raises(ValueError, match="Only one Retry"):
        validate_worker_dependencies([Retry(2), ExponentialRetry(3)])


# -- the Perpetual declaration ---------------------------------------------------------


def test_interval_is_a_synonym_of_every() -> None:
    assert Perpetual(interval=timedelta(seconds=5)).every == timedelta(seconds=5)
    perpetual = Perpetual(every=timedelta(seconds=5))
    assert perpetual.interval == timedelta(seconds=5)
    perpetual.interval = timedelta(seconds=9)
    assert perpetual.every == timedelta(seconds=9)
    with pytest.raises(ValueError, match="not both"):
        Perpetual(every=timedelta(seconds=1), interval=timedelta(seconds=2))


EVERY_THREE_SECONDS = Perpetual(every=timedelta(seconds=3), automatic=True)


def test_get_perpetual_finds_every_form() -> None:
    declared = EVERY_THREE_SECONDS

    async def as_default(perpetual: Perpetual = declared) -> None: ...

    async def as_metadata(perpetual: Annotated[Perpetual, EVERY_THREE_SECONDS]) -> None: ...

    @Perpetual(interval=timedelta(minutes=5), automatic=True)
    async def as_decorator() -> None: ...

    async def plain() -> None: ...

    assert get_perpetual(as_default) is declared
    assert get_perpetual(as_metadata) is declared
    decorated = get_perpetual(as_decorator)
    assert decorated is not None
    assert decorated.automatic and decorated.every == timedelta(minutes=5)
    assert get_perpetual(plain) is None
    cron = Cron("@hourly")

    async def on_cron(cron: Cron = cron) -> None: ...

    assert get_perpetual(on_cron) is cron


def test_the_decorator_returns_the_function_itself() -> None:
    async def task(x: int = 1) -> int:
        return x

    marked = Perpetual(interval=timedelta(seconds=1))(task)
    assert marked is task


def test_the_decorator_composes_with_docket_add_in_either_order() -> None:
    from docket import Docket

    docket = Docket(name="decorator-test", url="memory://decorator-test")

    @docket.add
    @Perpetual(interval=timedelta(seconds=10), automatic=True)
    async def below() -> None: ...

    @Perpetual(interval=timedelta(seconds=20))
    @docket.add
    async def above() -> None: ...

    below_perpetual = get_perpetual(docket.tasks["below"])
    above_perpetual = get_perpetual(docket.tasks["above"])
    assert below_perpetual is not None and below_perpetual.every == timedelta(seconds=10)
    assert above_perpetual is not None and above_perpetual.every == timedelta(seconds=20)


# -- Retry -----------------------------------------------------------------------------


async def test_retry_schedules_the_next_attempt_after_the_delay() -> None:
    execution = StubExecution(attempt=1)
    retry = await entered(Retry(attempts=3, delay=timedelta(seconds=30)), execution)
    assert retry.attempt == 1

    before = datetime.now(UTC)
    assert await retry.handle_failure(execution, failed()) is True
    (call,) = execution.docket.calls
    assert call["attempt"] == 2
    assert (
        before + timedelta(seconds=30) <= call["when"] <= datetime.now(UTC) + timedelta(seconds=30)
    )


async def test_retry_gives_up_when_attempts_are_spent() -> None:
    execution = StubExecution(attempt=3)
    retry = await entered(Retry(attempts=3), execution)
    assert await retry.handle_failure(execution, failed()) is False
    assert execution.docket.calls == []


async def test_retry_forever_never_gives_up() -> None:
    forever = Retry.forever(delay=timedelta(seconds=1))
    assert forever.attempts is None
    execution = StubExecution(attempt=1000)
    retry = await entered(forever, execution)
    assert await retry.handle_failure(execution, failed()) is True
    assert execution.docket.calls[0]["attempt"] == 1001


async def test_a_superseded_retry_is_still_handled() -> None:
    execution = StubExecution(attempt=1)
    execution.docket.disposition = Disposition.SUPERSEDED
    retry = await entered(Retry(attempts=3), execution)
    assert await retry.handle_failure(execution, failed()) is True


def test_retry_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Retry(attempts=0)


async def test_forcing_a_retry_from_inside_the_task() -> None:
    execution = StubExecution(attempt=1)
    retry = await entered(Retry(attempts=2), execution)
    with pytest.raises(ForcedRetry):
        retry.after(timedelta(minutes=2))
    assert retry.delay == timedelta(minutes=2)

    later = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(ForcedRetry):
        retry.at(later)
    assert timedelta(minutes=59) < retry.delay <= timedelta(hours=1)

    with pytest.raises(ForcedRetry):
        retry.at(datetime.now(UTC) - timedelta(hours=1))
    assert retry.delay == timedelta(0)


def test_exponential_backoff() -> None:
    one, sixty_four = timedelta(seconds=1), timedelta(seconds=64)
    delays = [backoff_delay(one, sixty_four, attempt) for attempt in range(1, 10)]
    assert delays == [timedelta(seconds=s) for s in (1, 2, 4, 8, 16, 32, 64, 64, 64)]
    assert backoff_delay(one, sixty_four, 10_000) == sixty_four
    assert backoff_delay(timedelta(0), sixty_four, 5) == timedelta(0)


async def test_exponential_retry_values_carry_their_attempts_delay() -> None:
    declared = ExponentialRetry(
        attempts=5, minimum_delay=timedelta(seconds=2), maximum_delay=timedelta(seconds=10)
    )
    delays = [(await entered(declared, StubExecution(attempt=n))).delay for n in (1, 2, 3, 4)]
    assert delays == [timedelta(seconds=s) for s in (2, 4, 8, 10)]
    assert ExponentialRetry.forever(delay=timedelta(seconds=3)).attempts is None


# -- Perpetual and Cron ----------------------------------------------------------------


async def test_perpetual_schedules_every_after_the_start() -> None:
    execution = StubExecution(1, "a", b=2)
    perpetual = await entered(Perpetual(every=timedelta(minutes=10)), execution)
    # The run began `duration` before it completed; the next one is due `every` after that.
    before = datetime.now(UTC)
    assert await perpetual.on_complete(execution, succeeded(0.5)) is True
    after = datetime.now(UTC)
    (call,) = execution.docket.calls
    began = timedelta(seconds=0.5)
    assert before - began + timedelta(minutes=10) <= call["when"]
    assert call["when"] <= after - began + timedelta(minutes=10)
    assert call["attempt"] == 1
    assert call["args"] == ("a",)
    assert call["kwargs"] == {"b": 2}


async def test_perpetual_runs_late_tasks_again_right_away() -> None:
    execution = StubExecution()
    execution.started_at = datetime.now(UTC) - timedelta(hours=1)
    perpetual = await entered(Perpetual(every=timedelta(minutes=10)), execution)
    before = datetime.now(UTC)
    await perpetual.on_complete(execution, failed())
    assert execution.docket.calls[0]["when"] >= before


async def test_perpetual_steering() -> None:
    execution = StubExecution(1, "old")
    perpetual = await entered(Perpetual(every=timedelta(minutes=10)), execution)
    perpetual.perpetuate("new", flag=True)
    before = datetime.now(UTC)
    perpetual.after(timedelta(seconds=30))
    await perpetual.on_complete(execution, succeeded())
    call = execution.docket.calls[0]
    assert call["args"] == ("new",) and call["kwargs"] == {"flag": True}
    assert before + timedelta(seconds=30) <= call["when"] < before + timedelta(seconds=31)

    execution = StubExecution()
    perpetual = await entered(Perpetual(), execution)
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    perpetual.at(moment)
    await perpetual.on_complete(execution, succeeded())
    assert execution.docket.calls[0]["when"] == moment


async def test_a_cancelled_perpetual_stops() -> None:
    execution = StubExecution()
    declared = Perpetual(every=timedelta(seconds=1))
    perpetual = await entered(declared, execution)
    perpetual.cancel()
    assert await perpetual.on_complete(execution, succeeded()) is False
    assert execution.docket.calls == []
    # The declaration is untouched: the next run's value is not cancelled.
    assert not (await entered(declared, StubExecution())).cancelled


async def test_every_is_mutable_per_run() -> None:
    execution = StubExecution()
    declared = Perpetual(every=timedelta(minutes=1))
    perpetual = await entered(declared, execution)
    perpetual.every = timedelta(minutes=7)
    before = datetime.now(UTC)
    await perpetual.on_complete(execution, succeeded(0))
    after = datetime.now(UTC)
    when = execution.docket.calls[0]["when"]
    assert before + timedelta(minutes=7) <= when <= after + timedelta(minutes=7)
    assert declared.every == timedelta(minutes=1)


async def test_cron_schedules_the_next_matching_time() -> None:
    execution = StubExecution()
    cron = await entered(Cron("@hourly"), execution)
    await cron.on_complete(execution, succeeded())
    when = execution.docket.calls[0]["when"]
    now = datetime.now(UTC)
    assert now < when <= now + timedelta(hours=1)
    assert (when.minute, when.second) == (0, 0)


# -- Timeout ---------------------------------------------------------------------------


async def test_timeout_cancels_a_slow_run() -> None:
    execution = StubExecution()
    timeout = await entered(Timeout(timedelta(milliseconds=50)), execution)
    cancelled: list[bool] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError, match="the-key exceeded its timeout"):
        await timeout.run(execution, slow, (), {})
    assert asyncio.get_running_loop().time() - started < 1
    assert cancelled == [True]


async def test_timeout_returns_what_a_quick_run_returns() -> None:
    execution = StubExecution()
    timeout = await entered(Timeout(timedelta(seconds=5)), execution)

    async def quick(a: int, b: int) -> int:
        return a + b

    assert await timeout.run(execution, quick, (1,), {"b": 2}) == 3

    def not_async() -> str:
        return "sync"

    assert await timeout.run(execution, not_async, (), {}) == "sync"


async def test_timeout_can_be_extended_from_inside() -> None:
    execution = StubExecution()
    timeout = await entered(Timeout(timedelta(milliseconds=100)), execution)
    assert timeout.remaining() == timedelta(milliseconds=100)

    async def needs_more() -> str:
        assert timedelta(0) < timeout.remaining() <= timedelta(milliseconds=100)
        timeout.extend(timedelta(milliseconds=300))
        assert timeout.remaining() > timedelta(milliseconds=300)
        await asyncio.sleep(0.2)
        timeout.extend()
        await asyncio.sleep(0.15)
        return "done"

    assert await timeout.run(execution, needs_more, (), {}) == "done"


async def test_the_tasks_own_timeout_error_is_not_rewritten() -> None:
    execution = StubExecution()
    timeout = await entered(Timeout(timedelta(seconds=5)), execution)

    async def gives_up() -> None:
        raise TimeoutError("upstream did not answer")

    with pytest.raises(TimeoutError, match="upstream did not answer"):
        await timeout.run(execution, gives_up, (), {})


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Timeout(timedelta(0))
