"""Strikes as pure logic: matching and the strike set."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any

import pytest

from docket.strikes import Operator, StrikeCondition, StrikeList

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
