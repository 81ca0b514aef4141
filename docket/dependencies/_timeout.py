"""``Timeout``: cancel a run that takes too long."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Self

from ._base import Runtime

if TYPE_CHECKING:
    from ..execution import Execution


class Timeout(Runtime["Timeout"]):
    """Cancel the run once it has taken ``base``; it then fails with ``TimeoutError``
    (which a ``Retry`` retries like any failure).

    The value injected for a run can look at ``remaining()`` and push the deadline back
    with ``extend(by)`` (``by`` defaults to ``base``).

    A plain (non-async) task function cannot be interrupted, so it is not timed.
    """

    base: timedelta

    def __init__(self, base: timedelta) -> None:
        if base <= timedelta(0):
            raise ValueError(f"Timeout must be positive, got {base}")
        self.base = base
        self._extended = timedelta(0)
        self._timeout: asyncio.Timeout | None = None

    def __repr__(self) -> str:
        return f"Timeout({self.base!r})"

    async def __aenter__(self) -> Self:
        return type(self)(self.base)

    def remaining(self) -> timedelta:
        """How long the run may still take (the whole allowance before it starts)."""
        timeout = self._timeout
        if timeout is None:
            return self.base + self._extended
        deadline = timeout.when()
        assert deadline is not None
        return timedelta(seconds=deadline - asyncio.get_running_loop().time())

    def expired(self) -> bool:
        return self._timeout is not None and self._timeout.expired()

    def extend(self, by: timedelta | None = None) -> None:
        """Move the deadline ``by`` later (``base`` when not given)."""
        by = self.base if by is None else by
        timeout = self._timeout
        if timeout is None:
            self._extended += by
            return
        deadline = timeout.when()
        assert deadline is not None
        timeout.reschedule(deadline + by.total_seconds())

    async def run(
        self,
        execution: Execution,
        function: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.base + self._extended).total_seconds()
        result: Any = function(*args, **kwargs)
        if not inspect.isawaitable(result):
            return result
        try:
            async with asyncio.timeout_at(deadline) as timeout:
                self._timeout = timeout
                return await result
        except TimeoutError as error:
            if not self.expired():
                raise  # the task's own TimeoutError, not ours
            raise TimeoutError(
                f"Task {execution.key} exceeded its timeout of {self.base.total_seconds():g}s"
            ) from error
