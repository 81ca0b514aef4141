"""What ``docket.add(function)`` returns: a task, callable to add it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from ._priority import Priority
from .execution import TaskCall

if TYPE_CHECKING:
    from .docket import Docket
    from .execution import Execution

P = ParamSpec("P")
R = TypeVar("R")


class TaskHandle(Generic[P, R]):
    """A registered task, callable to add it: ``await handle(*a, **kw)`` runs it now,
    ``await handle.schedule(*a, key=..., when=..., **kw)`` with a key and/or a time."""

    def __init__(
        self,
        docket: Docket,
        function: Callable[P, R],
        task_name: str,
        when: datetime | None = None,
        key: str | None = None,
        mode: str = "add",
        priority: Priority = Priority.NORMAL,
    ) -> None:
        self.docket = docket
        self.fn = function
        self.task_name = task_name
        self._when = when
        self._key = key
        self._mode = mode
        self.priority = priority
        self.__name__ = getattr(function, "__name__", "task")
        self.__doc__ = getattr(function, "__doc__", None)
        self.__wrapped__ = function

    def call_metadata(self) -> dict[str, Any]:
        """The ``Execution.metadata`` each call of this handle adds its run with: none
        here; an integration's handle (``docket_starlette``'s, say) returns what it
        carries."""
        return {}

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Execution:
        return await self.docket.engine.schedule(
            self._mode,
            TaskCall(
                self.fn,
                self._when,
                self._key,
                args,
                kwargs,
                self.task_name,
                self.priority,
                self.call_metadata(),
            ),
        )

    async def schedule(
        self,
        *args: Any,
        key: str | None = None,
        when: datetime | None = None,
        **kwargs: Any,
    ) -> Execution:
        task = TaskCall(
            self.fn,
            when or self._when,
            key or self._key,
            args,
            kwargs,
            self.task_name,
            self.priority,
            self.call_metadata(),
        )
        return await self.docket.engine.schedule(self._mode, task)

    def __repr__(self) -> str:
        return f"<docket task {self.__name__} on {self.docket.name!r}>"
