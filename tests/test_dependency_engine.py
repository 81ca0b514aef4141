"""Dependencies resolve on uncalled-for, the engine the released docket and FastMCP share.

A library that builds its injectables on ``uncalled_for`` (FastMCP does) must see them
resolved in our tasks, and code written for the released docket must find uncalled-for's
own names where it looks for them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import uncalled_for
from _helpers import fast_worker

import docket
import docket.dependencies as dependencies
from docket import Docket, Worker
from docket.dependencies import Dependency, TaskKey


def test_the_dependency_names_are_uncalled_fors() -> None:
    assert dependencies.Dependency is uncalled_for.Dependency
    assert dependencies.CallArgument is uncalled_for.CallArgument
    assert dependencies.CycleError is uncalled_for.CycleError
    assert dependencies.FailedDependency is uncalled_for.FailedDependency
    assert dependencies.SharedContext is uncalled_for.SharedContext
    assert dependencies.validate_dependencies is uncalled_for.validate_dependencies
    assert docket.CycleError is uncalled_for.CycleError
    # FastMCP clears this cache after rewriting a signature: it must be the engine's.
    from uncalled_for.introspection import _parameter_cache

    assert dependencies._parameter_cache is _parameter_cache
    # Docket's own dependencies are engine dependencies, so an engine-only resolver
    # (FastMCP's) sees them too.
    assert isinstance(TaskKey(), uncalled_for.Dependency)
    assert isinstance(dependencies.Depends(int), uncalled_for.functional._Depends)
    assert isinstance(dependencies.Shared(int), uncalled_for.shared._Shared)


class Tenant(uncalled_for.Dependency[str]):
    """A third party's injectable, written against uncalled-for alone."""

    entered: list[str] = []
    exited: list[str] = []

    async def __aenter__(self) -> str:
        key = docket.dependencies.current_execution.get().key
        Tenant.entered.append(key)
        return f"tenant-of-{key}"

    async def __aexit__(self, *exc_info: object) -> None:
        Tenant.exited.append("closed")


async def test_a_third_party_dependency_is_resolved_per_run(docket: Docket) -> None:
    Tenant.entered, Tenant.exited = [], []
    seen: list[str] = []

    async def task(tenant: str = Tenant()) -> None:  # type: ignore[assignment]
        seen.append(tenant)

    await docket.add(task, key="a")()
    await docket.add(task, key="b")()
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()

    assert sorted(seen) == ["tenant-of-a", "tenant-of-b"]
    assert sorted(Tenant.entered) == ["a", "b"]
    assert Tenant.exited == ["closed", "closed"]


async def test_uncalled_fors_own_depends_and_call_argument_resolve(docket: Docket) -> None:
    def greeting(name: str = uncalled_for.CallArgument()) -> str:
        return f"hello {name}"

    seen: list[str] = []

    async def task(name: str, text: str = uncalled_for.Depends(greeting)) -> None:
        seen.append(text)

    await docket.add(task)("ada")
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()

    assert seen == ["hello ada"]


async def test_uncalled_fors_shared_values_live_as_long_as_the_worker(docket: Docket) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def pool() -> AsyncIterator[str]:
        events.append("open")
        yield "pool"
        events.append("close")

    async def task(value: str = uncalled_for.Shared(pool)) -> None:
        events.append(value)

    for _ in range(3):
        await docket.add(task)()
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()
        assert events == ["open", "pool", "pool", "pool"]
    assert events[-1] == "close"


class Answer(uncalled_for.Provider[int]):
    async def __aenter__(self) -> int:
        return 42


async def test_a_provider_in_metadata_supplies_the_value(docket: Docket) -> None:
    seen: list[Any] = []

    async def task(answer: Annotated[int, Answer()] = uncalled_for.Provided) -> None:
        seen.append(answer)

    await docket.add(task)()
    async with fast_worker(docket) as worker:
        await worker.run_until_finished()
    assert seen == [42]


async def test_worker_dependencies_may_be_third_party(docket: Docket) -> None:
    Tenant.entered, Tenant.exited = [], []

    async def task() -> None: ...

    await docket.add(task, key="w")()
    async with Worker(docket, dependencies=[Tenant()]) as worker:
        await worker.run_until_finished()
    assert Tenant.entered == ["w"]
    assert Tenant.exited == ["closed"]


def test_dependency_keeps_the_released_class_attributes() -> None:
    # Code written for the released docket reads the context variables off the class.
    assert Dependency.execution is dependencies.current_execution  # type: ignore[attr-defined]
    assert Dependency.docket is dependencies.current_docket  # type: ignore[attr-defined]
    assert Dependency.worker is dependencies.current_worker  # type: ignore[attr-defined]
