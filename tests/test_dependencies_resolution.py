"""The injector on its own: ``resolved_dependencies`` with stand-in worker and execution.

These pin down resolution semantics without the engine; the tests named
``test_dependencies_in_*`` check the same behaviour through a real worker.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Annotated, Any

import pytest

from docket.dependencies import (
    AdmissionBlocked,
    CallArgument,
    CompletionHandler,
    CurrentDocket,
    CurrentExecution,
    CurrentWorker,
    CycleError,
    Dependency,
    DependencyExceptionGroup,
    Depends,
    ExponentialRetry,
    Perpetual,
    Retry,
    Shared,
    TaskArgument,
    TaskKey,
    TaskLogger,
    TaskLoggerAdapter,
    Timeout,
    WorkerShared,
    current_docket,
    current_execution,
    current_worker,
    get_dependency_parameters,
    resolved_dependencies,
)


class StubDocket:
    name = "stub-docket"


class StubWorker:
    def __init__(self, dependencies: dict[str, Dependency[Any]] | None = None) -> None:
        self.name = "stub-worker"
        self.docket = StubDocket()
        self.shared = WorkerShared()
        self.dependencies = dependencies or {}


class StubExecution:
    def __init__(
        self, function: Callable[..., Any], *args: Any, attempt: int = 1, **kwargs: Any
    ) -> None:
        self.function = function
        self.function_name = function.__name__
        self.args = args
        self.kwargs = kwargs
        self.key = f"key-of-{function.__name__}"
        self.attempt = attempt
        self.generation = 1
        self.when = datetime.now(UTC)
        self.started_at: datetime | None = None
        self.worker = "stub-worker"
        self.docket = StubDocket()
        self.progress = None

    def call_repr(self) -> str:
        return f"{self.function_name}(...)"


def resolve(
    function: Callable[..., Any],
    *args: Any,
    worker: StubWorker | None = None,
    **kwargs: Any,
) -> Any:
    """``resolved_dependencies`` for a call of ``function(*args, **kwargs)``."""
    worker = worker or StubWorker()
    execution = StubExecution(function, *args, **kwargs)
    return resolved_dependencies(worker, execution, worker.dependencies)  # type: ignore[arg-type]


# -- which parameters are resolved ----------------------------------------------------


async def test_only_parameters_the_caller_did_not_supply_are_resolved() -> None:
    calls: list[str] = []

    def make(name: str) -> Callable[[], str]:
        def factory() -> str:
            calls.append(name)
            return f"from-{name}"

        factory.__name__ = f"make_{name}"
        return factory

    make_a, make_b, make_c = make("a"), make("b"), make("c")

    async def task(
        a: str = Depends(make_a), b: str = Depends(make_b), c: str = Depends(make_c)
    ) -> None: ...

    async with resolve(task, "positional", c="keyword") as resolved:
        assert resolved.arguments == {"b": "from-b"}
    assert calls == ["b"]


def the_answer() -> int:
    return 42


async def test_annotated_metadata_declares_dependencies() -> None:
    # With string annotations (``from __future__ import annotations``), names used in
    # ``Annotated`` metadata must be importable from the module, as for FastAPI.
    async def task(
        value: Annotated[int, Depends(the_answer)],
        key: Annotated[str, TaskKey()],
        plain: int = 1,
    ) -> None: ...

    assert set(get_dependency_parameters(task)) == {"value", "key"}
    async with resolve(task) as resolved:
        assert resolved.arguments == {"value": 42, "key": "key-of-task"}


async def test_context_dependencies_and_variables() -> None:
    async def task(
        docket: Any = CurrentDocket(),
        worker: Any = CurrentWorker(),
        execution: Any = CurrentExecution(),
        key: str = TaskKey(),
    ) -> None: ...

    stub = StubWorker()
    execution = StubExecution(task)
    async with resolved_dependencies(stub, execution) as resolved:  # type: ignore[arg-type]
        assert resolved.arguments == {
            "docket": stub.docket,
            "worker": stub,
            "execution": execution,
            "key": "key-of-task",
        }
        assert current_worker.get() is stub
        assert current_docket.get() is stub.docket
        assert current_execution.get() is execution
    assert current_worker.get(None) is None
    assert current_execution.get(None) is None


async def test_a_task_with_no_dependencies_still_sees_the_context_variables() -> None:
    """A task that declares nothing skips resolution, not the run's context."""

    async def task(order: int, note: str = "") -> None: ...

    stub = StubWorker()
    execution = StubExecution(task)
    async with resolved_dependencies(stub, execution) as resolved:  # type: ignore[arg-type]
        assert resolved.arguments == {}
        assert resolved.runtime is None
        assert resolved.failure_handler is None
        assert resolved.completion_handler is None
        assert current_worker.get() is stub
        assert current_docket.get() is stub.docket
        assert current_execution.get() is execution
    assert current_worker.get(None) is None
    assert current_docket.get(None) is None
    assert current_execution.get(None) is None


