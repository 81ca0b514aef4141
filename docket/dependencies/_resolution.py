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
hand even when entering failed with ``DependencyExceptionGroup``: a ``Retry`` then
retries a run whose dependency broke, as it retries one whose body did.

The engine is uncalled-for's: a run sets its per-call cache, exit stack and frame (the
task's arguments by name) and the worker's ``Shared`` values, then enters what the
task declares. Anything built on ``uncalled_for.Dependency`` resolves here, docket's
own and third parties' alike.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

from uncalled_for import (
    FailedDependency,
    Frame,
    SharedContext,
    get_annotation_dependencies,
    get_dependency_parameters,
    get_signature,
    validate_dependencies,
)
from uncalled_for.frames import _current_frame
from uncalled_for.functional import _Depends as _EngineDepends

from ._arguments import TaskArgumentDependency
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
from ._declarations import HANDLER_KINDS, declarations, decorator_of, function_name

if TYPE_CHECKING:
    from ..docket import Docket
    from ..execution import Execution
    from ..worker import Worker

__all__ = [
    "DependencyExceptionGroup",
    "FailedDependency",
    "ResolvedDependencies",
    "WorkerShared",
    "get_single_dependency_of_type",
    "get_single_dependency_parameter_of_type",
    "resolved_dependencies",
    "run_stack",
    "validate_dependencies",
    "validate_task",
    "validate_worker_dependencies",
]


class DependencyExceptionGroup(ExceptionGroup):
    """A run could not start because dependencies raised; one sub-exception each.

    The message starts as the released docket's does (``Failed to resolve dependencies
    for parameter(s): a, b``) and goes on with the task and each error. ``parameters``
    names the failed parameters (or worker dependencies), in the order of
    ``exceptions``.
    """

    parameters: tuple[str, ...] = ()
    task: str | None = None


def _resolution_error(
    failures: Sequence[tuple[str, Exception]], task: str | None
) -> DependencyExceptionGroup:
    names = ", ".join(name for name, _ in failures)
    details = "; ".join(
        f"{name}: {type(error).__name__}: {error}"
        if str(error)
        else f"{name}: {type(error).__name__}"
        for name, error in failures
    )
    where = f" of task {task!r}" if task else ""
    error = DependencyExceptionGroup(
        f"Failed to resolve dependencies for parameter(s): {names}{where} ({details})",
        [failure for _, failure in failures],
    )
    error.parameters = tuple(name for name, _ in failures)
    error.task = task
    return error


class WorkerShared:
    """One worker's ``Shared`` values: the state of an uncalled-for ``SharedContext``.

    Kept by the worker rather than in the context of whichever task entered it, so
    every run sees the same values however the worker's tasks were started. Closed
    (in reverse order of creation) when the worker exits.
    """

    def __init__(self) -> None:
        self.resolved: dict[Any, Any] = {}
        self.lock = asyncio.Lock()
        self.stack = AsyncExitStack()

    def activate(self) -> tuple[Token[Any], Token[Any], Token[Any]]:
        return (
            SharedContext.resolved.set(self.resolved),
            SharedContext.lock.set(self.lock),
            SharedContext.stack.set(self.stack),
        )

    @staticmethod
    def deactivate(tokens: tuple[Token[Any], Token[Any], Token[Any]]) -> None:
        resolved, lock, stack = tokens
        SharedContext.stack.reset(stack)
        SharedContext.lock.reset(lock)
        SharedContext.resolved.reset(resolved)

    async def aclose(self) -> None:
        try:
            await self.stack.aclose()
        finally:
            self.resolved.clear()
            self.stack = AsyncExitStack()


def run_stack() -> AsyncExitStack:
    """The exit stack of the run whose dependencies are being entered."""
    try:
        return _EngineDepends.stack.get()
    except LookupError:
        raise RuntimeError(
            "Dependencies resolve only while a worker runs a task; this one was entered "
            "outside of a run"
        ) from None


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


def validate_task(function: Callable[..., Any]) -> None:
    """Raise ``ValueError`` when ``function`` declares dependencies that cannot coexist.

    uncalled-for's ``validate_dependencies`` first (a ``single`` dependency such as
    Retry, Timeout or Perpetual appears once per task, counting subclasses of one
    ``single`` base together), then docket's ``@Perpetual`` decorator against the
    rest. Declarations the engine cannot read (two dependencies for one parameter, say)
    are a ``ValueError`` too, naming the task.
    """
    try:
        found = declarations(function)
    except Exception as error:
        raise ValueError(
            f"Cannot read the dependencies of task {function_name(function)!r}: {error}"
        ) from error
    # Our own check first, for a message that names the task and the parameters; the
    # engine's own check then covers whatever else it may come to enforce.
    conflict = _single_conflict([(declared.label, declared.dependency) for declared in found])
    if conflict is not None:
        base, clashing = conflict
        raise ValueError(
            f"Only one {base.__name__} dependency is allowed, but found: "
            f"{_describe(clashing)} (in task {function_name(function)!r})"
        )
    validate_dependencies(function)


