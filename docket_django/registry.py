"""The per-alias registry of docket-native tasks, and how each one is wrapped to run.

``@docket_django.task`` (``docket_django.decorator``) registers here; the dockets
built from the settings register what is here. A decorated task enqueues itself
through the producer, which needs the entered dockets: its class builds on
``DeclaredTask`` here, so the registry stays below both.

``django.tasks`` tasks found in the task modules are kept here too: each runs under its
own module path (``run_django_task`` registered under that name), and a docket built
here resolves any other module path that names a ``DocketBackend`` task the first time
a message asks for it (``TaskTable``), since ``django.tasks`` tasks may live in modules
autodiscovery never imports.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar

from django.tasks import Task
from django.utils.module_loading import import_string

from docket import Docket, Perpetual, Retry, Timeout

from .conf import DEFAULT_ALIAS
from .runner import RUNNER_NAME, run_django_task, runs_on_docket, task_name
from .runtime import run_scoped

logger = logging.getLogger("docket_django.registry")

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
_django_tasks: dict[str, Task[..., Any]] = {}


def registrations() -> list[Registration]:
    """Every registration made, duplicates included (the checks report those)."""
    return list(_registrations)


def tasks_for(alias: str) -> dict[str, Registration]:
    return dict(_by_alias.get(alias, {}))


def register_django_task(task: Task[..., Any]) -> str:
    """Remember a ``django.tasks`` task, to be registered under its module path on the
    dockets its backend can reach; the name."""
    name = task_name(task)
    _django_tasks[name] = task
    return name


def django_tasks() -> dict[str, Task[..., Any]]:
    """The ``django.tasks`` tasks found so far, by docket task name."""
    return dict(_django_tasks)


def _reaches(task: Task[..., Any], alias: str) -> bool:
    """Whether ``task``'s backend is a ``DocketBackend`` that can route to ``alias``."""
    if not runs_on_docket(task):
        return False
    from django.tasks import task_backends

    return alias in task_backends[task.backend].docket_aliases()  # type: ignore[attr-defined]


# Names looked up that are no django.tasks task of a DocketBackend (bounded, so a flood
# of distinct unknown names cannot grow it without end).
_not_tasks: set[str] = set()
_NOT_TASKS_KEPT = 10_000


def _in_an_installed_app(name: str) -> bool:
    from django.apps import apps

    if len(_not_tasks) > _NOT_TASKS_KEPT:
        _not_tasks.clear()
    return any(name.startswith(config.name + ".") for config in apps.get_app_configs())


class TaskTable(dict[str, Any]):
    """``Docket.tasks`` for the dockets built here: a name missing from it that is the
    module path of a ``DocketBackend`` task (``shop.jobs.write_receipt``) is registered
    the first time it is looked up, to ``run_django_task``. The worker looks names up
    like this, so a ``django.tasks`` task in a module autodiscovery does not import
    still runs under its own name instead of being dead-lettered as unknown."""

    def _resolve(self, name: object) -> Any:
        if not isinstance(name, str) or "." not in name or name.startswith("."):
            return None
        # The name comes off a Redis message, read before its signature is checked:
        # only modules of installed apps are imported for it, and each name once.
        if name in _not_tasks or not _in_an_installed_app(name):
            return None
        try:
            found = import_string(name)
        except Exception as error:  # not importable: an unknown task, as before
            logger.debug("%r is not a django.tasks task: %s", name, error)
            _not_tasks.add(name)
            return None
        if not runs_on_docket(found) or task_name(found) != name:
            _not_tasks.add(name)
            return None
        _django_tasks.setdefault(name, found)
        self[name] = run_django_task
        return run_django_task

    def get(self, name: str, default: Any = None) -> Any:
        if dict.__contains__(self, name):
            return self[name]
        found = self._resolve(name)
        return default if found is None else found

    def __missing__(self, name: str) -> Any:
        found = self._resolve(name)
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or self._resolve(name) is not None


def register_all(docket: Docket, alias: str) -> None:
    """Register ``alias``'s tasks on ``docket``: the docket-native ones, the
    ``django.tasks`` ones found so far (each under its module path) and the generic
    ``django_task`` runner of earlier releases."""
    if not isinstance(docket.tasks, TaskTable):
        docket.tasks = TaskTable(docket.tasks)
    if docket.tasks.get(RUNNER_NAME) is not run_django_task:
        docket.register(run_django_task, names=[RUNNER_NAME])
    for name, task in _django_tasks.items():
        if _reaches(task, alias) and dict.get(docket.tasks, name) is not run_django_task:
            docket.register(run_django_task, names=[name])
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
        if isinstance(function, Task):
            register_django_task(function)  # its backend says where it runs
            continue
        register(function, alias=alias)
