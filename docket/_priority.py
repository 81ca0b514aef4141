"""Task priorities: three levels, each one stream per partition that every worker reads.

The values are the ``level`` of a partition's ``Keys`` lane (see ``_redis/keys.py``),
and what the ``prio`` field of a stream message and of a task's record holds."""

from __future__ import annotations

from enum import IntEnum


class Priority(IntEnum):
    """How soon a due task runs next to others: a worker takes every due ``HIGH`` task
    before a ``NORMAL`` one, and every ``NORMAL`` before a ``LOW`` one, except that each
    level below the highest with work waiting gets a share of every read (see
    docs/priorities.md), so no level starves."""

    HIGH = 1
    NORMAL = 0
    LOW = -1


_ALLOWED = "Priority.HIGH, Priority.NORMAL or Priority.LOW (1, 0 or -1)"


def validate_priority(value: object, parameter: str = "priority") -> Priority:
    """``value`` as a ``Priority``; a ValueError naming ``parameter`` and the allowed
    values for anything else (a bool, a string such as ``"urgent"``, 7)."""
    if isinstance(value, Priority):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and -1 <= value <= 1:
        return Priority(value)
    raise ValueError(f"{parameter} must be {_ALLOWED}, not {value!r}")
