"""Typed values on the command line (``int:5``, ``none:`` ...), and that they can be stored."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest

from docket._strike_codec import decode_condition, encode_condition
from docket.integration import parse_typed_value
from docket.strikes import Operator, StrikeCondition


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
