"""Typed values on the command line: ``int:5``, ``date:2025-01-31``, ``none:`` and so on."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

__all__ = ["parse_typed_value"]


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, not {text!r}")


def _parse_none(text: str) -> None:
    if text:
        raise ValueError(f"'none:' takes no value, got {text!r}")


def _parse_datetime(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def _parse_date(text: str) -> date:
    return date.fromisoformat(text.strip())


def _parse_timedelta(text: str) -> timedelta:
    seconds = float(text)
    if not math.isfinite(seconds):
        raise ValueError(f"expected a number of seconds, not {text!r}")
    return timedelta(seconds=seconds)


def _parse_decimal(text: str) -> Decimal:
    try:
        return Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {text!r}") from None


def _parse_int(text: str) -> int:
    return int(text)


def _parse_float(text: str) -> float:
    return float(text)


def _parse_str(text: str) -> str:
    return text


def _parse_uuid(text: str) -> UUID:
    return UUID(text.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": _parse_int,
    "float": _parse_float,
    "bool": _parse_bool,
    "str": _parse_str,
    "decimal": _parse_decimal,
    "datetime": _parse_datetime,
    "date": _parse_date,
    "timedelta": _parse_timedelta,
    "uuid": _parse_uuid,
    "none": _parse_none,
}
# The released docket's CLI named types by their import path; accept those
# spellings (without importing anything) so existing scripts keep working.
_ALIASES = {
    "builtins.int": "int",
    "builtins.float": "float",
    "builtins.bool": "bool",
    "builtins.str": "str",
    "decimal.decimal": "decimal",
    "datetime.datetime": "datetime",
    "datetime.date": "date",
    "datetime.timedelta": "timedelta",
    "uuid.uuid": "uuid",
}
_PREFIX_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def parse_typed_value(text: str) -> Any:
    """Turn a command-line value such as ``int:5`` into a Python value.

    Prefixes: ``int: float: bool: str: decimal: datetime: date: timedelta:`` (seconds)
    ``uuid: none:``. Text without a known prefix is a string, except that a
    word before a colon that is not a known type is an error, to catch typos
    like ``itn:5``; write ``str:http://...`` for a string with such a colon.
    """
    prefix, colon, rest = text.partition(":")
    if not colon or not _PREFIX_PATTERN.fullmatch(prefix):
        return text
    kind = prefix.lower()
    kind = _ALIASES.get(kind, kind)
    parser = _PARSERS.get(kind)
    if parser is None:
        known = ", ".join(f"{name}:" for name in _PARSERS)
        raise ValueError(
            f"unknown type prefix {prefix!r} in {text!r}; known prefixes are {known} "
            f"(use 'str:{text}' for a string that contains a colon)"
        )
    try:
        return parser(rest)
    except (ValueError, OverflowError) as e:
        raise ValueError(f"cannot read {rest!r} as {kind}: {e}") from None
