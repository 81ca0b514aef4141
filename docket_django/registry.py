"""``@docket_django.task`` and the per-alias registry of docket-native tasks."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, TypeVar, overload

from docket import Cron, Docket, Execution, Perpetual, Retry, Timeout
from docket._uuid7 import uuid7_str

from .conf import DEFAULT_ALIAS

P = ParamSpec("P")
R = TypeVar("R")

KeySpec = str | Callable[..., str] | None


@dataclass
class Registration:
    name: str
    alias: str
    function: Callable[..., Any]
    runnable: Callable[..., Any]
    module: str
    qualname: str


_registrations: list[Registration] = []
_by_alias: dict[str, dict[str, Registration]] = {}


def registrations() -> list[Registration]:
    """Every registration made, duplicates included (the checks report those)."""
    return list(_registrations)


def tasks_for(alias: str) -> dict[str, Registration]:
    return dict(_by_alias.get(alias, {}))


def register_all(docket: Docket, alias: str) -> None:
    """Register ``alias``'s tasks (and the ``django.tasks`` runner) on ``docket``."""
    from .backend import RUNNER_NAME, run_django_task

    if docket.tasks.get(RUNNER_NAME) is not run_django_task:
        docket.register(run_django_task, names=[RUNNER_NAME])
    for name, registration in _by_alias.get(alias, {}).items():
        if docket.tasks.get(name) is not registration.runnable:
            docket.register(registration.runnable, names=[name])


def _retry_dependency(retry: int | Retry | None, retry_delay: timedelta | float) -> Retry | None:
    if retry is None or isinstance(retry, Retry):
        return retry
    delay = retry_delay if isinstance(retry_delay, timedelta) else timedelta(seconds=retry_delay)
    return Retry(attempts=retry, delay=delay)


def _timeout_dependency(timeout: Timeout | timedelta | float | None) -> Timeout | None:
    if timeout is None or isinstance(timeout, Timeout):
        return timeout
    return Timeout(timeout if isinstance(timeout, timedelta) else timedelta(seconds=timeout))


def make_runnable(
    function: Callable[..., Any],
    *,
    retry: Retry | None = None,
    timeout: Timeout | None = None,
    perpetual: Perpetual | None = None,
) -> Callable[..., Any]:
    """The coroutine function docket workers run for ``function``: the run is scoped like a
    request (see ``docket_django.runtime``), and ``retry``/``timeout``/``perpetual`` are
    added as docket dependencies next to the function's own."""
    from .runtime import run_scoped

    extra: dict[str, Any] = {}
    if retry is not None:
        extra["docket_django_retry"] = retry
    if timeout is not None:
        extra["docket_django_timeout"] = timeout

    @functools.wraps(function)
    async def runnable(*args: Any, **kwargs: Any) -> Any:
        for name in extra:
            kwargs.pop(name, None)
        return await run_scoped(function, *args, **kwargs)

    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    var_keyword = [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    parameters = [p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for name, dependency in extra.items():
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=dependency)
        )
    runnable.__signature__ = signature.replace(parameters=parameters + var_keyword)  # type: ignore[attr-defined]
    if perpetual is not None:
        perpetual(runnable)
    return runnable


class DjangoTask(Generic[P, R]):
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
        self.function = function
        self.name = name
        self.alias = alias
        self.key = key
        self.runnable = runnable
        functools.update_wrapper(self, function)

    def __repr__(self) -> str:
        return f"<docket_django task {self.name} on {self.alias!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(*args, **kwargs)

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
        from .producer import enqueue_name

        return enqueue_name(
            self.name,
            args,
            kwargs,
            alias=self.alias,
            key=self._key_for(key, args, kwargs),
            when=when,
            delay=delay,
            on_commit=on_commit,
        )

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
        from .producer import aenqueue_name

        return await aenqueue_name(
            self.name,
            args,
            kwargs,
            alias=self.alias,
            key=self._key_for(key, args, kwargs),
            when=when,
            delay=delay,
        )


def register(
    function: Callable[..., Any],
    *,
    name: str | None = None,
    alias: str = DEFAULT_ALIAS,
    runnable: Callable[..., Any] | None = None,
) -> Registration:
    """Make ``function`` runnable by the workers of ``alias`` (wrapped for DB hygiene)."""
    if isinstance(function, DjangoTask):
        function = function.function
    name = name or function.__name__
    if runnable is None:
        runnable = make_runnable(function)
    registration = Registration(
        name=name,
        alias=alias,
        function=function,
        runnable=runnable,
        module=getattr(function, "__module__", "?"),
        qualname=getattr(function, "__qualname__", name),
    )
    existing = _by_alias.get(alias, {}).get(name)
    same = existing is not None and (existing.module, existing.qualname) == (
        registration.module,
        registration.qualname,
    )
    if existing is not None and same:
        # The same function again (a module reloaded, say): replace, not a duplicate.
        _registrations.remove(existing)
        _by_alias[alias][name] = registration
    else:
        _by_alias.setdefault(alias, {}).setdefault(name, registration)
    _registrations.append(registration)
    return registration


def register_many(functions: Iterable[Callable[..., Any]], alias: str = DEFAULT_ALIAS) -> None:
    for function in functions:
        if isinstance(function, DjangoTask):
            continue  # registered by the decorator already
        register(function, alias=alias)


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
