"""docket_django: the Django app of docket.

Add ``"docket_django"`` to ``INSTALLED_APPS``, configure ``DOCKET``, declare tasks with
``@docket_django.task`` in ``<app>/tasks.py`` and run ``python manage.py docket_worker``.
``@django.tasks.task`` functions run on the same workers through
``docket_django.backend.DocketBackend``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .decorator import DjangoTask, task
    from .dockets import get_docket
    from .producer import aenqueue, enqueue
    from .transactions import immediate

__all__ = ["DjangoTask", "aenqueue", "enqueue", "get_docket", "immediate", "task"]

_EXPORTS = {
    "get_docket": "dockets",
    "enqueue": "producer",
    "aenqueue": "producer",
    "task": "decorator",
    "DjangoTask": "decorator",
    "immediate": "transactions",
}


def __getattr__(name: str) -> Any:
    # Lazy: Django imports this package (INSTALLED_APPS) before settings and the app
    # registry are ready, and the modules behind these names need both.
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'docket_django' has no attribute {name!r}")
    module = importlib.import_module(f"docket_django.{module_name}")
    return getattr(module, name)
