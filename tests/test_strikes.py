"""Strikes as pure logic: matching, the strike set, the stored form, CLI values."""

from __future__ import annotations

import json
import logging
import pickle
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any
from uuid import UUID, uuid4

import pytest

from docket.strikes import (
    Operator,
    StrikeCondition,
    StrikeList,
    decode_condition,
    encode_condition,
    parse_typed_value,
)

# --- operators ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "value", "argument", "expected"),
    [
        ("==", 5, 5, True),
        ("==", 5, 6, False),
        ("!=", 5, 6, True),
        ("!=", 5, 5, False),
        (">", 5, 6, True),
        (">", 5, 5, False),
        (">=", 5, 5, True),
        (">=", 5, 4, False),
        ("<", 5, 4, True),
        ("<", 5, 5, False),
        ("<=", 5, 5, True),
        ("<=", 5, 6, False),
        ("between", (1, 5), 1, True),
        ("between", (1, 5), 3, True),
        ("between", (1, 5), 5, True),
        ("between", (1, 5), 0, False),
        ("between", (1, 5), 6, False),
        ("between", ["a", "m"], "hello", True),
        ("between", ["a", "m"], "zebra", False),
        (">", Decimal("9.99"), Decimal("10"), True),
        ("<", datetime(2025, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC), True),
        (">=", timedelta(minutes=5), timedelta(minutes=5), True),
        ("==", None, None, True),
        ("==", "blocked", "blocked", True),
    ],
)
def test_operators(operator: str, value: Any, argument: Any, expected: bool) -> None:
    strikes = StrikeList()
    strikes.strike(None, "x", operator, value)
    assert strikes.is_stricken("task", {"x": argument}) is expected
    assert (
        StrikeCondition(None, "x", Operator(operator), value).matches("task", {"x": argument})
        is expected
    )


def test_operator_values_and_names() -> None:
    assert [o.value for o in Operator] == ["==", "!=", ">", ">=", "<", "<=", "between"]
    assert Operator("between") is Operator.BETWEEN
    assert Operator.GREATER_THAN == ">"


def test_unknown_operator_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown strike operator '=~'.*'between'"):
        StrikeList().strike(None, "x", "=~", 1)


@pytest.mark.parametrize("bounds", [5, "ab", (1,), (1, 2, 3), None])
def test_between_needs_a_pair(bounds: Any) -> None:
    with pytest.raises(ValueError, match="between"):
        StrikeCondition(None, "x", Operator.BETWEEN, bounds)


def test_between_rejects_inverted_bounds() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        StrikeCondition(None, "x", Operator.BETWEEN, (10, 1))


def test_between_accepts_a_list_and_stores_a_tuple() -> None:
    condition = StrikeCondition(None, "x", Operator.BETWEEN, [1, 5])
    assert condition.value == (1, 5)
    assert condition == StrikeCondition(None, "x", Operator.BETWEEN, (1, 5))


# --- type mismatches ---------------------------------------------------------------------------


class _Explosive:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("boom")

    def __ne__(self, other: object) -> bool:
        raise RuntimeError("boom")

    __hash__ = object.__hash__


@pytest.mark.parametrize(
    ("operator", "value", "argument"),
    [
        (">", 5, "six"),
        ("<=", "abc", 3),
        ("between", (1, 5), "3"),
        ("between", (1, 5), None),
        (">", datetime(2025, 1, 1), datetime(2025, 1, 2, tzinfo=UTC)),  # naive vs aware
        ("<", date(2025, 1, 1), datetime(2024, 1, 1)),
        ("==", 5, _Explosive()),
        ("!=", 5, _Explosive()),
        (">", Decimal("NaN"), Decimal("1")),
        (">", 5, [1, 2]),
    ],
)
def test_incomparable_types_are_not_a_match(operator: str, value: Any, argument: Any) -> None:
    strikes = StrikeList()
    strikes.strike(None, "x", operator, value)
    assert strikes.is_stricken("task", {"x": argument}) is False
    condition = StrikeCondition(None, "x", Operator(operator), value)
    assert condition.matches("task", {"x": argument}) is False


