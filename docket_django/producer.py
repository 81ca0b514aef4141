"""Adding docket tasks from Django code: sync and async, transaction-aware."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from docket import Execution
from docket.integration import uuid7_str

from .conf import DEFAULT_ALIAS, DocketSettings, docket_settings
from .portal import get_portal
from .registry import DeclaredTask, register, tasks_for
from .transactions import run_on_commit_or_now


def _when(when: datetime | None, delay: timedelta | None) -> datetime | None:
    if when is not None and delay is not None:
        raise TypeError("Give when= or delay=, not both")
    if delay is not None:
        return datetime.now(UTC) + delay
    return when


@dataclass(frozen=True)
class Addition:
    """One task to add, its call settled: the docket alias's settings looked up, the key
    chosen, ``delay`` turned into a time. ``enqueue``/``aenqueue`` and a ``DjangoTask``'s
    ``schedule``/``aschedule`` all come to this; only the sending differs, sync (perhaps
    at the transaction's commit) or async (at once)."""

    config: DocketSettings
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    key: str
    when: datetime | None
    replace: bool

    @classmethod
    def settle(
        cls,
        alias: str,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str | None,
        when: datetime | None,
        delay: timedelta | None,
        replace: bool = False,
    ) -> Addition:
        config = docket_settings(alias)
        return cls(config, name, args, kwargs, key or uuid7_str(), _when(when, delay), replace)

    def enqueue(self, on_commit: bool | None) -> str:
        """Send it now, or when the current transaction commits (not at all on a
        rollback); the key either way, at once."""
        portal = get_portal()

        def write() -> None:
            portal.run(self._send())

        run_on_commit_or_now(
            write,
            on_commit=on_commit,
            default=self.config.enqueue_on_commit,
            using=self.config.database,
        )
        return self.key

    async def aenqueue(self) -> Execution:
        """Send it now."""
        return await get_portal().arun(self._send())

    async def _send(self) -> Execution:
        docket = await get_portal().docket(self.config.alias)
        if self.replace:
            return await docket.replace(self.name, self.when, self.key)(*self.args, **self.kwargs)
        return await docket.add(self.name, when=self.when, key=self.key)(*self.args, **self.kwargs)


def _name_of(function: Callable[..., Any] | str) -> tuple[str, str | None]:
    if isinstance(function, str):
        return function, None
    if isinstance(function, DeclaredTask):
        return function.name, function.alias
    name = function.__name__
    if tasks_for(DEFAULT_ALIAS).get(name) is None:
        register(function)
    return name, None


def _addition(
    function: Callable[..., Any] | str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    docket: str | None,
    key: str | None,
    when: datetime | None,
    delay: timedelta | None,
    replace: bool,
) -> Addition:
    name, task_alias = _name_of(function)
    alias = docket or task_alias or DEFAULT_ALIAS
    return Addition.settle(alias, name, args, kwargs, key, when, delay, replace)


def enqueue(
    function: Callable[..., Any] | str,
    *args: Any,
    docket: str | None = None,
    key: str | None = None,
    when: datetime | None = None,
    delay: timedelta | None = None,
    on_commit: bool | None = None,
    replace: bool = False,
    **kwargs: Any,
) -> str:
    """Add ``function(*args, **kwargs)`` to a docket from sync code; returns its key.

    Inside ``transaction.atomic()`` the write waits for the commit (and is dropped on a
    rollback) unless ``on_commit=False`` or ``immediate()`` say otherwise; the key is
    returned at once either way. ``docket`` is the ``DOCKET`` alias (default: the task's,
    else ``"default"``).
    """
    return _addition(function, args, kwargs, docket, key, when, delay, replace).enqueue(on_commit)


async def aenqueue(
    function: Callable[..., Any] | str,
    *args: Any,
    docket: str | None = None,
    key: str | None = None,
    when: datetime | None = None,
    delay: timedelta | None = None,
    replace: bool = False,
    **kwargs: Any,
) -> Execution:
    """Add a task from async code, right away; returns docket's ``Execution``."""
    return await _addition(function, args, kwargs, docket, key, when, delay, replace).aenqueue()
