"""Autodiscovery of each installed app's task modules (``tasks`` by default).

Importing a module runs its ``@docket_django.task`` decorators, which register the
tasks. A module may also list plain functions in ``docket_tasks = [...]`` (and, for
another alias, ``docket_tasks_by_docket = {"reports": [...]}``). The ``django.tasks``
tasks (``@django.tasks.task``) a module defines are remembered too, so that workers
register each under its own name, its module path.
"""

from __future__ import annotations

import importlib
from importlib.util import find_spec
from types import ModuleType

from django.apps import apps
from django.tasks import Task

from .conf import task_module_names
from .registry import register_django_task, register_many

discovered: list[str] = []


def _register_django_tasks(module: ModuleType) -> None:
    for value in list(vars(module).values()):
        if isinstance(value, Task):
            register_django_task(value)


def _register_lists(module: ModuleType) -> None:
    listed = getattr(module, "docket_tasks", None)
    if listed:
        register_many(listed)
    by_docket = getattr(module, "docket_tasks_by_docket", None)
    if by_docket:
        for alias, functions in by_docket.items():
            register_many(functions, alias=alias)


def autodiscover() -> list[str]:
    """Import ``<app>.<name>`` for every installed app and configured module name; the
    dotted names imported."""
    found: list[str] = []
    for app_config in apps.get_app_configs():
        for module_name in task_module_names():
            dotted = f"{app_config.name}.{module_name}"
            try:
                if find_spec(dotted) is None:
                    continue
            except ModuleNotFoundError:
                continue
            module = importlib.import_module(dotted)
            _register_django_tasks(module)
            _register_lists(module)
            found.append(dotted)
    discovered[:] = found
    return found