async def test_task_logger_works_as_default_and_through_depends() -> None:
    async def task(
        direct: TaskLoggerAdapter = TaskLogger(),
        indirect: TaskLoggerAdapter = Depends(TaskLogger),
    ) -> None: ...

    async with resolve(task) as resolved:
        for name in ("direct", "indirect"):
            logger = resolved.arguments[name]
            assert isinstance(logger, TaskLoggerAdapter)
            assert logger.logger.name == "docket.task.task"
            assert logger.extra == {
                "docket.name": "stub-docket",
                "docket.worker": "stub-worker",
                "docket.task": "task",
                "docket.key": "key-of-task",
                "docket.attempt": 1,
            }


# -- Depends ---------------------------------------------------------------------------


async def test_every_kind_of_dependency_function() -> None:
    events: list[str] = []

    def sync_value() -> str:
        return "sync"

    async def async_value() -> str:
        return "async"

    def sync_generator() -> Iterator[str]:
        events.append("enter sync generator")
        yield "sync generator"
        events.append("exit sync generator")

    async def async_generator() -> AsyncIterator[str]:
        events.append("enter async generator")
        yield "async generator"
        events.append("exit async generator")

    @asynccontextmanager
    async def context_manager() -> AsyncIterator[str]:
        events.append("enter context manager")
        yield "context manager"
        events.append("exit context manager")

    async def task(
        a: str = Depends(sync_value),
        b: str = Depends(async_value),
        c: str = Depends(sync_generator),
        d: str = Depends(async_generator),
        e: str = Depends(context_manager),
    ) -> None: ...

    async with resolve(task) as resolved:
        assert list(resolved.arguments.values()) == [
            "sync",
            "async",
            "sync generator",
            "async generator",
            "context manager",
        ]
        events.append("task")
    assert events == [
        "enter sync generator",
        "enter async generator",
        "enter context manager",
        "task",
        "exit context manager",
        "exit async generator",
        "exit sync generator",
    ]


async def test_the_task_exception_is_thrown_into_generators() -> None:
    seen: list[BaseException] = []

    async def guarded() -> AsyncIterator[str]:
        try:
            yield "value"
        except Exception as error:
            seen.append(error)
            raise

    def sync_guarded() -> Iterator[str]:
        try:
            yield "value"
        except Exception as error:
            seen.append(error)
            raise

    async def task(a: str = Depends(guarded), b: str = Depends(sync_guarded)) -> None: ...

    failure = ValueError("task failed")
    with pytest.raises(ValueError, match="task failed"):
        async with resolve(task):
            raise failure
    assert seen == [failure, failure]