_GENERATED = re.compile(r"__worker_dep_\d+__")


def validate_worker_dependencies(
    *layers: Mapping[str, Any] | Sequence[Any] | None,
) -> dict[str, Dependency[Any]]:
    """Worker ``dependencies=`` arguments as one name -> dependency dict: the one merger
    of the worker's own dependencies with those an adapter adds around them (Starlette's
    request context, say), later layers after earlier ones.

    A sequence's entries get generated names. Names starting with ``__`` are reserved,
    every value must be a ``Dependency`` (``Depends(fn)``, ``Retry(...)``...) and at most
    one of each ``single`` kind is allowed across all layers.
    """
    items: list[tuple[str | None, Any]] = []
    for dependencies in layers:
        if not dependencies:
            continue
        if isinstance(dependencies, Mapping):
            items += dependencies.items()
        else:
            items += [(None, dependency) for dependency in dependencies]

    validated: dict[str, Dependency[Any]] = {}
    for index, (given, dependency) in enumerate(items):
        # A generated name may come back when merged dependencies are merged again.
        if given is not None and given.startswith("__") and not _GENERATED.fullmatch(given):
            raise ValueError(f"Worker dependency name {given!r} is reserved (it starts with '__')")
        if not isinstance(dependency, Dependency):
            label = repr(given) if given is not None else f"at index {index}"
            raise TypeError(
                f"Worker dependency {label} must be a Dependency such as Depends(fn) or "
                f"Retry(...), got {type(dependency).__name__}"
            )
        validated[given if given is not None else f"__worker_dep_{index}__"] = dependency

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
    for declared in declarations(function):
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


