"""A strike's value as typed JSON, and the canonical text of such JSON.

A strike condition is identified by this form (so ``1`` and ``True`` are different
strikes) and stored in it, which is why it lives apart from both the conditions and
their stored records.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

__all__ = ["Garbled", "canonical_json", "expect", "from_json", "to_json"]

_MAX_DEPTH = 32
_INT_PATTERN = re.compile(r"0|-?[1-9][0-9]*")


def canonical_json(obj: Any) -> str:
    # Sorted keys, fixed separators and ASCII-only output make the text a pure
    # function of the condition, which matters because it is the hash field a
    # restore has to find again.
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


# What each scalar type is stored as, in the order they are tried: bool is an int and
# datetime is a date, so each comes before its base. Subclasses (enums, for instance)
# are stored as their base type, read through the base class's own methods so an
# override cannot change the stored text.
_SCALARS: tuple[tuple[type, str, Callable[[Any], Any]], ...] = (
    (bool, "bool", bool),
    (int, "int", int.__repr__),
    (float, "float", float.__repr__),
    (str, "str", str.__str__),
    (Decimal, "decimal", Decimal.__str__),
    (datetime, "datetime", datetime.isoformat),
    (date, "date", date.isoformat),
    (timedelta, "timedelta", lambda span: [span.days, span.seconds, span.microseconds]),
    (UUID, "uuid", lambda uuid: str(UUID(int=uuid.int))),
)


def to_json(value: Any, depth: int = 0) -> list[Any]:
    if depth > _MAX_DEPTH:
        raise ValueError(f"strike value nested deeper than {_MAX_DEPTH} levels")
    if value is None:
        return ["none", None]
    for kind, tag, encode in _SCALARS:
        if isinstance(value, kind):
            return [tag, encode(value)]
    if isinstance(value, list | tuple):
        return ["tuple", [to_json(item, depth + 1) for item in value]]
    raise TypeError(
        f"cannot store a strike value of type {type(value).__qualname__}; supported: None, "
        "bool, int, float, str, Decimal, datetime, date, timedelta, UUID and lists or tuples "
        "of those"
    )


class Garbled(ValueError):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Garbled(message)


def from_json(node: Any, depth: int = 0) -> Any:
    expect(depth <= _MAX_DEPTH, f"value nested deeper than {_MAX_DEPTH} levels")
    expect(
        isinstance(node, list) and len(node) == 2 and isinstance(node[0], str),
        f"a value must be a [type, payload] pair, not {node!r:.80}",
    )
    tag, payload = node
    match tag:
        case "none":
            expect(payload is None, "a none value must have a null payload")
            return None
        case "bool":
            expect(isinstance(payload, bool), "a bool value must be true or false")
            return payload
        case "int":
            expect(
                isinstance(payload, str) and _INT_PATTERN.fullmatch(payload) is not None,
                f"bad int payload {payload!r:.80}",
            )
            return int(payload)
        case "float":
            expect(isinstance(payload, str), "a float payload must be a string")
            result = float(payload)
            expect(
                float.__repr__(result) == payload,
                f"bad float payload {payload!r:.80}",
            )
            return result
        case "str":
            expect(isinstance(payload, str), "a str payload must be a string")
            return payload
        case "decimal":
            expect(isinstance(payload, str), "a decimal payload must be a string")
            try:
                return Decimal(payload)
            except InvalidOperation:
                raise Garbled(f"bad decimal payload {payload!r:.80}") from None
        case "datetime":
            expect(isinstance(payload, str), "a datetime payload must be a string")
            return datetime.fromisoformat(payload)
        case "date":
            expect(isinstance(payload, str), "a date payload must be a string")
            return date.fromisoformat(payload)
        case "timedelta":
            expect(
                isinstance(payload, list)
                and len(payload) == 3
                and all(type(part) is int for part in payload),
                "a timedelta payload must be [days, seconds, microseconds]",
            )
            days, seconds, microseconds = payload
            return timedelta(days=days, seconds=seconds, microseconds=microseconds)
        case "uuid":
            expect(isinstance(payload, str), "a uuid payload must be a string")
            return UUID(payload)
        case "tuple":
            expect(isinstance(payload, list), "a tuple payload must be a list")
            return tuple(from_json(item, depth + 1) for item in payload)
        case _:
            raise Garbled(f"unknown value type {tag!r:.40}")