def test_incomparable_types_warn_once_per_type(caplog: pytest.LogCaptureFixture) -> None:
    strikes = StrikeList()
    strikes.strike("charge", "amount", ">", 100)
    with caplog.at_level(logging.WARNING, logger="docket.strikes"):
        for _ in range(5):
            assert not strikes.is_stricken("charge", {"amount": "a secret value"})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "str" in warnings[0].getMessage()
    # The argument may be private: only its type is reported.
    assert "a secret value" not in warnings[0].getMessage()


def test_equality_follows_python_across_types() -> None:
    strikes = StrikeList()
    strikes.strike(None, "x", "==", 1)
    assert strikes.is_stricken("task", {"x": 1.0})
    assert strikes.is_stricken("task", {"x": True})
    assert not strikes.is_stricken("task", {"x": "1"})


def test_enum_arguments_compare_by_value() -> None:
    class Color(StrEnum):
        RED = "red"

    class Level(IntEnum):
        HIGH = 3

    strikes = StrikeList()
    strikes.strike(None, "color", "==", "red")
    strikes.strike(None, "level", ">=", 3)
    assert strikes.is_stricken("task", {"color": Color.RED})
    assert strikes.is_stricken("task", {"level": Level.HIGH})


# --- what a strike covers --------------------------------------------------------------------


def test_whole_task_strike() -> None:
    strikes = StrikeList()
    assert strikes.strike("send_email")
    assert strikes.is_stricken("send_email", {})
    assert strikes.is_stricken("send_email", {"to": "anyone"})
    assert not strikes.is_stricken("charge_card", {"to": "anyone"})


def test_parameter_strike_covers_every_task() -> None:
    strikes = StrikeList()
    strikes.strike(None, "customer_id", "==", "blocked")
    assert strikes.is_stricken("send_email", {"customer_id": "blocked"})
    assert strikes.is_stricken("charge_card", {"customer_id": "blocked", "amount": 5})
    assert not strikes.is_stricken("send_email", {"customer_id": "fine"})
    assert not strikes.is_stricken("send_email", {"other": "blocked"})
    assert not strikes.is_stricken("send_email", {})


def test_pair_strike_covers_only_that_task() -> None:
    strikes = StrikeList()
    strikes.strike("charge_card", "amount", ">", 1000)
    assert strikes.is_stricken("charge_card", {"amount": 5000})
    assert not strikes.is_stricken("charge_card", {"amount": 10})
    assert not strikes.is_stricken("refund", {"amount": 5000})


def test_not_equal_needs_the_argument_present() -> None:
    strikes = StrikeList()
    strikes.strike(None, "region", "!=", "eu")
    assert strikes.is_stricken("task", {"region": "us"})
    assert not strikes.is_stricken("task", {"region": "eu"})
    assert not strikes.is_stricken("task", {})


def test_any_matching_strike_is_enough() -> None:
    strikes = StrikeList()
    strikes.strike(None, "a", "==", 1)
    strikes.strike("task", "b", "==", 2)
    strikes.strike("other")
    assert strikes.is_stricken("task", {"a": 0, "b": 2})
    assert strikes.is_stricken("task", {"a": 1, "b": 0})
    assert not strikes.is_stricken("task", {"a": 0, "b": 0})
    assert strikes.is_stricken("other", {"a": 0, "b": 0})


def test_several_conditions_on_one_parameter() -> None:
    strikes = StrikeList()
    strikes.strike(None, "n", "<", 0)
    strikes.strike(None, "n", ">", 100)
    assert strikes.is_stricken("t", {"n": -1})
    assert strikes.is_stricken("t", {"n": 101})
    assert not strikes.is_stricken("t", {"n": 50})


def test_whole_task_strike_ignores_operator_and_value() -> None:
    assert StrikeCondition("f", None, Operator.GREATER_THAN, 5) == StrikeCondition("f")
    strikes = StrikeList()
    strikes.strike("f", None, ">", 5)
    assert strikes.restore("f")
    assert len(strikes) == 0


def test_a_strike_needs_a_function_or_a_parameter() -> None:
    with pytest.raises(ValueError, match="function, a parameter, or both"):
        StrikeCondition()
    with pytest.raises(ValueError, match="function, a parameter, or both"):
        StrikeList().strike(None, None, "==", 5)