async def test_nested_dependencies_are_resolved_once_per_run() -> None:
    calls: list[str] = []

    async def connection() -> AsyncIterator[str]:
        calls.append("connect")
        yield "connection"
        calls.append("disconnect")

    def repository(conn: str = Depends(connection)) -> str:
        return f"repository({conn})"

    async def service(repo: str = Depends(repository), conn: str = Depends(connection)) -> str:
        return f"service({repo}, {conn})"

    async def task(svc: str = Depends(service), conn: str = Depends(connection)) -> None: ...

    async with resolve(task) as resolved:
        assert resolved.arguments == {
            "svc": "service(repository(connection), connection)",
            "conn": "connection",
        }
    assert calls == ["connect", "disconnect"]

    async with resolve(task):
        pass
    assert calls == ["connect", "disconnect", "connect", "disconnect"]


async def test_bindings_pass_values_and_dependencies_to_the_function() -> None:
    calls: list[tuple[str, int]] = []

    def account(user_id: str, factor: int = 1) -> str:
        calls.append((user_id, factor))
        return f"{user_id}*{factor}"

    async def task(
        owner: str,
        mine: str = Depends(account, user_id=CallArgument("owner")),
        again: str = Depends(account, user_id=CallArgument("owner")),
        tripled: str = Depends(account, user_id=CallArgument("owner"), factor=3),
        fixed: str = Depends(account, user_id="root"),
    ) -> None: ...

    async with resolve(task, "alice") as resolved:
        assert resolved.arguments == {
            "mine": "alice*1",
            "again": "alice*1",
            "tripled": "alice*3",
            "fixed": "root*1",
        }
    # Equal bindings share one value; different ones do not.
    assert sorted(calls) == [("alice", 1), ("alice", 3), ("root", 1)]


async def test_a_bare_call_argument_binding_reads_the_parameter_it_binds() -> None:
    def greeting(name: str) -> str:
        return f"hello {name}"

    async def task(name: str, text: str = Depends(greeting, name=CallArgument())) -> None: ...

    async with resolve(task, name="bob") as resolved:
        assert resolved.arguments == {"text": "hello bob"}


async def test_a_bound_parameter_does_not_resolve_its_own_dependency() -> None:
    def expensive() -> str:
        raise AssertionError("must not be called")

    def label(value: str = Depends(expensive)) -> str:
        return value.upper()

    async def task(text: str = Depends(label, value="bound")) -> None: ...

    async with resolve(task) as resolved:
        assert resolved.arguments == {"text": "BOUND"}


async def test_circular_dependencies_fail_with_a_clear_error() -> None:
    def chicken(egg: str) -> str:
        return egg

    def egg(chicken: str = Depends(chicken)) -> str:
        return chicken

    # Close the loop after both exist: chicken -> egg -> chicken.
    chicken.__defaults__ = (Depends(egg),)

    async def task(value: str = Depends(chicken)) -> None: ...

    with pytest.raises(DependencyExceptionGroup) as caught:
        async with resolve(task):
            pass
    assert isinstance(caught.value.exceptions[0], CycleError)
    message = str(caught.value)
    assert "Circular dependency" in message
    assert "Depends(" in message and "chicken" in message and "egg" in message
    assert "parameter(s): value" in message


# -- failures --------------------------------------------------------------------------


async def test_a_failing_dependency_names_the_parameter_and_the_error() -> None:
    events: list[str] = []

    async def opened() -> AsyncIterator[str]:
        events.append("open")
        try:
            yield "resource"
        except DependencyExceptionGroup:
            events.append("saw failure")
            raise
        finally:
            events.append("close")

    def broken() -> str:
        raise ConnectionError("database is down")

    def never() -> str:
        events.append("never")
        return "x"

    async def task(
        resource: str = Depends(opened),
        database: str = Depends(broken),
        later: str = Depends(never),
        retry: Retry = Retry(attempts=3),
    ) -> None: ...

    resolution = resolve(task)
    with pytest.raises(DependencyExceptionGroup) as caught:
        async with resolution:
            raise AssertionError("the task must not run")

    error = caught.value
    assert error.parameters == ("database",)
    assert len(error.exceptions) == 1
    assert isinstance(error.exceptions[0], ConnectionError)
    assert str(error).startswith("Failed to resolve dependencies for parameter(s): database")
    assert "ConnectionError: database is down" in str(error)
    # Every parameter is tried (so one error names every broken one), and what was
    # opened is closed; the failure handler stays available so the run can be retried.
    assert events == ["open", "never", "saw failure", "close"]
    assert isinstance(resolution.failure_handler, Retry)
    assert resolution.failure_handler.attempts == 3
    assert current_execution.get(None) is None


