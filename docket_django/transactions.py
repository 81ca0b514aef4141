"""Enqueueing and database transactions.

Inside ``transaction.atomic()`` an enqueue is deferred to ``transaction.on_commit``: the
task is written to Redis only once the transaction commits, never after a rollback. The
caller still gets the task's key (or the ``TaskResult`` id) at once, because it is
generated up front. ``immediate()`` or ``on_commit=False`` enqueue right away instead;
``ENQUEUE_ON_COMMIT: False`` in ``DOCKET`` makes that the default.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.db import transaction

_immediate: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "docket_django_immediate", default=False
)


@contextmanager
def immediate() -> Iterator[None]:
    """Within this block, enqueues go to Redis at once, even inside ``atomic()``."""
    token = _immediate.set(True)
    try:
        yield
    finally:
        _immediate.reset(token)


def should_defer(on_commit: bool | None, default: bool, using: str) -> bool:
    """Whether an enqueue now should wait for the commit of ``using``'s transaction."""
    if on_commit is False or (on_commit is None and _immediate.get()):
        return False
    if on_commit is None and not default:
        return False
    return bool(transaction.get_connection(using).in_atomic_block)


def run_on_commit_or_now(
    action: Callable[[], None], *, on_commit: bool | None, default: bool, using: str
) -> bool:
    """Run ``action`` after the commit (True) or now (False)."""
    if should_defer(on_commit, default, using):
        transaction.on_commit(action, using=using)
        return True
    action()
    return False
