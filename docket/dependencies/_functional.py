"""Dependencies made from functions: ``Depends`` (per run) and ``Shared`` (per worker).

The function may return a value, a coroutine, a (sync or async) context manager, be a
(sync or async) generator function, or return another ``Dependency``; context managers
and generators stay open for the run (or, for ``Shared``, for the worker's life) and
are closed in reverse order, with the task's exception thrown into them.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Hashable,
    Iterator,
)
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from contextvars import ContextVar
from types import TracebackType
from typing import Any, cast, overload

from ._arguments import _ArgumentReference
from ._base import Dependency, current_worker
from ._frames import CycleError, ResolutionScope, current_scope, reset_scope, set_scope
from ._plans import function_name, get_plan

type DependencyFunction[R] = Callable[
    ..., R | Awaitable[R] | AbstractContextManager[R] | AbstractAsyncContextManager[R]
]


class _Failed:
    """A cached failure, so a second reference to a broken dependency fails alike."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


async def _produce(scope: ResolutionScope, raw: Any) -> Any:
    """Turn what a dependency function returned into the value to inject."""
    if inspect.isasyncgen(raw):
        generator = cast(AsyncGenerator[Any, None], raw)
        return await scope.stack.enter_async_context(asynccontextmanager(lambda: generator)())
    if inspect.isgenerator(raw):
        sync_generator = cast(Generator[Any, None, None], raw)
        return scope.stack.enter_context(contextmanager(lambda: sync_generator)())
    if isinstance(raw, Dependency):
        # ``Depends(TaskLogger)``: the function builds a dependency, which is resolved.
        return await scope.enter(raw)
    if isinstance(raw, AbstractAsyncContextManager):
        return await scope.stack.enter_async_context(cast(AbstractAsyncContextManager[Any], raw))
    if isinstance(raw, AbstractContextManager):
        return scope.stack.enter_context(cast(AbstractContextManager[Any], raw))
    if inspect.isawaitable(raw):
        return await raw
    return raw


async def _call_arguments(
    scope: ResolutionScope, function: Callable[..., Any], bindings: dict[str, Any]
) -> dict[str, Any]:
    """The keyword arguments a dependency function is called with."""
    arguments: dict[str, Any] = {}
    for declared in get_plan(function).suppliers:
        name = cast(str, declared.parameter)
        if name not in bindings:
            arguments[name] = await scope.enter(declared.dependency)
    for name, value in bindings.items():
        if isinstance(value, Dependency):
            arguments[name] = await scope.enter(value)
        else:
            arguments[name] = value
    return arguments


def _binding_key(name: str, value: Any) -> Hashable:
    if isinstance(value, _ArgumentReference):
        return value.reference_key(name)
    if isinstance(value, _Depends):
        return value.cache_key
    if isinstance(value, Dependency):
        # Custom dependencies may do different work on each entry even when equal.
        return ("id", id(value))
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    # 1, 1.0 and True are equal but a function may treat them differently.
    return ("value", type(value), value)


class _Depends[R](Dependency[R]):
    """A per-run dependency on a function; one value per run for equal declarations."""

    def __init__(self, factory: DependencyFunction[R], **bindings: Any) -> None:
        if not callable(factory):
            raise TypeError(f"Depends() needs a callable, got {factory!r}")
        self.factory = factory
        self.bindings = bindings
        self._bound: dict[str, Any] = {
            name: value.for_parameter(name) if isinstance(value, Dependency) else value
            for name, value in bindings.items()
        }
        self.cache_key: Hashable = (
            (factory, tuple(sorted((n, _binding_key(n, v)) for n, v in bindings.items())))
            if bindings
            else factory
        )

    def __repr__(self) -> str:
        bound = "".join(f", {name}={value!r}" for name, value in self.bindings.items())
        return f"Depends({function_name(self.factory)}{bound})"

    async def __aenter__(self) -> R:
        scope = current_scope()
        key = self.cache_key
        if key in scope.cache:
            cached = scope.cache[key]
            if isinstance(cached, _Failed):
                raise cached.error
            return cast(R, cached)

        if any(building == key for building, _ in scope.building):
            chain = " -> ".join([*(name for _, name in scope.building), repr(self)])
            raise CycleError(f"Circular dependency: {chain}")

        scope.building.append((key, repr(self)))
        try:
            arguments = await _call_arguments(scope, self.factory, self._bound)
            value = await _produce(scope, self.factory(**arguments))
        except Exception as error:
            scope.cache[key] = _Failed(error)
            raise
        finally:
            scope.building.pop()
        scope.cache[key] = value
        return cast(R, value)