def test_wildcards_mean_unset() -> None:
    assert StrikeCondition("*", "x", Operator.EQUAL, 1) == StrikeCondition(None, "x", value=1)
    assert StrikeCondition("f", "") == StrikeCondition("f")


def test_names_must_be_strings() -> None:
    with pytest.raises(TypeError, match="function must be a str"):
        StrikeCondition(42, "x")  # type: ignore[arg-type]


def test_unhashable_values_are_rejected() -> None:
    with pytest.raises(TypeError, match=r"hashable.*dict"):
        StrikeCondition(None, "x", Operator.EQUAL, {"a": 1})


def test_str_describes_the_condition() -> None:
    assert str(StrikeCondition("send_email")) == "send_email"
    assert str(StrikeCondition(None, "id", Operator.EQUAL, "x")) == "*(id == 'x')"
    assert str(StrikeCondition("f", "n", Operator.BETWEEN, [1, 2])) == "f(n between (1, 2))"


# --- the strike set -----------------------------------------------------------------------


def test_restore_lifts_exactly_the_matching_strike() -> None:
    strikes = StrikeList()
    strikes.strike(None, "n", ">", 10)
    strikes.strike(None, "n", ">", 20)

    assert not strikes.restore(None, "n", ">=", 10)  # another operator
    assert not strikes.restore(None, "n", ">", 11)  # another value
    assert not strikes.restore("task", "n", ">", 10)  # another scope
    assert len(strikes) == 2

    assert strikes.restore(None, "n", ">", 10)
    assert strikes.conditions == (StrikeCondition(None, "n", Operator.GREATER_THAN, 20),)
    assert not strikes.is_stricken("t", {"n": 15})
    assert strikes.is_stricken("t", {"n": 25})

    assert not strikes.restore(None, "n", ">", 10)  # already lifted


def test_restoring_a_pair_leaves_the_task_and_parameter_strikes() -> None:
    strikes = StrikeList()
    strikes.strike("f")
    strikes.strike(None, "x", "==", 1)
    strikes.strike("f", "x", "==", 1)

    assert strikes.restore("f", "x", "==", 1)
    assert strikes.is_stricken("f", {})
    assert strikes.is_stricken("g", {"x": 1})

    assert strikes.restore("f")
    assert not strikes.is_stricken("f", {})
    assert strikes.is_stricken("f", {"x": 1})


def test_restore_is_type_aware() -> None:
    strikes = StrikeList()
    strikes.strike(None, "x", "==", 1)
    assert not strikes.restore(None, "x", "==", True)
    assert not strikes.restore(None, "x", "==", "1")
    assert strikes.restore(None, "x", "==", 1)


def test_restore_finds_a_list_strike_by_tuple() -> None:
    strikes = StrikeList()
    strikes.strike(None, "tags", "==", ["a", "b"])
    assert strikes.is_stricken("t", {"tags": ("a", "b")})
    assert strikes.restore(None, "tags", "==", ("a", "b"))


def test_nan_strike_can_be_restored() -> None:
    strikes = StrikeList()
    strikes.strike(None, "x", "==", float("nan"))
    assert not strikes.is_stricken("t", {"x": float("nan")})  # NaN equals nothing
    assert strikes.restore(None, "x", "==", float("nan"))


def test_striking_twice_is_one_strike() -> None:
    strikes = StrikeList()
    assert strikes.strike("f", "x", "==", 1)
    assert not strikes.strike("f", "x", "==", 1)
    assert len(strikes) == 1


def test_clear_len_contains_and_iteration() -> None:
    strikes = StrikeList()
    assert len(strikes) == 0 and not strikes
    strikes.strike("f")
    strikes.strike(None, "x", "<", 3)
    assert len(strikes) == 2 and strikes
    assert StrikeCondition("f") in strikes
    assert list(strikes) == [
        StrikeCondition("f"),
        StrikeCondition(None, "x", Operator.LESS_THAN, 3),
    ]
    assert repr(strikes) == "StrikeList([f, *(x < 3)])"

    strikes.clear()
    assert len(strikes) == 0
    assert not strikes.is_stricken("f", {"x": 1})


