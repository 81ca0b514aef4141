"""The stored form of a strike condition: typed JSON that round-trips and never runs code."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any
from uuid import UUID

import pytest

from docket._strike_codec import decode_condition, encode_condition
from docket.strikes import Operator, StrikeCondition, StrikeList

ROUND_TRIP_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -17,
    2**200,
    1.5,
    -0.0,
    float("inf"),
    float("-inf"),
    "",
    "blocked",
    'unicode \u00e9\u4e2d\U0001f600 "quotes" \\ \n\x00',
    "\ud800",  # a lone surrogate is a valid Python str
    Decimal("1.10"),
    Decimal("-1E+5"),
    Decimal("NaN"),
    datetime(2025, 3, 4, 5, 6, 7, 890123),
    datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
    datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
    date(2025, 3, 4),
    timedelta(days=-3, seconds=5, microseconds=7),
    timedelta(0),
    UUID("12345678-1234-5678-1234-567812345678"),
    (),
    (1, "two", (3.0, None), [Decimal("4")]),
]


@pytest.mark.parametrize("value", ROUND_TRIP_VALUES, ids=repr)
def test_values_round_trip_with_their_type(value: Any) -> None:
    condition = StrikeCondition("task", "x", Operator.EQUAL, value)
    encoded = encode_condition(condition)
    decoded = decode_condition(encoded)

    assert decoded == condition
    assert type(decoded.value) is type(condition.value)
    assert repr(decoded.value) == repr(condition.value)
    assert encode_condition(decoded) == encoded
    assert decode_condition(encoded.encode()) == condition  # Redis hands back bytes
    assert encoded.isascii()


@pytest.mark.parametrize(
    "condition",
    [
        StrikeCondition("send_email"),
        StrikeCondition(None, "customer_id", Operator.NOT_EQUAL, "x"),
        StrikeCondition("charge", "amount", Operator.BETWEEN, (Decimal("1"), Decimal("9.5"))),
    ],
    ids=str,
)
def test_conditions_round_trip(condition: StrikeCondition) -> None:
    decoded = decode_condition(encode_condition(condition))
    assert decoded == condition
    assert (decoded.function, decoded.parameter, decoded.operator) == (
        condition.function,
        condition.parameter,
        condition.operator,
    )


def test_encoding_is_canonical() -> None:
    def build() -> StrikeCondition:
        return StrikeCondition("f", "when", Operator.BETWEEN, [date(2025, 1, 1), date(2025, 2, 1)])

    assert encode_condition(build()) == encode_condition(build())
    # The same strike spelt differently is stored the same way.
    assert encode_condition(StrikeCondition("f", "x", Operator.EQUAL, [1, 2])) == encode_condition(
        StrikeCondition("f", "x", Operator.EQUAL, (1, 2))
    )
    assert encode_condition(StrikeCondition("f", None, Operator.GREATER_THAN, 3)) == (
        encode_condition(StrikeCondition("f"))
    )
    # One line of compact JSON with sorted keys: the text is the hash field.
    encoded = encode_condition(StrikeCondition(None, "x", Operator.EQUAL, 1))
    assert encoded == (
        '{"function":null,"operator":"==","parameter":"x","v":1,"value":["int","1"]}'
    )


def test_equal_values_of_other_types_encode_differently() -> None:
    def enc(value: Any) -> str:
        return encode_condition(StrikeCondition(None, "x", Operator.EQUAL, value))

    assert len({enc(1), enc(True), enc(1.0), enc(Decimal(1)), enc("1")}) == 5


def test_subclasses_are_stored_as_their_base_type() -> None:
    class Color(StrEnum):
        RED = "red"

    class Level(IntEnum):
        HIGH = 3

    for member, plain in ((Color.RED, "red"), (Level.HIGH, 3)):
        condition = StrikeCondition(None, "x", Operator.EQUAL, member)
        decoded = decode_condition(encode_condition(condition))
        assert decoded.value == plain
        assert type(decoded.value) is type(plain)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (frozenset({1}), "frozenset"),
        (b"bytes", "bytes"),
        (object(), "object"),
        ((1, object()), "object"),
        (1 + 2j, "complex"),
    ],
)
def test_unsupported_values_raise_type_error(value: Any, type_name: str) -> None:
    condition = StrikeCondition(None, "x", Operator.EQUAL, value)
    with pytest.raises(TypeError, match=rf"cannot store a strike value of type {type_name}\b"):
        encode_condition(condition)


def test_modest_nesting_is_fine_and_deep_nesting_is_refused() -> None:
    shallow = decode_condition(_with(value=_nested(10)))
    assert isinstance(shallow.value, tuple)
    assert decode_condition(encode_condition(shallow)) == shallow

    deep: Any = ()
    for _ in range(40):
        deep = (deep,)
    with pytest.raises(ValueError, match="nested deeper"):
        encode_condition(StrikeCondition(None, "x", Operator.EQUAL, deep))


def test_unsupported_values_still_work_locally() -> None:
    strikes = StrikeList()
    strikes.strike(None, "x", "==", frozenset({1, 2}))
    assert strikes.is_stricken("t", {"x": frozenset({2, 1})})
    assert strikes.restore(None, "x", "==", frozenset({1, 2}))


def _nested(depth: int) -> list[Any]:
    node: list[Any] = ["tuple", []]
    for _ in range(depth):
        node = ["tuple", [node]]
    return node


def _valid() -> dict[str, Any]:
    return json.loads(encode_condition(StrikeCondition("f", "x", Operator.EQUAL, 5)))


def _with(**changes: Any) -> str:
    data = _valid()
    data.update(changes)
    return json.dumps(data)


GARBAGE: list[Any] = [
    "",
    "not json",
    "{",
    "[]",
    "null",
    '"a string"',
    b"\xff\xfe",
    "[" * 100_000 + "]" * 100_000,
    json.dumps({k: v for k, v in _valid().items() if k != "value"}),
    _with(extra=1),
    _with(v=2),
    _with(v="1"),
    _with(v=True),
    _with(function=5),
    _with(parameter=["x"]),
    _with(operator="=~"),
    _with(operator=None),
    _with(function=None, parameter=None),
    _with(operator="between"),  # value is not a pair
    _with(value=5),
    _with(value=["int"]),
    _with(value=["int", 5]),
    _with(value=["int", "5.0"]),
    _with(value=["int", " 5"]),
    _with(value=["int", "05"]),
    _with(value=["int", "9" * 5000]),
    _with(value=["bool", 1]),
    _with(value=["float", 1.5]),
    _with(value=["float", "1.50"]),
    _with(value=["float", "banana"]),
    _with(value=["none", 0]),
    _with(value=["decimal", "twelve"]),
    _with(value=["datetime", "yesterday"]),
    _with(value=["date", "2025-13-01"]),
    _with(value=["timedelta", [1, 2]]),
    _with(value=["timedelta", [1, 2, 3.5]]),
    _with(value=["timedelta", [10**12, 0, 0]]),
    _with(value=["uuid", "not-a-uuid"]),
    _with(value=["tuple", "abc"]),
    _with(value=["pickle", "gASVAAAAAAAAAAA="]),
    _with(value=["str", None]),
    _with(value=["tuple", [["int", "1"], ["nope", 1]]]),
    _with(value=_nested(40)),
]


@pytest.mark.parametrize("garbage", GARBAGE, ids=lambda g: repr(g)[:50])
def test_garbled_input_raises_value_error(garbage: str | bytes) -> None:
    with pytest.raises(ValueError, match="not a valid encoded strike condition"):
        decode_condition(garbage)


def test_a_pickle_is_never_unpickled(tmp_path: Any) -> None:
    canary = tmp_path / "canary"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (canary.write_text, ("pwned",))

    blob = pickle.dumps(Payload())
    with pytest.raises(ValueError):
        decode_condition(blob)
    as_value = _with(value=["str", blob.decode("latin-1")])
    decoded = decode_condition(as_value)
    assert isinstance(decoded.value, str)
    assert not canary.exists()