@overload
def Depends[R](dependency: Callable[..., AbstractAsyncContextManager[R]], **bindings: Any) -> R: ...
@overload
def Depends[R](dependency: Callable[..., AbstractContextManager[R]], **bindings: Any) -> R: ...
@overload
def Depends[R](dependency: Callable[..., AsyncIterator[R]], **bindings: Any) -> R: ...
@overload
def Depends[R](dependency: Callable[..., Iterator[R]], **bindings: Any) -> R: ...
@overload
def Depends[R](dependency: Callable[..., Awaitable[R]], **bindings: Any) -> R: ...
@overload
def Depends[R](dependency: Callable[..., R], **bindings: Any) -> R: ...
def Depends(dependency: Callable[..., Any], **bindings: Any) -> Any:
    """The value of ``dependency(...)``, made once per run and injected.

    ``dependency`` may be sync or async, a generator or an async generator (set up
    before the task, closed after it in reverse order, with the task's exception thrown
    in at the ``yield``), or return a context manager. Its own parameters may declare
    dependencies, resolved first. Within one run, equal declarations share one value.

    Keyword ``bindings`` pass arguments to ``dependency`` from the declaration: a
    ``Dependency`` (``CallArgument("owner")``, another ``Depends``) is resolved first,
    anything else is passed as is. A bound parameter's own dependency is not resolved.
    Two declarations share a value only when their bindings match.

    Keep blocking I/O out of sync dependency functions; they run on the event loop.
    """
    return _Depends(dependency, **bindings)


class SharedScope:
    """The values of ``Shared`` dependencies for one worker, and their cleanup.

    The worker makes one when it starts (``worker.shared_scope``) and closes it with
    ``aclose()`` when it exits, which closes the values in reverse order of creation.
    """

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}
        self.stack = AsyncExitStack()
        self.lock = asyncio.Lock()

    async def aclose(self) -> None:
        try:
            await self.stack.aclose()
        finally:
            self.values.clear()

    async def __aenter__(self) -> SharedScope:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


# The Shared factories being built in this task, outermost first. The outermost build
# holds the scope's lock; builds nested inside it must not wait for it again.
_building_shared: ContextVar[tuple[Any, ...]] = ContextVar("docket_building_shared", default=())


class _Shared[R](Dependency[R]):
    """A dependency on a function whose value is made once per worker."""

    def __init__(self, factory: DependencyFunction[R]) -> None:
        if not callable(factory):
            raise TypeError(f"Shared() needs a callable, got {factory!r}")
        self.factory = factory

    def __repr__(self) -> str:
        return f"Shared({function_name(self.factory)})"

    async def __aenter__(self) -> R:
        worker = current_worker.get(None)
        shared: SharedScope | None = getattr(worker, "shared_scope", None)
        if shared is None:
            raise RuntimeError(f"{self!r} needs a running worker (one with a shared_scope)")

        factory = self.factory
        if factory in shared.values:
            return cast(R, shared.values[factory])

        building = _building_shared.get()
        if factory in building:
            chain = " -> ".join([*(f"Shared({function_name(f)})" for f in building), repr(self)])
            raise CycleError(f"Circular dependency: {chain}")
        if building:
            return await self._build(shared, building)
        async with shared.lock:
            if factory in shared.values:
                return cast(R, shared.values[factory])
            return await self._build(shared, building)

    async def _build(self, shared: SharedScope, building: tuple[Any, ...]) -> R:
        # Built on a stack of its own, so a failure unwinds only what this build made;
        # on success that stack joins the worker's and closes with it.
        stack = AsyncExitStack()
        scope = ResolutionScope(stack, frame=None)
        building_token = _building_shared.set((*building, self.factory))
        scope_token = set_scope(scope)
        try:
            arguments = await _call_arguments(scope, self.factory, {})
            value = await _produce(scope, self.factory(**arguments))
        except BaseException:
            await stack.aclose()
            raise
        finally:
            reset_scope(scope_token)
            _building_shared.reset(building_token)
        shared.stack.push_async_exit(stack)
        shared.values[self.factory] = value
        return cast(R, value)


@overload
def Shared[R](factory: Callable[..., AbstractAsyncContextManager[R]]) -> R: ...
@overload
def Shared[R](factory: Callable[..., AbstractContextManager[R]]) -> R: ...
@overload
def Shared[R](factory: Callable[..., AsyncIterator[R]]) -> R: ...
@overload
def Shared[R](factory: Callable[..., Iterator[R]]) -> R: ...
@overload
def Shared[R](factory: Callable[..., Awaitable[R]]) -> R: ...
@overload
def Shared[R](factory: Callable[..., R]) -> R: ...
def Shared(factory: Callable[..., Any]) -> Any:
    """The value of ``factory(...)``, made once per worker and given to every run.

    Made on first use (concurrent first uses wait for one build) and cleaned up when
    the worker exits. The same function anywhere means the same value. ``factory`` may
    take the same forms as for ``Depends`` and may declare dependencies of its own, but
    none that read one run's arguments.
    """
    return _Shared(factory)
