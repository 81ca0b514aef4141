"""The per-alias registry of docket-native tasks, and how each one is wrapped to run.

``@docket_django.task`` (``docket_django.decorator``) registers here; the dockets
built from the settings register what is here. A decorated task enqueues itself
through the producer, which needs the entered dockets: its class builds on
``DeclaredTask`` here, so the registry stays below both.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar

from docket import Docket, Perpetual, Retry, Timeout

from .conf import DEFAULT_ALIAS
from .runner import RUNNER_NAME, run_django_task
from .runtime import run_scoped

P = ParamSpec("P")
R = TypeVar("R")


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
    if docket.tasks.get(RUNNER_NAME) is not run_django_task:
        docket.register(run_django_task, names=[RUNNER_NAME])
    for name, registration in _by_alias.get(alias, {}).items():
        if docket.tasks.get(name) is not registration.runnable:
            docket.register(registration.runnable, names=[name])


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


class DeclaredTask(Generic[P, R]):
    """A function declared a docket task in a Django app, as the registry knows it:
    calling it runs the function directly. ``DjangoTask`` adds the enqueueing."""

    def __init__(
        self, function: Callable[P, R], *, name: str, alias: str, runnable: Callable[..., Any]
    ) -> None:
        self.function = function
        self.name = name
        self.alias = alias
        self.runnable = runnable
        functools.update_wrapper(self, function)

    def __repr__(self) -> str:
        return f"<docket_django task {self.name} on {self.alias!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(*args, **kwargs)


def register(
    function: Callable[..., Any],
    *,
    name: str | None = None,
    alias: str = DEFAULT_ALIAS,
    runnable: Callable[..., Any] | None = None,
) -> Registration:
    """Make ``function`` runnable by the workers of ``alias`` (wrapped for DB hygiene)."""
    if isinstance(function, DeclaredTask):
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
        if isinstance(function, DeclaredTask):
            continue  # registered by the decorator already
        register(function, alias=alias)
