"""Markers for task parameters, used through ``typing.Annotated``."""

from __future__ import annotations

from typing import Any


class Logged:
    """Marks a parameter whose value may appear in log lines and call reprs.

    Unmarked arguments print as ``...``: arguments often carry personal data or secrets,
    so showing them is opt-in. ``Logged(length_only=True)`` shows only a sized value's
    length, as the released docket prints it: ``{len 3}`` for a dict or set, ``(len 3)``
    for a tuple and ``[len 3]`` for a list or any other sized value (the value itself when it
    has no length, as released).
    """

    def __init__(self, length_only: bool = False) -> None:
        self.length_only = length_only

    def format(self, value: Any) -> str:
        if self.length_only:
            if isinstance(value, dict | set | frozenset):
                return f"{{len {len(value)}}}"
            if isinstance(value, tuple):
                return f"(len {len(value)})"
            if hasattr(value, "__len__"):
                return f"[len {len(value)}]"
        return repr(value)


def logged_marker(metadata: tuple[Any, ...]) -> Logged | None:
    for item in metadata:
        if item is Logged:
            return Logged()
        if isinstance(item, Logged):
            return item
    return None
