"""Testing kit: tasks on ``memory://``, run in the test's own thread and transaction.

Django ``TestCase``::

    from docket_django.testing import DocketTestMixin

    class OrderTests(DocketTestMixin, TestCase):
        def test_receipt(self):
            with self.captureOnCommitCallbacks(execute=True):
                place_order(...)                 # enqueues send_receipt on commit
            self.assertTaskScheduled(send_receipt, kwargs={"order_id": 1})
            ran = self.run_docket_tasks()        # runs them now, in this thread
            self.assertEqual(ran[0].state, "completed")

pytest (pytest-django): ``pytest_plugins = ["docket_django.pytest_plugin"]`` gives the
``docket_memory`` fixture (a ``DocketTestRunner``).

Test mode is switched on by these helpers only, never by ``DEBUG``. Tasks run in the
calling thread (so they see the data of the test's open transaction) and their
connections are left alone.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from asgiref.current_thread_executor import CurrentThreadExecutor
from asgiref.sync import ThreadSensitiveContext
from django.tasks import Task
from django.test.utils import override_settings

from docket import Execution, testing

from .conf import raw_setting
from .portal import get_portal
from .registry import DeclaredTask
from .runner import task_name
from .runtime import inline_mode


def memory_setting() -> dict[str, dict[str, Any]]:
    """The ``DOCKET`` setting with every alias moved to a fresh ``memory://`` engine."""
    setting: dict[str, dict[str, Any]] = {}
    for alias, options in raw_setting().items():
        setting[alias] = {**options, "URL": f"memory://test-{uuid.uuid4().hex}"}
    return setting


@contextmanager
def memory_dockets() -> Iterator[DocketTestRunner]:
    """Within this block every docket is on its own ``memory://`` engine."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("DOCKET_URL")}
    try:
        with override_settings(DOCKET=memory_setting()):
            yield DocketTestRunner()
    finally:
        os.environ.update(saved)


def _run_here[V](factory: Callable[[], Coroutine[Any, Any, V]]) -> V:
    """Run a coroutine on the portal loop while sync code it calls (thread-sensitive)
    comes back to run in this thread: tasks see this thread's DB connection."""
    portal = get_portal()
    executor = CurrentThreadExecutor(None)

    async def wrapper() -> V:
        token = inline_mode.set(True)
        try:
            async with ThreadSensitiveContext(executor=executor):
                return await factory()
        finally:
            inline_mode.reset(token)

    future = portal.submit(wrapper())
    executor.run_until_future(future)
    return future.result()


class DocketTestRunner:
    """Sync helpers over the (memory) dockets of this process."""

    def docket(self, alias: str = "default") -> Any:
        return get_portal().run(get_portal().docket(alias))

    def run_pending(
        self,
        alias: str = "default",
        *,
        include_future: bool = False,
        at_most: Mapping[str, int] | None = None,
        **worker_options: Any,
    ) -> list[Execution]:
        """Run what is due (docket-native and ``django.tasks`` tasks alike) and return
        the executions, refreshed (``state``, ``error``)."""

        async def go() -> list[Execution]:
            docket = await get_portal().docket(alias)
            return await testing.run_pending(
                docket, include_future=include_future, at_most=at_most, **worker_options
            )

        return _run_here(go)

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        alias = kwargs.pop("docket", "default")

        async def go() -> Any:
            docket = await get_portal().docket(alias)
            return await function(docket, *args, **kwargs)

        return get_portal().run(go())

    def assert_task_scheduled(self, function: Any, **kwargs: Any) -> None:
        __tracebackhide__ = True
        self._call(testing.assert_task_scheduled, _name(function), **kwargs)

    def assert_task_not_scheduled(self, function: Any, **kwargs: Any) -> None:
        __tracebackhide__ = True
        self._call(testing.assert_task_not_scheduled, _name(function), **kwargs)

    def assert_task_count(self, count: int, function: Any = None, **kwargs: Any) -> None:
        __tracebackhide__ = True
        if function is not None:
            kwargs["function"] = _name(function)
        self._call(testing.assert_task_count, count=count, **kwargs)

    def assert_no_tasks(self, docket: str = "default") -> None:
        __tracebackhide__ = True
        self._call(testing.assert_no_tasks, docket=docket)

    def clear(self, docket: str = "default") -> int:
        async def go(d: Any) -> int:
            return int(await d.clear())

        return int(self._call(go, docket=docket))


def _name(function: Any) -> Any:
    if isinstance(function, DeclaredTask):
        return function.name
    if isinstance(function, Task):
        return task_name(function)
    return function


class DocketTestMixin:
    """For ``SimpleTestCase``/``TestCase`` subclasses: dockets on ``memory://`` for each
    test, ``self.docket_runner`` (a ``DocketTestRunner``) and shortcuts."""

    docket_runner: DocketTestRunner

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        manager = memory_dockets()
        self.docket_runner = manager.__enter__()
        self.addCleanup(manager.__exit__, None, None, None)  # type: ignore[attr-defined]

    def run_docket_tasks(self, alias: str = "default", **options: Any) -> list[Execution]:
        return self.docket_runner.run_pending(alias, **options)

    def assertTaskScheduled(self, function: Any, **kwargs: Any) -> None:
        self.docket_runner.assert_task_scheduled(function, **kwargs)

    def assertTaskNotScheduled(self, function: Any, **kwargs: Any) -> None:
        self.docket_runner.assert_task_not_scheduled(function, **kwargs)

    def assertNoTasks(self, docket: str = "default") -> None:
        self.docket_runner.assert_no_tasks(docket)


__all__ = [
    "DocketTestMixin",
    "DocketTestRunner",
    "memory_dockets",
    "memory_setting",
]
