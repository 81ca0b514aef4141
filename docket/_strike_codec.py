"""The stored form of a strike condition: canonical JSON text, and back.

The values in it are explicitly typed, never pickled: anyone who can write to the
Redis server could otherwise make every worker run their code.
"""

from __future__ import annotations

import json

from ._strike_values import Garbled, canonical_json, expect, from_json, to_json
from .strikes import StrikeCondition, parse_operator

__all__ = ["decode_condition", "encode_condition"]

_FORMAT_VERSION = 1


def encode_condition(condition: StrikeCondition) -> str:
    """The canonical stored form of ``condition``: equal conditions give equal text.

    Raises ``TypeError`` naming the type if the value cannot be stored.
    """
    return canonical_json(
        {
            "v": _FORMAT_VERSION,
            "function": condition.function,
            "parameter": condition.parameter,
            "operator": condition.operator.value,
            "value": to_json(condition.value),
        }
    )


_FIELDS = frozenset({"v", "function", "parameter", "operator", "value"})


def decode_condition(encoded: str | bytes) -> StrikeCondition:
    """Read a condition written by :func:`encode_condition`.

    Anything else raises ``ValueError`` saying what is wrong; nothing in the text
    can make this run code.
    """
    preview = encoded[:80]
    try:
        text = encoded.decode("utf-8") if isinstance(encoded, bytes) else encoded
        try:
            data = json.loads(text)
        except RecursionError:
            raise Garbled("nested too deeply") from None
        expect(isinstance(data, dict), "not a JSON object")
        expect(data.keys() == _FIELDS, f"expected the fields {sorted(_FIELDS)}")
        expect(
            type(data["v"]) is int and data["v"] == _FORMAT_VERSION,
            f"unsupported format version {data['v']!r:.20}",
        )
        for name in ("function", "parameter"):
            expect(data[name] is None or isinstance(data[name], str), f"{name} is not a string")
        expect(isinstance(data["operator"], str), "operator is not a string")
        return StrikeCondition(
            function=data["function"],
            parameter=data["parameter"],
            operator=parse_operator(data["operator"]),
            value=from_json(data["value"]),
        )
    except (ValueError, TypeError, OverflowError) as e:
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors too; all of
        # them mean the same thing to the caller: this entry is not a strike.
        raise ValueError(f"not a valid encoded strike condition ({e}): {preview!r}") from None
