"""Dependencies made from functions: ``Depends`` (per run) and ``Shared`` (per worker).

Both are uncalled-for's, so one cache serves docket's declarations and those of any
library on the same engine (FastMCP's among them). Docket's own forms accept a little
more than the engine does, as docket always has: the function may be a plain (sync or
async) generator function, set up before the task and closed after it with the task's
exception thrown in at the ``yield``, or it may return another ``Dependency``
(``Depends(TaskLogger)``), which is then resolved in its place.
"""

from __future__ import annotations

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
from typing import Any, cast, overload

from uncalled_for import CycleError, DependencyFactory, Frame, SharedContext
from uncalled_for.frames import _current_frame
from uncalled_for.functional import _Depends as _EngineDepends
from uncalled_for.introspection import _parameter_cache, get_dependency_parameters
from uncalled_for.shared import _Shared as _EngineShared

from ._base import Dependency
from ._declarations import function_name

__all__ = [
    "DependencyFunction",
    "Depends",
    "Shared",
    "SharedContext",
    "_Depends",
    "_Shared",
    "_parameter_cache",
    "get_dependency_parameters",
]

type DependencyFunction[R] = DependencyFactory[R]

# The ``Depends`` being built in this task, outermost first: (cache key, label).
_building: ContextVar[tuple[tuple[Hashable, str], ...]] = ContextVar(
    "docket_building_depends", default=()
)


async def _produce(stack: AsyncExitStack, raw: Any) -> Any:
    """What a dependency function returned, turned into the value to inject."""
    if inspect.isasyncgen(raw):
        generator = cast(AsyncGenerator[Any, None], raw)
        return await stack.enter_async_context(asynccontextmanager(lambda: generator)())
    if inspect.isgenerator(raw):
        sync_generator = cast(Generator[Any, None, None], raw)
        return stack.enter_context(contextmanager(lambda: sync_generator)())
    if isinstance(raw, Dependency):
        return await stack.enter_async_context(raw)
    if isinstance(raw, AbstractAsyncContextManager):
        return await stack.enter_async_context(cast(AbstractAsyncContextManager[Any], raw))
    if isinstance(raw, AbstractContextManager):
        return stack.enter_context(cast(AbstractContextManager[Any], raw))
    if inspect.isawaitable(raw):
        return await raw
    return raw


class _DocketForms[R]:
    """Docket's ``Depends`` and ``Shared`` make their value with ``_produce``, which takes
    more forms of a factory's return value than the engine does."""

    async def _resolve_factory_value(self, stack: AsyncExitStack, raw_value: Any) -> R:
        return cast(R, await _produce(stack, raw_value))


class _Depends[R](_DocketForms[R], _EngineDepends[R]):
    """A per-run dependency on a function; one value per run for equal declarations."""

    def __init__(self, factory: DependencyFactory[R], **bindings: Any) -> None:
        if not callable(factory):
            raise TypeError(f"Depends() needs a callable, got {factory!r}")
        super().__init__(factory, **bindings)

    def __repr__(self) -> str:
        bound = "".join(f", {name}={value!r}" for name, value in self.bindings.items())
        return f"Depends({function_name(self.factory)}{bound})"

    async def __aenter__(self) -> R:
        # The engine would recurse until the stack runs out on a loop of functions that
        # depend on each other; name the loop instead.
        key = self._cache_key()
        building = _building.get()
        if any(entry == key for entry, _ in building):
            chain = " -> ".join([*(label for _, label in building), repr(self)])
            raise CycleError(f"Circular dependency: {chain}")
        token = _building.set((*building, (key, repr(self))))
        try:
            return await super().__aenter__()
        finally:
            _building.reset(token)


class _Shared[R](_DocketForms[R], _EngineShared[R]):
    """A dependency on a function whose value is made once per worker."""

    def __init__(self, factory: DependencyFactory[R]) -> None:
        if not callable(factory):
            raise TypeError(f"Shared() needs a callable, got {factory!r}")
        super().__init__(factory)

    def __repr__(self) -> str:
        return f"Shared({function_name(self.factory)})"

    async def __aenter__(self) -> R:
        try:
            SharedContext.resolved.get()
        except LookupError:
            raise RuntimeError(
                f"{self!r} is made once per worker, and there is no worker here: it "
                "resolves only in a task a Worker runs (or inside a SharedContext)"
            ) from None
        return await super().__aenter__()

    async def _resolve_parameters(self) -> dict[str, Any]:
        # A shared value outlives the run that built it, so what it is made from must
        # not come from that run's arguments: refuse, rather than serve every later run
        # the first one's.
        token = _current_frame.set(_NO_RUN)
        try:
            return await super()._resolve_parameters()
        finally:
            _current_frame.reset(token)


class _NoRunFrame(Frame):
    """The frame a ``Shared`` factory's own dependencies see: no run's arguments."""

    def __init__(self) -> None:
        super().__init__(_NoRunFrame, {}, {})

    async def resolve(self, name: str, *, provided_only: bool = False) -> Any:
        raise RuntimeError(
            f"A Shared dependency cannot read the task argument {name!r}: its value "
            "outlives the run that built it, so it cannot depend on one run's arguments"
        )


_NO_RUN = _NoRunFrame()


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
    the worker exits. The same function anywhere means the same value, uncalled-for's
    ``Shared`` included. ``factory`` may take the same forms as for ``Depends`` and may
    declare dependencies of its own, but none that read one run's arguments.
    """
    return _Shared(factory)