async def test_admission_blocked_is_not_wrapped() -> None:
    class Gate(Dependency[None]):
        async def __aenter__(self) -> None:
            raise AdmissionBlocked(current_execution.get(), "closed gate")

    async def task(gate: None = Gate()) -> None: ...

    with pytest.raises(AdmissionBlocked, match="closed gate"):
        async with resolve(task):
            pass


# -- handlers --------------------------------------------------------------------------


async def test_handlers_are_the_per_run_values() -> None:
    declared_retry = ExponentialRetry(attempts=5, minimum_delay=timedelta(seconds=2))
    declared_timeout = Timeout(timedelta(seconds=5))
    declared_perpetual = Perpetual(every=timedelta(minutes=1))

    async def task(
        retry: ExponentialRetry = declared_retry,
        timeout: Timeout = declared_timeout,
        perpetual: Perpetual = declared_perpetual,
    ) -> None: ...

    worker = StubWorker()
    execution = StubExecution(task, attempt=3)
    async with resolved_dependencies(worker, execution) as resolved:  # type: ignore[arg-type]
        assert resolved.failure_handler is resolved.arguments["retry"]
        assert resolved.runtime is resolved.arguments["timeout"]
        assert resolved.completion_handler is resolved.arguments["perpetual"]
        retry = resolved.arguments["retry"]
        assert retry is not declared_retry
        assert retry.attempt == 3
        assert retry.delay == timedelta(seconds=8)  # 2s doubled twice
        assert declared_retry.attempt == 1  # the declaration is untouched


async def test_no_handlers_when_none_declared() -> None:
    async def task(key: str = TaskKey()) -> None: ...

    async with resolve(task) as resolved:
        assert resolved.runtime is None
        assert resolved.failure_handler is None
        assert resolved.completion_handler is None


async def test_the_perpetual_decorator_is_the_completion_handler() -> None:
    @Perpetual(interval=timedelta(seconds=30))
    async def task() -> None: ...

    async with resolve(task) as resolved:
        assert resolved.arguments == {}
        handler = resolved.completion_handler
        assert isinstance(handler, Perpetual)
        assert handler.every == timedelta(seconds=30)


# -- worker dependencies ---------------------------------------------------------------


async def test_worker_dependencies_wrap_the_run_but_are_not_arguments() -> None:
    events: list[str] = []

    async def around() -> AsyncIterator[str]:
        events.append("worker enter")
        yield "worker value"
        events.append("worker exit")

    async def inside() -> AsyncIterator[str]:
        events.append("task enter")
        yield "task value"
        events.append("task exit")

    async def task(value: str = Depends(inside)) -> None: ...

    worker = StubWorker({"around": Depends(around), "retry": Retry(attempts=2)})
    async with resolve(task, worker=worker) as resolved:
        assert resolved.arguments == {"value": "task value"}
        assert resolved.values["around"] == "worker value"
        assert isinstance(resolved.failure_handler, Retry)
        events.append("task")
    assert events == ["worker enter", "task enter", "task", "task exit", "worker exit"]


async def test_worker_and_task_single_dependencies_conflict() -> None:
    async def task(retry: Retry = Retry(attempts=2)) -> None: ...

    worker = StubWorker({"retry": ExponentialRetry(attempts=3)})
    with pytest.raises(DependencyExceptionGroup, match="Only one Retry dependency is allowed"):
        async with resolve(task, worker=worker):
            pass


