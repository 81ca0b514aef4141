"""``@docket_django.task``: a docket task declared in a Django app, which can enqueue
itself (through ``docket_django.producer``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar, overload

from docket import Cron, Execution, Perpetual, Retry, Timeout
from docket.integration import uuid7_str

from .conf import DEFAULT_ALIAS
from .producer import Addition
from .registry import DeclaredTask, make_runnable, register

P = ParamSpec("P")
R = TypeVar("R")

KeySpec = str | Callable[..., str] | None


def _retry_dependency(retry: int | Retry | None, retry_delay: timedelta | float) -> Retry | None:
    if retry is None or isinstance(retry, Retry):
        return retry
    delay = retry_delay if isinstance(retry_delay, timedelta) else timedelta(seconds=retry_delay)
    return Retry(attempts=retry, delay=delay)


def _timeout_dependency(timeout: Timeout | timedelta | float | None) -> Timeout | None:
    if timeout is None or isinstance(timeout, Timeout):
        return timeout
    return Timeout(timeout if isinstance(timeout, timedelta) else timedelta(seconds=timeout))


class DjangoTask(DeclaredTask[P, R]):
    """A docket task declared in a Django app. Calling it runs the function directly;
    ``enqueue`` / ``schedule`` add it to its docket (transaction-aware, sync);
    ``aenqueue`` / ``aschedule`` do the same from async code."""

    def __init__(
        self,
        function: Callable[P, R],
        *,
        name: str,
        alias: str,
        key: KeySpec,
        runnable: Callable[..., Any],
    ) -> None:
        super().__init__(function, name=name, alias=alias, runnable=runnable)
        self.key = key

    def _key_for(self, key: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if key is not None:
            return key
        if self.key is None:
            return uuid7_str()
        if callable(self.key):
            return self.key(*args, **kwargs)
        bound = inspect.signature(self.function).bind_partial(*args, **kwargs)
        return self.key.format(**bound.arguments)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Add the task now (or at the commit of the current transaction); its key."""
        return self.schedule(*args, **kwargs)  # type: ignore[arg-type]

    def schedule(
        self,
        *args: Any,
        when: datetime | None = None,
        delay: timedelta | None = None,
        key: str | None = None,
        on_commit: bool | None = None,
        **kwargs: Any,
    ) -> str:
        """Add the task with a time (``when`` or ``delay``) and/or a key; returns the key
        at once, even when the write waits for the transaction's commit."""
        return self._addition(args, kwargs, when, delay, key).enqueue(on_commit)

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> Execution:
        return await self.aschedule(*args, **kwargs)  # type: ignore[arg-type]

    async def aschedule(
        self,
        *args: Any,
        when: datetime | None = None,
        delay: timedelta | None = None,
        key: str | None = None,
        **kwargs: Any,
    ) -> Execution:
        """Add the task from async code, right away; returns docket's ``Execution``."""
        return await self._addition(args, kwargs, when, delay, key).aenqueue()

    def _addition(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        when: datetime | None,
        delay: timedelta | None,
        key: str | None,
    ) -> Addition:
        key = self._key_for(key, args, kwargs)
        return Addition.settle(self.alias, self.name, args, kwargs, key, when, delay)


@overload
def task(function: Callable[P, R], /) -> DjangoTask[P, R]: ...  # noqa: UP047


@overload
def task(
    function: None = None,
    /,
    *,
    name: str | None = None,
    key: KeySpec = None,
    retry: int | Retry | None = None,
    retry_delay: timedelta | float = 0,
    timeout: Timeout | timedelta | float | None = None,
    perpetual: Perpetual | timedelta | None = None,
    cron: Cron | str | None = None,
    queue: str = DEFAULT_ALIAS,
) -> Callable[[Callable[P, R]], DjangoTask[P, R]]: ...


def task(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    key: KeySpec = None,
    retry: int | Retry | None = None,
    retry_delay: timedelta | float = 0,
    timeout: Timeout | timedelta | float | None = None,
    perpetual: Perpetual | timedelta | None = None,
    cron: Cron | str | None = None,
    queue: str = DEFAULT_ALIAS,
) -> Any:
    """Declare a docket task in a Django app (usually in ``<app>/tasks.py``)::

        @docket_django.task(retry=3, retry_delay=10, timeout=60, key="receipt-{order_id}")
        def send_receipt(order_id: int) -> None:
            order = Order.objects.get(pk=order_id)   # plain ORM: sync tasks run in threads
            ...

        send_receipt.enqueue(order_id=7)             # after commit, when inside atomic()

    Options: ``name`` (default: the function's name), ``key`` (default key: a format
    string over the call's arguments, or a callable), ``retry`` (attempts, or a docket
    ``Retry``/``ExponentialRetry``) with ``retry_delay``, ``timeout`` (seconds,
    timedelta or ``Timeout``), ``perpetual`` (an interval: the task is kept scheduled
    by every worker, so it must take no arguments; or a ``Perpetual``), ``cron`` (an
    expression or a ``Cron``), ``queue`` (the ``DOCKET`` alias it runs on). Sync and
    async functions both work; the function may also declare docket dependencies
    (``TaskLogger``, ``Progress``, ...) as usual.
    """
    if perpetual is not None and cron is not None:
        raise TypeError("A task is either perpetual or cron, not both")
    completion: Perpetual | None = None
    if isinstance(perpetual, timedelta):
        completion = Perpetual(every=perpetual, automatic=True)
    elif perpetual is not None:
        completion = perpetual
    elif isinstance(cron, str):
        completion = Cron(cron)
    elif cron is not None:
        completion = cron

    def decorate(function: Callable[..., Any]) -> DjangoTask[Any, Any]:
        runnable = make_runnable(
            function,
            retry=_retry_dependency(retry, retry_delay),
            timeout=_timeout_dependency(timeout),
            perpetual=completion,
        )
        registration = register(function, name=name, alias=queue, runnable=runnable)
        return DjangoTask(function, name=registration.name, alias=queue, key=key, runnable=runnable)

    if function is not None:
        return decorate(function)
    return decorate
