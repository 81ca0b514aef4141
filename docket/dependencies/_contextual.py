"""Dependencies on where a run happens: its docket, worker, execution and key."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from ._base import Provider, current_docket, current_execution, current_worker

if TYPE_CHECKING:
    from ..docket import Docket
    from ..execution import Execution
    from ..worker import Worker


class _CurrentDocket(Provider["Docket"]):
    async def __aenter__(self) -> Docket:
        return current_docket.get()


class _CurrentWorker(Provider["Worker"]):
    async def __aenter__(self) -> Worker:
        return current_worker.get()


class _CurrentExecution(Provider["Execution"]):
    async def __aenter__(self) -> Execution:
        return current_execution.get()


class _TaskKey(Provider[str]):
    async def __aenter__(self) -> str:
        return current_execution.get().key


def CurrentDocket() -> Docket:
    """The ``Docket`` the running task came from."""
    return cast("Docket", _CurrentDocket())


def CurrentWorker() -> Worker:
    """The ``Worker`` running the task."""
    return cast("Worker", _CurrentWorker())


def CurrentExecution() -> Execution:
    """The ``Execution`` being run (key, attempt, arguments, progress...)."""
    return cast("Execution", _CurrentExecution())


def TaskKey() -> str:
    """The key of the running task."""
    return cast(str, _TaskKey())