def _provided(
    function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The caller's arguments by parameter name (positional ones included)."""
    if not args:
        return kwargs
    provided = dict(kwargs)
    try:
        parameters = get_signature(function).parameters.values()
    except (TypeError, ValueError):
        return provided
    for value, parameter in zip(args, parameters, strict=False):
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            break
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            break
        provided.setdefault(parameter.name, value)
    return provided


class ResolvedDependencies:
    """The dependencies of one run, entered; an async context manager.

    ``arguments`` are the keyword arguments to add to the call (only for parameters the
    caller did not supply). ``runtime``, ``failure_handler`` and ``completion_handler``
    are the run's values of those kinds, from the task or the worker's dependencies
    (``@Perpetual`` counts as the completion handler), or None.

    Entering sets ``current_docket``, ``current_worker`` and ``current_execution`` until
    exit, resolves worker dependencies first, then the task's parameters in order,
    then argument guards, then the decorator. Exiting closes them in reverse order,
    throwing the run's exception into generator dependencies. Dependencies that raise
    make entering raise ``DependencyExceptionGroup`` naming every one of them
    (``AdmissionBlocked`` passes unwrapped); after a failure only handler dependencies
    are still entered, so a retry remains possible.
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
        self._engine_tokens: tuple[Token[Any], ...] = ()
        self._shared_tokens: tuple[Token[Any], Token[Any], Token[Any]] | None = None

    def _note(self, value: Any) -> None:
        if isinstance(value, Runtime):
            self.runtime = value
        if isinstance(value, FailureHandler):
            self.failure_handler = value
        if isinstance(value, CompletionHandler):
            self.completion_handler = value

    def _reset_context(self) -> None:
        if self._engine_tokens:
            frame_token, stack_token, cache_token = self._engine_tokens
            self._engine_tokens = ()
            _current_frame.reset(frame_token)
            _EngineDepends.stack.reset(stack_token)
            _EngineDepends.cache.reset(cache_token)
        if self._shared_tokens is not None:
            WorkerShared.deactivate(self._shared_tokens)
            self._shared_tokens = None
        if self._tokens is not None:
            docket_token, worker_token, execution_token = self._tokens
            self._tokens = None
            current_execution.reset(execution_token)
            current_worker.reset(worker_token)
            current_docket.reset(docket_token)

    async def __aenter__(self) -> Self:
        worker = self.worker
        execution = self.execution
        function = self.function

        self._tokens = (
            current_docket.set(worker.docket),
            current_worker.set(worker),
            current_execution.set(execution),
        )
        if function is None:
            suppliers: dict[str, Dependency[Any]] = {}
            guards: dict[str, list[Dependency[Any]]] = {}
            decorator = None
        else:
            try:
                suppliers = get_dependency_parameters(function)
                guards = get_annotation_dependencies(function)
            except Exception as error:
                self._reset_context()
                raise _resolution_error(
                    [("(declarations)", error)], function_name(function)
                ) from error
            decorator = decorator_of(function)
        if not self.worker_dependencies and not suppliers and not guards and decorator is None:
            # Nothing to resolve or close (most tasks): no frame, no exit stack.
            return self

        stack = self._stack = AsyncExitStack()
        shared: WorkerShared | None = getattr(worker, "shared", None)
        if isinstance(shared, WorkerShared):
            self._shared_tokens = shared.activate()
        provided = _provided(function, execution.args, execution.kwargs) if function else {}
        frame = Frame(function or _no_function, provided, suppliers)
        self._engine_tokens = (
            _current_frame.set(frame),
            _EngineDepends.stack.set(stack),
            _EngineDepends.cache.set({}),
        )
        try:
            failures = await self._resolve(frame, suppliers, guards, decorator, provided)
        except BaseException as error:
            await self._abandon(error)
            raise
        if failures:
            task = function_name(function) if function else execution.function_name
            failure = _resolution_error(failures, task)
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

    async def _resolve(
        self,
        frame: Frame,
        suppliers: dict[str, Dependency[Any]],
        guards: dict[str, list[Dependency[Any]]],
        decorator: Dependency[Any] | None,
        provided: dict[str, Any],
    ) -> list[tuple[str, Exception]]:
        """Enter everything; the failures, if any (handlers are still entered)."""
        stack = self._stack
        assert stack is not None
        failures: list[tuple[str, Exception]] = []

        conflict = self._worker_conflict()
        if conflict is not None:
            return [conflict]

        for name, dependency in self.worker_dependencies.items():
            bound = dependency.for_parameter(name)
            if failures and not isinstance(bound, HANDLER_KINDS):
                continue
            value = await _attempt(failures, name, stack.enter_async_context(bound))
            if value is _FAILED:
                continue
            self.values[name] = value
            self._note(value)

        kwargs = self.execution.kwargs
        for parameter, declared in suppliers.items():
            if parameter in provided:
                supplied = kwargs.get(parameter)
                if isinstance(supplied, HANDLER_KINDS):
                    # ``retry=Retry(attempts=2)`` from the caller overrides the declared
                    # default, and works as a handler like one.
                    try:
                        value = await stack.enter_async_context(supplied)
                    except Exception as error:
                        failures.append((parameter, error))
                        continue
                    self.arguments[parameter] = value
                    self._note(value)
                continue
            if isinstance(declared, TaskArgumentDependency) and declared.parameter is None:
                # A bare TaskArgument() on the task itself names its own parameter: there
                # is no argument for it to read but the one it is meant to supply.
                failures.append(
                    (
                        parameter,
                        ValueError(
                            "No parameter name specified: a bare TaskArgument() reads an "
                            "argument of the task it serves, so it belongs on a dependency "
                            "function's parameter (or name one: TaskArgument('x'))"
                        ),
                    )
                )
                continue
            value = await _attempt(failures, parameter, frame.resolve(parameter))
            if value is _FAILED:
                continue
            self.arguments[parameter] = value
            self.values[parameter] = value
            self._note(value)

        for parameter, dependencies in guards.items():
            for guard in dependencies:
                if failures and not isinstance(guard, HANDLER_KINDS):
                    continue
                value_now = provided.get(parameter, self.arguments.get(parameter))
                entered = _enter_bound(stack, guard, parameter, value_now)
                value = await _attempt(failures, parameter, entered)
                if value is not _FAILED:
                    self._note(value)

        if decorator is not None:
            label = f"@{type(decorator).__name__}"
            value = await _attempt(failures, label, stack.enter_async_context(decorator))
            if value is not _FAILED:
                self._note(value)

        return failures

    def _worker_conflict(self) -> tuple[str, Exception] | None:
        function = self.function
        if not self.worker_dependencies or function is None:
            return None
        entries = [
            (f"worker dependency {name!r}", d) for name, d in self.worker_dependencies.items()
        ]
        if not any(_single_bases(type(d)) for _, d in entries):
            return None
        entries += [(d.label, d.dependency) for d in declarations(function)]
        conflict = _single_conflict(entries)
        if conflict is None:
            return None
        base, found = conflict
        error = ValueError(
            f"Only one {base.__name__} dependency is allowed, but task "
            f"{function_name(function)!r} and its worker declare {_describe(found)}; "
            "declare it in one place"
        )
        return (found[-1][0], error)

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


_FAILED: Final = object()
"""What ``_attempt`` gives for a step that failed."""


async def _attempt(failures: list[tuple[str, Exception]], label: str, step: Awaitable[Any]) -> Any:
    """What ``step`` gives, or ``_FAILED`` once its error is added to ``failures`` under
    ``label``. ``AdmissionBlocked`` is no failure of the dependency but the refusal of
    the whole run, so it goes straight out."""
    try:
        return await step
    except AdmissionBlocked:
        raise
    except Exception as error:
        failures.append((label, error))
        return _FAILED


async def _enter_bound(
    stack: AsyncExitStack, guard: Dependency[Any], parameter: str, value: Any
) -> Any:
    # Binding is part of entering, so what binding raises counts as the guard's failure.
    return await stack.enter_async_context(guard.bind_to_parameter(parameter, value))


def _no_function() -> None:
    """What a resolution with no task function (an unknown task) frames."""


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