def test_replace_all_reports_the_changes() -> None:
    a = StrikeCondition("a")
    b = StrikeCondition(None, "x", Operator.EQUAL, 1)
    c = StrikeCondition("c", "y", Operator.GREATER_THAN, 2)
    strikes = StrikeList(conditions=[a, b])

    changes = strikes.replace_all([b, c, c])

    assert changes.added == (c,)
    assert changes.removed == (a,)
    assert strikes.conditions == (b, c)
    assert not strikes.is_stricken("a", {})
    assert strikes.is_stricken("c", {"y": 3})
    assert strikes.replace_all([b, c]) == ((), ())


def test_a_task_without_strikes_is_checked_without_comparisons() -> None:
    class Untouchable:
        def __eq__(self, other: object) -> bool:
            raise AssertionError("compared")

        __hash__ = object.__hash__
        __ne__ = __gt__ = __ge__ = __lt__ = __le__ = __eq__  # type: ignore[assignment]

    strikes = StrikeList()
    argument = Untouchable()
    assert not strikes.is_stricken("f", {"x": argument})

    # Strikes on other tasks, or on parameters this call does not have, are
    # never compared against its arguments.
    for i in range(1000):
        strikes.strike(f"other_{i}", "x", "==", i)
        strikes.strike(None, f"param_{i}", "==", i)
    assert not strikes.is_stricken("f", {"x": argument})


# --- the stored form --------------------------------------------------------------------------

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


# --- typed values for the CLI -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("int:5", 5),
        ("int:-12", -12),
        ("float:1.5", 1.5),
        ("bool:true", True),
        ("bool:True", True),
        ("bool:false", False),
        ("bool:FALSE", False),
        ("str:5", "5"),
        ("str:", ""),
        ("str:http://example.test:8080/", "http://example.test:8080/"),
        ("decimal:9.99", Decimal("9.99")),
        ("datetime:2025-03-04T05:06:07+00:00", datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)),
        ("datetime:2025-03-04T05:06:07", datetime(2025, 3, 4, 5, 6, 7)),
        ("date:2025-03-04", date(2025, 3, 4)),
        ("timedelta:90", timedelta(seconds=90)),
        ("timedelta:0.5", timedelta(milliseconds=500)),
        (
            "uuid:12345678-1234-5678-1234-567812345678",
            UUID("12345678-1234-5678-1234-567812345678"),
        ),
        ("none:", None),
        ("plain", "plain"),
        ("", ""),
        ("12:30", "12:30"),
        (":leading", ":leading"),
        ("with space:x", "with space:x"),
        ("INT:7", 7),
        ("datetime.timedelta:30", timedelta(seconds=30)),
        ("decimal.Decimal:1.5", Decimal("1.5")),
        (
            "uuid.UUID:12345678123456781234567812345678",
            UUID(int=0x12345678123456781234567812345678),
        ),
    ],
)
def test_parse_typed_value(text: str, expected: Any) -> None:
    result = parse_typed_value(text)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("int:five", "cannot read 'five' as int"),
        ("int:", "cannot read '' as int"),
        ("float:x", "as float"),
        ("bool:maybe", "expected true or false"),
        ("decimal:abc", "not a decimal number"),
        ("datetime:tomorrow", "as datetime"),
        ("timedelta:soon", "as timedelta"),
        ("timedelta:inf", "number of seconds"),
        ("timedelta:1e20", "as timedelta"),
        ("uuid:123", "as uuid"),
        ("none:x", "takes no value"),
        ("itn:5", r"unknown type prefix 'itn'.*str:itn:5"),
        ("http://example.test", "unknown type prefix 'http'"),
        ("os.system:rm", "unknown type prefix 'os.system'"),
    ],
)
def test_parse_typed_value_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_typed_value(text)


def test_parsed_values_can_be_stored() -> None:
    for text in ["int:5", "decimal:1.5", "datetime:2025-01-01T00:00:00+00:00", f"uuid:{uuid4()}"]:
        condition = StrikeCondition(None, "x", Operator.EQUAL, parse_typed_value(text))
        assert decode_condition(encode_condition(condition)) == condition