async def test_worker_and_task_share_one_value_per_run() -> None:
    calls: list[int] = []

    def session() -> int:
        calls.append(1)
        return len(calls)

    async def task(value: int = Depends(session)) -> None: ...

    worker = StubWorker({"session": Depends(session)})
    async with resolve(task, worker=worker) as resolved:
        assert resolved.arguments == {"value": 1}
    assert calls == [1]


# -- task and call arguments ------------------------------------------------------------


async def test_task_argument_reads_what_the_caller_passed() -> None:
    def customer(customer_id: int = TaskArgument()) -> str:
        return f"customer {customer_id}"

    def order(number: int = TaskArgument("order_id")) -> str:
        return f"order {number}"

    def maybe(coupon: str | None = TaskArgument(optional=True)) -> str:
        return f"coupon {coupon}"

    async def task(
        customer_id: int,
        order_id: int = 0,
        who: str = Depends(customer),
        what: str = Depends(order),
        discount: str = Depends(maybe),
    ) -> None: ...

    async with resolve(task, 7, order_id=99) as resolved:
        assert resolved.arguments == {
            "who": "customer 7",
            "what": "order 99",
            "discount": "coupon None",
        }


async def test_a_missing_task_argument_fails_the_run() -> None:
    def customer(customer_id: int = TaskArgument()) -> int:
        return customer_id

    async def task(who: int = Depends(customer)) -> None: ...

    with pytest.raises(DependencyExceptionGroup, match="customer_id"):
        async with resolve(task):
            pass


async def test_call_argument_sees_defaults_and_sibling_dependencies_once() -> None:
    calls: list[str] = []

    def token() -> str:
        calls.append("token")
        return "secret"

    def header(value: str = CallArgument("auth")) -> str:
        return f"Bearer {value}"

    def page_size(size: int = CallArgument("limit")) -> int:
        return size * 2

    def unknown(value: Any = CallArgument("nothing", optional=True)) -> Any:
        return value

    def fallback(value: Any = CallArgument("nothing", default="dflt")) -> Any:
        return value

    async def task(
        limit: int = 10,
        h: str = Depends(header),
        auth: str = Depends(token),
        size: int = Depends(page_size),
        u: Any = Depends(unknown),
        f: Any = Depends(fallback),
    ) -> None: ...

    async with resolve(task) as resolved:
        assert resolved.arguments == {
            "h": "Bearer secret",
            "auth": "secret",
            "size": 20,
            "u": None,
            "f": "dflt",
        }
    assert calls == ["token"]


async def test_circular_call_arguments_fail() -> None:
    def left(value: str = CallArgument("b")) -> str:
        return value

    def right(value: str = CallArgument("a")) -> str:
        return value

    async def task(a: str = Depends(left), b: str = Depends(right)) -> None: ...

    with pytest.raises(DependencyExceptionGroup) as caught:
        async with resolve(task):
            pass
    assert all(isinstance(error, CycleError) for error in caught.value.exceptions)
    assert "a -> b -> a" in str(caught.value)


# -- argument guards in metadata --------------------------------------------------------


class PerCustomer(Dependency["PerCustomer"]):
    """A guard: it wants the argument's value rather than supplying one."""

    entered: list[tuple[str, Any]] = []

    def __init__(self) -> None:
        self.name: str | None = None
        self.value: Any = None

    def bind_to_parameter(self, name: str, value: Any) -> PerCustomer:
        bound = PerCustomer()
        bound.name, bound.value = name, value
        return bound

    async def __aenter__(self) -> PerCustomer:
        assert self.name is not None
        PerCustomer.entered.append((self.name, self.value))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        PerCustomer.entered.append(("exit", self.value))


