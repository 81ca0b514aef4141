"""Durations as people type them: ``90``, ``90s``, ``1.5s``, ``250ms``, ``5m``, ``1h``,
``2d``, ``mm:ss`` and ``hh:mm:ss``."""

from __future__ import annotations

import math
import re
from datetime import timedelta

__all__ = ["format_duration_option", "parse_duration"]

_NUMBER = r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+"
_WITH_UNIT = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_CLOCK_PART = re.compile(r"[0-9]+")
_CLOCK_SECONDS = re.compile(rf"{_NUMBER}")

_HELP = "use e.g. 90, 90s, 250ms, 5m, 1h, mm:ss or hh:mm:ss"


def parse_duration(text: str | timedelta) -> timedelta:
    """Read ``text`` as a duration; raises ``ValueError`` saying what is accepted."""
    if isinstance(text, timedelta):
        return text
    value = text.strip().lower()
    if ":" in value:
        return _parse_clock(text, value)
    match = _WITH_UNIT.fullmatch(value)
    if match is None:
        raise ValueError(f"{text!r} is not a duration ({_HELP})")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    return _checked(text, seconds)


def _parse_clock(text: str, value: str) -> timedelta:
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"{text!r} is not a duration ({_HELP})")
    *leading, last = parts
    if not all(_CLOCK_PART.fullmatch(part) for part in leading) or not _CLOCK_SECONDS.fullmatch(
        last
    ):
        raise ValueError(f"{text!r} is not a duration ({_HELP})")
    seconds = float(last)
    if seconds >= 60:
        raise ValueError(f"{text!r}: seconds must be below 60 in mm:ss and hh:mm:ss")
    if len(parts) == 3:
        hours, minutes = int(leading[0]), int(leading[1])
        if minutes >= 60:
            raise ValueError(f"{text!r}: minutes must be below 60 in hh:mm:ss")
    else:
        hours, minutes = 0, int(leading[0])
    return _checked(text, hours * 3600 + minutes * 60 + seconds)


def _checked(text: str, seconds: float) -> timedelta:
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is not a duration ({_HELP})")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration") from None


def format_duration_option(value: timedelta) -> str:
    """How a default duration is shown in ``--help`` (in the syntax the option takes)."""
    seconds = value.total_seconds()
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
