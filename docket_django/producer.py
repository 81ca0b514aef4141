"""Adding docket tasks from Django code: sync and async, transaction-aware."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from docket import Execution
from docket._uuid7 import uuid7_str

from .conf import DEFAULT_ALIAS, docket_settings
from .portal import get_portal
from .registry import DeclaredTask, register, tasks_for
from .transactions import run_on_commit_or_now


def _when(when: datetime | None, delay: timedelta | None) -> datetime | None:
    if when is not None and delay is not None:
        raise TypeError("Give when= or delay=, not both")
    if delay is not None:
        return datetime.now(UTC) + delay
    return when


async def _add(
    alias: str,
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    key: str,
    when: datetime | None,
    mode: str = "add",
) -> Execution:
    docket = await get_portal().docket(alias)
    if mode == "replace":
        return await docket.replace(name, when, key)(*args, **kwargs)
    return await docket.add(name, when=when, key=key)(*args, **kwargs)


def enqueue_name(
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    alias: str = DEFAULT_ALIAS,
    key: str | None = None,
    when: datetime | None = None,
    delay: timedelta | None = None,
    on_commit: bool | None = None,
    replace: bool = False,
) -> str:
    config = docket_settings(alias)
    key = key or uuid7_str()
    at = _when(when, delay)
    portal = get_portal()

    def write() -> None:
        portal.run(_add(alias, name, args, kwargs, key, at, "replace" if replace else "add"))

    run_on_commit_or_now(
        write, on_commit=on_commit, default=config.enqueue_on_commit, using=config.database
    )
    return key


async def aenqueue_name(
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    alias: str = DEFAULT_ALIAS,
    key: str | None = None,
    when: datetime | None = None,
    delay: timedelta | None = None,
    replace: bool = False,
) -> Execution:
    docket_settings(alias)
    return await get_portal().arun(
        _add(
            alias,
            name,
            args,
            kwargs,
            key or uuid7_str(),
            _when(when, delay),
            "replace" if replace else "add",
        )
    )


def _name_of(function: Callable[..., Any] | str) -> tuple[str, str | None]:
    if isinstance(function, str):
        return function, None
    if isinstance(function, DeclaredTask):
        return function.name, function.alias
    name = function.__name__
    if tasks_for(DEFAULT_ALIAS).get(name) is None:
        register(function)
    return name, None


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
    name, task_alias = _name_of(function)
    return enqueue_name(
        name,
        args,
        kwargs,
        alias=docket or task_alias or DEFAULT_ALIAS,
        key=key,
        when=when,
        delay=delay,
        on_commit=on_commit,
        replace=replace,
    )


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
    name, task_alias = _name_of(function)
    return await aenqueue_name(
        name,
        args,
        kwargs,
        alias=docket or task_alias or DEFAULT_ALIAS,
        key=key,
        when=when,
        delay=delay,
        replace=replace,
    )