async def test_guards_in_metadata_see_the_argument_and_supply_nothing() -> None:
    PerCustomer.entered = []

    async def task(customer_id: Annotated[int, PerCustomer()], note: str = "") -> None: ...

    async with resolve(task, 42) as resolved:
        assert resolved.arguments == {}
        assert PerCustomer.entered == [("customer_id", 42)]
    assert PerCustomer.entered == [("customer_id", 42), ("exit", 42)]

    PerCustomer.entered = []
    async with resolve(task, customer_id=7):
        assert PerCustomer.entered == [("customer_id", 7)]


# -- Shared ----------------------------------------------------------------------------


async def test_shared_values_live_as_long_as_the_worker() -> None:
    events: list[str] = []

    async def pool() -> AsyncIterator[str]:
        events.append("pool open")
        yield f"pool-{len(events)}"
        events.append("pool closed")

    def client(p: str = Shared(pool)) -> str:
        events.append("client made")
        return f"client({p})"

    async def task(p: str = Shared(pool), c: str = Shared(client)) -> None: ...

    worker = StubWorker()
    for _ in range(3):
        async with resolve(task, worker=worker) as resolved:
            assert resolved.arguments == {"p": "pool-1", "c": "client(pool-1)"}
    assert events == ["pool open", "client made"]

    await worker.shared.aclose()
    assert events == ["pool open", "client made", "pool closed"]


async def test_concurrent_first_uses_build_one_shared_value() -> None:
    builds: list[int] = []

    async def slow() -> int:
        builds.append(1)
        await asyncio.sleep(0.05)
        return len(builds)

    async def task(value: int = Shared(slow)) -> None: ...

    worker = StubWorker()

    async def run_once() -> int:
        async with resolve(task, worker=worker) as resolved:
            return int(resolved.arguments["value"])

    assert await asyncio.gather(*(run_once() for _ in range(5))) == [1] * 5
    assert builds == [1]


async def test_a_failed_shared_build_is_tried_again() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("not yet")
        return "ready"

    async def task(value: str = Shared(flaky)) -> None: ...

    worker = StubWorker()
    with pytest.raises(DependencyExceptionGroup, match="not yet"):
        async with resolve(task, worker=worker):
            pass
    async with resolve(task, worker=worker) as resolved:
        assert resolved.arguments == {"value": "ready"}


async def test_shared_factories_cannot_read_task_arguments() -> None:
    def per_customer(customer_id: int = TaskArgument()) -> int:
        return customer_id

    async def task(customer_id: int, value: int = Shared(per_customer)) -> None: ...

    with pytest.raises(DependencyExceptionGroup, match="Shared"):
        async with resolve(task, 1):
            pass


# -- plans are computed once ------------------------------------------------------------


async def test_resolution_does_not_inspect_signatures_per_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def factory(key: str = TaskKey()) -> str:
        return key.upper()

    async def task(value: str = Depends(factory), retry: Retry = Retry(2)) -> None: ...

    async with resolve(task) as resolved:
        assert resolved.arguments["value"] == "KEY-OF-TASK"
    first = get_dependency_parameters(task)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("signature inspected during a run")

    monkeypatch.setattr(inspect, "signature", forbidden)
    monkeypatch.setattr("typing.get_type_hints", forbidden)
    for _ in range(3):
        async with resolve(task) as resolved:
            assert resolved.arguments["value"] == "KEY-OF-TASK"
    assert get_dependency_parameters(task) is first


# -- completion handler kinds from custom classes ---------------------------------------


async def test_custom_completion_handler_is_found() -> None:
    class Notify(CompletionHandler["Notify"]):
        async def __aenter__(self) -> Notify:
            return Notify()

        async def on_complete(self, execution: Any, outcome: Any) -> bool:
            return False

    async def task(notify: Notify = Notify()) -> None: ...

    async with resolve(task) as resolved:
        assert isinstance(resolved.completion_handler, Notify)
