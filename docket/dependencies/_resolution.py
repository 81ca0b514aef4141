"""Resolving a task's dependencies for one run, and checking its declarations.

The worker wraps each run in ``resolved_dependencies``::

    resolution = resolved_dependencies(worker, execution, worker.dependencies)
    try:
        async with resolution as resolved:
            kwargs = {**execution.kwargs, **resolved.arguments}
            ...call the task (through resolved.runtime when there is one)...
    except Exception as error:
        ...resolution.failure_handler, resolution.completion_handler...

The resolution is its own result (``resolved is resolution``), so its handlers are at
hand even when entering failed with ``FailedDependency``: a ``Retry`` then retries a
run whose dependency broke, as it retries one whose body did.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ._base import (
    AdmissionBlocked,
    CompletionHandler,
    Dependency,
    FailureHandler,
    Runtime,
    current_docket,
    current_execution,
    current_worker,
)
from ._frames import Frame, ResolutionScope, reset_scope, set_scope
from ._plans import Declared, Plan, function_name, get_plan

if TYPE_CHECKING:
    from ..docket import Docket
    from ..execution import Execution
    from ..worker import Worker


class FailedDependency(Exception):
    """A run could not start because one of its dependencies raised.

    ``parameter`` names the dependency (a task parameter or a worker dependency),
    ``error`` is what it raised (also the ``__cause__``).
    """

    def __init__(self, parameter: str, error: BaseException, task: str | None = None) -> None:
        self.parameter = parameter
        self.error = error
        self.task = task
        where = f" of task {task!r}" if task else ""
        detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        super().__init__(f"Failed to resolve dependency {parameter!r}{where}: {detail}")
        self.__cause__ = error

    def __reduce__(self) -> tuple[Any, ...]:
        # Stored as a run's result: rebuild from the parts, which keeps the cause.
        return (type(self), (self.parameter, self.error, self.task))


# -- declarations -------------------------------------------------------------------


@functools.cache
def _single_bases(cls: type[Dependency[Any]]) -> tuple[type[Dependency[Any]], ...]:
    """The classes whose ``single`` rule ``cls`` falls under (itself included)."""
    return tuple(
        base
        for base in cls.__mro__
        if base is not Dependency
        and isinstance(base, type)
        and issubclass(base, Dependency)
        and getattr(base, "single", False)
    )


def _single_conflict(
    entries: Sequence[tuple[str, Dependency[Any]]],
) -> tuple[type[Dependency[Any]], list[tuple[str, Dependency[Any]]]] | None:
    """The first ``single`` rule ``entries`` break, with the entries breaking it.

    Same-class duplicates are reported first, so the message names ``Retry`` rather
    than the ``FailureHandler`` it derives from.
    """
    by_class: dict[type[Dependency[Any]], list[tuple[str, Dependency[Any]]]] = {}
    by_base: dict[type[Dependency[Any]], list[tuple[str, Dependency[Any]]]] = {}
    for label, dependency in entries:
        cls = type(dependency)
        if getattr(cls, "single", False):
            by_class.setdefault(cls, []).append((label, dependency))
        for base in _single_bases(cls):
            by_base.setdefault(base, []).append((label, dependency))
    for cls, found in by_class.items():
        if len(found) > 1:
            return cls, found
    for base, found in by_base.items():
        if len(found) > 1:
            return base, found
    return None


def _describe(found: list[tuple[str, Dependency[Any]]]) -> str:
    return ", ".join(f"{label} ({type(dependency).__name__})" for label, dependency in found)


def validate_dependencies(function: Callable[..., Any]) -> None:
    """Raise ``ValueError`` when ``function`` declares dependencies that cannot coexist.

    A ``single`` dependency (Retry, Timeout, Perpetual, a custom Runtime...) may appear
    once per task, counting subclasses of one ``single`` base together: a Retry and an
    ExponentialRetry conflict, and so do a Perpetual parameter and ``@Perpetual``.
    """
    try:
        plan = get_plan(function)
    except ValueError:
        raise
    except Exception as error:
        raise ValueError(
            f"Cannot read the dependencies of task {function_name(function)!r}: {error}"
        ) from error
    conflict = _single_conflict(
        [(declared.label, declared.dependency) for declared in plan.all_declared()]
    )
    if conflict is not None:
        base, found = conflict
        raise ValueError(
            f"Only one {base.__name__} dependency is allowed, but task {plan.name!r} "
            f"declares {len(found)}: {_describe(found)}"
        )


def validate_worker_dependencies(
    dependencies: Mapping[str, Any] | Sequence[Any] | None,
) -> dict[str, Dependency[Any]]:
    """The worker's ``dependencies=`` argument as a name -> dependency dict.

    A sequence gets generated names. Names starting with ``__`` are reserved, every
    value must be a ``Dependency`` (``Depends(fn)``, ``Retry(...)``...) and at most
    one of each ``single`` kind is allowed.
    """
    if not dependencies:
        return {}
    if isinstance(dependencies, Mapping):
        items: list[tuple[str | None, Any]] = list(dependencies.items())
    else:
        items = [(None, dependency) for dependency in dependencies]

    validated: dict[str, Dependency[Any]] = {}
    for index, (given, dependency) in enumerate(items):
        if given is not None and given.startswith("__"):
            raise ValueError(f"Worker dependency name {given!r} is reserved (it starts with '__')")
        if not isinstance(dependency, Dependency):
            label = repr(given) if given is not None else f"at index {index}"
            raise TypeError(
                f"Worker dependency {label} must be a Dependency such as Depends(fn) or "
                f"Retry(...), got {type(dependency).__name__}"
            )
        validated[given if given is not None else f"__worker_dependency_{index}__"] = dependency

    conflict = _single_conflict(list(validated.items()))
    if conflict is not None:
        base, found = conflict
        raise ValueError(
            f"Only one {base.__name__} worker dependency is allowed, got {_describe(found)}"
        )
    return validated


def get_single_dependency_parameter_of_type[D: Dependency[Any]](
    function: Callable[..., Any], dependency_type: type[D]
) -> D | None:
    """The dependency of ``dependency_type`` that ``function`` declares, if any."""
    for declared in get_plan(function).all_declared():
        if isinstance(declared.dependency, dependency_type):
            return declared.dependency
    return None


def get_single_dependency_of_type[D: Dependency[Any]](
    dependencies: Mapping[str, Any], dependency_type: type[D]
) -> D | None:
    """The first value of ``dependency_type`` among resolved ``dependencies``."""
    for value in dependencies.values():
        if isinstance(value, dependency_type):
            return value
    return None


# -- one run ------------------------------------------------------------------------


class ResolvedDependencies:
    """The dependencies of one run, entered; an async context manager.

    ``arguments`` are the keyword arguments to add to the call (only for parameters the
    caller did not supply). ``runtime``, ``failure_handler`` and ``completion_handler``
    are the run's values of those kinds, from the task or the worker's dependencies
    (``@Perpetual`` counts as the completion handler), or None.

    Entering sets ``current_docket``, ``current_worker`` and ``current_execution`` until
    exit, resolves worker dependencies first, then the task's parameters in order,
    then argument guards, then the decorator. Exiting closes them in reverse order,
    throwing the run's exception into generator dependencies. A dependency that raises
    makes entering raise ``FailedDependency`` (``AdmissionBlocked`` passes unwrapped);
    after a failure only handler dependencies are still entered, so a retry remains
    possible.
    """

    arguments: dict[str, Any]
    runtime: Runtime[Any] | None
    failure_handler: FailureHandler[Any] | None
    completion_handler: CompletionHandler[Any] | None

    def __init__(
        self,
        worker: Worker,
        execution: Execution,
        worker_dependencies: Mapping[str, Dependency[Any]] | None = None,
        function: Callable[..., Any] | None = None,
    ) -> None:
        if worker_dependencies is None:
            # Callers written against the released signature pass no dependencies.
            configured = getattr(worker, "dependencies", None)
            worker_dependencies = configured if isinstance(configured, Mapping) else {}
        self.worker = worker
        self.execution = execution
        self.function = function if function is not None else execution.function
        self.worker_dependencies = worker_dependencies
        self.arguments = {}
        self.values: dict[str, Any] = {}
        """Every resolved value, by parameter or worker-dependency name."""
        self.runtime = None
        self.failure_handler = None
        self.completion_handler = None
        self._stack: AsyncExitStack | None = None
        self._tokens: tuple[Token[Docket], Token[Worker], Token[Execution]] | None = None

    def _note(self, value: Any) -> None:
        if isinstance(value, Runtime):
            self.runtime = value
        if isinstance(value, FailureHandler):
            self.failure_handler = value
        if isinstance(value, CompletionHandler):
            self.completion_handler = value

    def _reset_context(self) -> None:
        if self._tokens is not None:
            docket_token, worker_token, execution_token = self._tokens
            self._tokens = None
            current_execution.reset(execution_token)
            current_worker.reset(worker_token)
            current_docket.reset(docket_token)

    async def __aenter__(self) -> Self:
        worker = self.worker
        execution = self.execution
        plan = get_plan(self.function) if self.function is not None else None

        self._tokens = (
            current_docket.set(worker.docket),
            current_worker.set(worker),
            current_execution.set(execution),
        )
        if (
            plan is not None
            and not self.worker_dependencies
            and not (plan.suppliers or plan.guards or plan.decorator)
        ):
            # Nothing to resolve or close (most tasks): no scope, no exit stack.
            return self
        stack = self._stack = AsyncExitStack()
        frame = Frame(plan, execution.args, execution.kwargs) if plan is not None else None
        scope_token = set_scope(ResolutionScope(stack, frame))
        try:
            failure = await self._resolve(plan, frame)
        except BaseException as error:
            reset_scope(scope_token)
            await self._abandon(error)
            raise
        reset_scope(scope_token)
        if failure is not None:
            await self._abandon(failure)
            raise failure
        return self

    async def _abandon(self, error: BaseException) -> None:
        try:
            if self._stack is not None:
                stack, self._stack = self._stack, None
                await stack.__aexit__(type(error), error, error.__traceback__)
        finally:
            self._reset_context()

    async def _resolve(self, plan: Plan | None, frame: Frame | None) -> FailedDependency | None:
        """Enter everything; the first failure, if any (handlers are still entered)."""
        scope_stack = self._stack
        assert scope_stack is not None
        task = plan.name if plan is not None else self.execution.function_name
        failure: FailedDependency | None = None

        conflict = self._worker_conflict(plan)
        if conflict is not None:
            return conflict

        for name, dependency in self.worker_dependencies.items():
            bound = dependency.for_parameter(name)
            if failure is not None and not isinstance(bound, _HANDLERS):
                continue
            try:
                value = await scope_stack.enter_async_context(bound)
            except AdmissionBlocked:
                raise
            except Exception as error:
                failure = failure or FailedDependency(name, error, task)
                continue
            self.values[name] = value
            self._note(value)

        if plan is None or frame is None:
            return failure

        for declared in plan.suppliers:
            parameter = declared.parameter
            assert parameter is not None
            if frame.is_supplied(parameter):
                continue
            if failure is not None and not declared.handler:
                continue
            try:
                value = await frame.resolve(parameter)
            except AdmissionBlocked:
                raise
            except Exception as error:
                failure = failure or FailedDependency(parameter, error, task)
                continue
            self.arguments[parameter] = value
            self.values[parameter] = value
            self._note(value)

        for declared in (*plan.guards, *((plan.decorator,) if plan.decorator else ())):
            if failure is not None and not declared.handler:
                continue
            try:
                value = await self._enter_guard(declared, frame, scope_stack)
            except AdmissionBlocked:
                raise
            except Exception as error:
                failure = failure or FailedDependency(
                    declared.parameter or declared.label, error, task
                )
                continue
            self._note(value)

        return failure

    @staticmethod
    async def _enter_guard(declared: Declared, frame: Frame, stack: AsyncExitStack) -> Any:
        dependency = declared.dependency
        if declared.parameter is not None:
            dependency = dependency.bind_to_parameter(
                declared.parameter, frame.current_value(declared.parameter)
            )
        return await stack.enter_async_context(dependency)

    def _worker_conflict(self, plan: Plan | None) -> FailedDependency | None:
        if not self.worker_dependencies or plan is None:
            return None
        entries = [
            (f"worker dependency {name!r}", d) for name, d in self.worker_dependencies.items()
        ]
        if not any(_single_bases(type(d)) for _, d in entries):
            return None
        entries += [(d.label, d.dependency) for d in plan.all_declared()]
        conflict = _single_conflict(entries)
        if conflict is None:
            return None
        base, found = conflict
        error = ValueError(
            f"Only one {base.__name__} dependency is allowed, but task {plan.name!r} and "
            f"its worker declare {_describe(found)}; declare it in one place"
        )
        return FailedDependency(found[-1][0], error, plan.name)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        try:
            if self._stack is None:
                return False
            stack, self._stack = self._stack, None
            return bool(await stack.__aexit__(exc_type, exc_value, traceback))
        finally:
            self._reset_context()


_HANDLERS = (Runtime, FailureHandler, CompletionHandler)


def resolved_dependencies(
    worker: Worker,
    execution: Execution,
    worker_dependencies: Mapping[str, Dependency[Any]] | None = None,
    *,
    function: Callable[..., Any] | None = None,
) -> ResolvedDependencies:
    """Resolve ``execution``'s dependencies for one run; use with ``async with``.

    ``worker_dependencies`` wrap every run but are never passed to the task (when None,
    ``worker.dependencies`` is used if the worker has a mapping there). ``function``
    is what will be called, when not ``execution.function`` (the fallback task for a
    task this worker does not know).
    """
    return ResolvedDependencies(worker, execution, worker_dependencies, function)
