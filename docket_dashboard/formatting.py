"""How the pages write times, durations and values: relative times as people say them
("in 53 s", "2 min ago"), which the page's script keeps current between refreshes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docket import Execution

_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))
_LONGEST_VALUE = 200


def span(length: float | timedelta) -> str:
    """A length of time (seconds, or a timedelta) in its largest unit and the next:
    "53 s", "2 min 5 s", "3 h"."""
    seconds = abs(length.total_seconds() if isinstance(length, timedelta) else length)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    whole = int(seconds)
    for index, (size, unit) in enumerate(_UNITS):
        if whole >= size:
            count, rest = divmod(whole, size)
            text = f"{count} {unit}"
            if index + 1 < len(_UNITS) and rest:
                smaller_size, smaller_unit = _UNITS[index + 1]
                if rest // smaller_size:
                    text += f" {rest // smaller_size} {smaller_unit}"
            return text
    return f"{whole} s"


def relative(moment: datetime | None, now: datetime) -> str:
    """``moment`` from ``now``: "in 53 s", "2 min ago", "just now"."""
    if moment is None:
        return "—"
    delta = (moment - now).total_seconds()
    if abs(delta) < 1:
        return "just now"
    return f"in {span(delta)}" if delta > 0 else f"{span(delta)} ago"


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "—"
    return span((end - start).total_seconds())


def call(execution: Execution) -> str:
    """The call as log lines show it (only ``Logged`` arguments), without the key the
    row shows beside it: ``send_invoice('ACME', ...)``."""
    shown = execution.call_repr()
    suffix = "{" + execution.key + "}"
    return shown.removesuffix(suffix)


def short(value: Any, limit: int = _LONGEST_VALUE) -> str:
    """``repr(value)``, cut at ``limit`` characters (a page lists many)."""
    try:
        text = repr(value)
    except Exception as error:  # a value whose repr fails is still shown as something
        text = f"<unrepresentable {type(value).__name__}: {error}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.isoformat()
