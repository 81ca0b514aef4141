"""The helpers that ``docket.cli`` has always exported, with their released behaviour.

Scripts and tests written for the released docket import these from ``docket.cli``
(``duration``, ``interpret_python_value``, ``iterate_with_timeout``, ``relative_time``,
``validate_url``). Our commands use richer versions of some of them (durations with
``ms`` and decimals, typed values with short prefixes); each function here accepts at
least what the released one did and gives the same result for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from .._imports import import_object
from .._typed_values import parse_typed_value
from .durations import parse_duration
from .options import check_url

__all__ = [
    "duration",
    "interpret_python_value",
    "iterate_with_timeout",
    "local_time",
    "relative_time",
    "validate_url",
]


async def iterate_with_timeout[T](
    iterator: AsyncIterator[T], timeout: float
) -> AsyncGenerator[T | None, None]:
    """Yield what ``iterator`` yields, or None whenever ``timeout`` seconds pass without
    an item (so the caller can poll), and close ``iterator`` however this ends."""
    try:
        while True:
            try:
                yield await asyncio.wait_for(anext(iterator), timeout=timeout)
            except TimeoutError:
                yield None
            except StopAsyncIteration:
                break
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def duration(text: str | timedelta) -> timedelta:
    """Read a duration: ``123`` (seconds), ``123s``, ``5m``, ``2h``, ``mm:ss``,
    ``hh:mm:ss``, and also ``250ms``, ``1.5s`` and ``2d``. Raises ``ValueError``."""
    return parse_duration(text)


def validate_url(url: str) -> str:
    """Return ``url`` if a command running in its own process can use it; raise
    ``typer.BadParameter`` for ``memory://`` (a docket inside one process) and for
    anything that is not a Redis URL."""
    return check_url(url)


def local_time(when: datetime) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def relative_time(now: datetime, when: datetime) -> str:
    """``in 0:15:00`` or ``0:15:00 ago`` within half an hour of ``now``, else
    ``at <local time>``."""
    delta = now - when
    if delta < -timedelta(minutes=30) or delta >= timedelta(minutes=30):
        # Looked up at call time, so a test (or a caller) can swap the clock format.
        return f"at {local_time(when)}"
    if delta < timedelta(0):
        return f"in {-delta}"
    return f"{delta} ago"


def interpret_python_value(value: str | None) -> Any:
    """Turn ``type:value`` text from the command line into a Python value.

    ``type`` is a short prefix (``int:5``, ``bool:true``, ``timedelta:30``, ``uuid:...``;
    see ``docket strike --help``) or, as the released docket spelled it, the import
    path of any callable that builds the value from the text (``decimal.Decimal:9.99``,
    ``datetime.timedelta:10`` for seconds, ``mymodule.Tier:gold``). Text without a
    ``type:`` prefix is a string. None stays None.
    """
    if value is None:
        return None
    prefix, colon, rest = value.partition(":")
    if not colon:
        return value
    try:
        return parse_typed_value(value)
    except ValueError:
        if "." not in prefix:
            raise
    return _construct(prefix, rest, value)


def _construct(path: str, text: str, original: str) -> Any:
    """Build a value with the callable at the import path ``path`` (``module.Name``)."""
    module_name, _, member_name = path.rpartition(".")
    try:
        member = import_object(f"{module_name}:{member_name}", "type")
    except (ImportError, ValueError) as error:
        raise ValueError(f"cannot read {original!r}: there is no type {path!r} ({error})") from None
    if member is bool:
        return text.lower() == "true"
    if member is timedelta:
        return timedelta(seconds=float(text))
    try:
        return member(text)
    except Exception as error:
        raise ValueError(f"cannot read {text!r} as {path}: {error}") from None
