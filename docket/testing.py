"""Helpers for testing code that schedules docket tasks.

The assertions look at what is waiting on a docket right now: tasks scheduled for later
and tasks queued but not yet picked up by a worker (running ones are not counted)::

    from docket import testing

    await docket.add(send_invoice)(order_id=7)
    await testing.assert_task_scheduled(docket, send_invoice, kwargs={"order_id": 7})

    ran = await testing.run_pending(docket)
    await testing.assert_no_tasks(docket)

``function`` may be given as the task function (or the handle ``@docket.add`` returns)
or as its registered name. ``args`` must match exactly; ``kwargs`` is a subset match.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from .docket import Docket, TaskHandle
from .execution import Execution

__all__ = [
    "assert_no_tasks",
    "assert_task_count",
    "assert_task_not_scheduled",
    "assert_task_scheduled",
    "run_pending",
]

TaskRef = str | Callable[..., Any]


def _task_name(function: TaskRef) -> str:
    if isinstance(function, str):
        return function
    if isinstance(function, TaskHandle):
        return function.task_name
    return str(getattr(function, "__name__", function))


def _matches(
    execution: Execution,
    name: str,
    args: tuple[Any, ...] | None,
    kwargs: Mapping[str, Any] | None,
    key: str | None,
) -> bool:
    if execution.function_name != name:
        return False
    if key is not None and execution.key != key:
        return False
    if args is not None and tuple(execution.args) != tuple(args):
        return False
    if kwargs is not None:
        for parameter, value in kwargs.items():
            if parameter not in execution.kwargs or execution.kwargs[parameter] != value:
                return False
    return True


def _criteria(
    name: str, args: tuple[Any, ...] | None, kwargs: Mapping[str, Any] | None, key: str | None
) -> str:
    parts = [f"function={name}"]
    if key is not None:
        parts.append(f"key={key!r}")
    if args is not None:
        parts.append(f"args={tuple(args)!r}")
    if kwargs is not None:
        parts.append(f"kwargs={dict(kwargs)!r}")
    return ", ".join(parts)


def _describe(execution: Execution) -> str:
    return (
        f"{execution.function_name}(args={execution.args!r}, kwargs={execution.kwargs!r}, "
        f"key={execution.key!r}, when={execution.when.isoformat()}, "
        f"state={execution.state.value})"
    )


def _listing(executions: Iterable[Execution]) -> str:
    lines = [f"  - {_describe(execution)}" for execution in executions]
    return "\n".join(lines) if lines else "  (none)"


async def _waiting(docket: Docket) -> list[Execution]:
    """Tasks scheduled for later or queued, but not running."""
    snapshot = await docket.snapshot()
    return list(snapshot.future)


async def assert_task_scheduled(
    docket: Docket,
    function: TaskRef,
    *,
    args: tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    key: str | None = None,
) -> None:
    """Fail unless a matching task is scheduled or queued on ``docket``."""
    __tracebackhide__ = True  # pytest shows the caller, not these lines
    name = _task_name(function)
    waiting = await _waiting(docket)
    if any(_matches(execution, name, args, kwargs, key) for execution in waiting):
        return
    if not waiting:
        raise AssertionError(
            f"Task {name} not found with {_criteria(name, args, kwargs, key)}: "
            f"no tasks scheduled on docket {docket.name!r}"
        )
    raise AssertionError(
        f"Task {name} not found with {_criteria(name, args, kwargs, key)}\n\n"
        f"Scheduled tasks:\n{_listing(waiting)}"
    )


async def assert_task_not_scheduled(
    docket: Docket,
    function: TaskRef,
    *,
    args: tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    key: str | None = None,
) -> None:
    """Fail if a matching task is scheduled or queued on ``docket``."""
    __tracebackhide__ = True  # pytest shows the caller, not these lines
    name = _task_name(function)
    found = [e for e in await _waiting(docket) if _matches(e, name, args, kwargs, key)]
    if found:
        raise AssertionError(
            f"Task {name} found but should not be scheduled "
            f"({_criteria(name, args, kwargs, key)})\n\nFound:\n{_listing(found)}"
        )


async def assert_task_count(
    docket: Docket,
    function: TaskRef | None = None,
    *,
    count: int,
) -> None:
    """Fail unless exactly ``count`` tasks (of ``function``, or of any task) are scheduled
    or queued on ``docket``."""
    __tracebackhide__ = True  # pytest shows the caller, not these lines
    waiting = await _waiting(docket)
    if function is None:
        counted = waiting
        what = "all tasks"
    else:
        name = _task_name(function)
        counted = [execution for execution in waiting if execution.function_name == name]
        what = f"tasks for {name}"
    if len(counted) != count:
        raise AssertionError(
            f"Expected {count} {what}, found {len(counted)}\n\n"
            f"Scheduled tasks:\n{_listing(waiting)}"
        )


async def assert_no_tasks(docket: Docket) -> None:
    """Fail if anything is scheduled or queued on ``docket``."""
    __tracebackhide__ = True  # pytest shows the caller, not these lines
    waiting = await _waiting(docket)
    if waiting:
        raise AssertionError(
            f"Expected no tasks, found {len(waiting)} task(s) scheduled:\n{_listing(waiting)}"
        )


async def run_pending(
    docket: Docket,
    *,
    include_future: bool = False,
    at_most: Mapping[str, int] | None = None,
    **worker_options: Any,
) -> list[Execution]:
    """Run what is due on ``docket`` with an in-process worker, and return what ran.

    The worker stops once nothing is queued or running and nothing scheduled is due.
    Tasks that the runs add (follow-ups, retries without a delay) run too, as long as
    they are due; tasks scheduled for later stay scheduled, for
    ``assert_task_scheduled`` to find. With ``include_future=True`` the worker instead
    waits for those as well and returns only when the docket is empty (like
    ``Worker.run_until_finished``). ``at_most={key: n}`` runs each listed key at most
    ``n`` times (as ``Worker.run_at_most``): that is how to bound a ``Perpetual`` task
    whose next run is always due.

    Returns one ``Execution`` per key the worker picked up, in the order each key first
    started, refreshed to its latest state: ``COMPLETED`` or ``FAILED`` (with
    ``error``; ``await execution.get_result()`` re-raises it), ``SCHEDULED`` when a
    retry or the next perpetual run is waiting, ``CANCELLED`` when a strike stopped it.
    Task failures never raise here. With ``execution_ttl=0`` there is no stored state to
    refresh from.

    ``worker_options`` go to ``Worker`` (``concurrency``, ``fallback_task``,
    ``dependencies``...). Unless given, the worker polls every 5 ms and does not
    schedule automatic perpetual tasks.
    """
    from .worker import Worker

    worker_options.setdefault("minimum_check_interval", timedelta(milliseconds=5))
    worker_options.setdefault("scheduling_resolution", timedelta(milliseconds=5))
    worker_options.setdefault("schedule_automatic_tasks", False)

    started: dict[str, Execution] = {}

    class _RecordingWorker(Worker):
        def _start(self, execution: Execution) -> None:
            started.setdefault(execution.key, execution)
            super()._start(execution)

    async with _RecordingWorker(docket, **worker_options) as worker:
        if include_future:
            await worker.run_at_most(at_most or {})
        else:
            runner = asyncio.create_task(worker.run_at_most(at_most or {}))
            try:
                while not runner.done():
                    if await _nothing_due(docket):
                        worker.stop()
                        break
                    await asyncio.wait({runner}, timeout=_POLL_SECONDS)
            finally:
                if not runner.done():
                    worker.stop()
                await runner

    for execution in started.values():
        await execution.sync()
    return list(started.values())


_POLL_SECONDS = 0.01


async def _nothing_due(docket: Docket) -> bool:
    """Nothing queued or running (settled entries leave the stream) and nothing
    scheduled is due by the Redis server's clock."""
    async with docket.redis() as redis:
        seconds, micros = await redis.time()
        now = int(seconds) + int(micros) / 1_000_000
        async with redis.pipeline(transaction=False) as pipe:
            for keys in docket.partition_keys:
                for stream in keys.streams:
                    pipe.xlen(stream)
                pipe.zcount(keys.queue, "-inf", f"{now:.6f}")
            counts = await pipe.execute()
    return not any(int(count) for count in counts)
