"""Cron next-time computation (pure: no docket, no worker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from docket.dependencies import Cron, Perpetual, next_cron_time

NEW_YORK = ZoneInfo("America/New_York")


def test_next_time_is_strictly_after_the_given_moment() -> None:
    midnight = datetime(2024, 1, 1, tzinfo=UTC)
    assert next_cron_time("0 0 * * *", midnight) == datetime(2024, 1, 2, tzinfo=UTC)
    assert next_cron_time("0 0 * * *", midnight - timedelta(microseconds=1)) == midnight
    assert next_cron_time("0 0 * * *", midnight + timedelta(microseconds=500)) == datetime(
        2024, 1, 2, tzinfo=UTC
    )


def test_five_field_expressions() -> None:
    monday_9am = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)  # a Monday
    assert next_cron_time("0 9 * * 1", monday_9am) == datetime(2024, 1, 8, 9, 0, tzinfo=UTC)
    assert next_cron_time("*/15 * * * *", monday_9am) == datetime(2024, 1, 1, 9, 15, tzinfo=UTC)
    assert next_cron_time("0 0 1 * *", monday_9am) == datetime(2024, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("nickname", "expected"),
    [
        ("@yearly", datetime(2025, 1, 1, tzinfo=UTC)),
        ("@annually", datetime(2025, 1, 1, tzinfo=UTC)),
        ("@monthly", datetime(2024, 2, 1, tzinfo=UTC)),
        ("@weekly", datetime(2024, 1, 7, tzinfo=UTC)),  # the next Sunday
        ("@daily", datetime(2024, 1, 2, tzinfo=UTC)),
        ("@midnight", datetime(2024, 1, 2, tzinfo=UTC)),
        ("@hourly", datetime(2024, 1, 1, 10, 0, tzinfo=UTC)),
    ],
)
def test_nicknames(nickname: str, expected: datetime) -> None:
    after = datetime(2024, 1, 1, 9, 30, tzinfo=UTC)
    assert next_cron_time(nickname, after) == expected
    assert Cron(nickname).next_time(after) == expected


def test_naive_moments_are_utc_and_results_are_utc() -> None:
    result = next_cron_time("0 12 * * *", datetime(2024, 5, 5, 11, 0))
    assert result == datetime(2024, 5, 5, 12, 0, tzinfo=UTC)
    assert result.utcoffset() == timedelta(0)


def test_time_zone_is_applied() -> None:
    paris = ZoneInfo("Europe/Paris")
    # 09:00 in Paris in July is 07:00 UTC (summer time).
    assert next_cron_time("0 9 * * *", datetime(2024, 7, 1, 12, 0, tzinfo=UTC), paris) == (
        datetime(2024, 7, 2, 7, 0, tzinfo=UTC)
    )
    # ...and 08:00 UTC in January.
    assert next_cron_time("0 9 * * *", datetime(2024, 1, 1, 12, 0, tzinfo=UTC), paris) == (
        datetime(2024, 1, 2, 8, 0, tzinfo=UTC)
    )


def test_spring_forward_runs_a_skipped_time_at_the_first_real_minute() -> None:
    # 2024-03-10 02:30 does not exist in New York: clocks jump from 02:00 to 03:00.
    after = datetime(2024, 3, 9, 12, 0, tzinfo=NEW_YORK)
    first = next_cron_time("30 2 * * *", after, NEW_YORK)
    assert first.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2024, 3, 10, 3, 0)
    assert first == datetime(2024, 3, 10, 7, 0, tzinfo=UTC)
    second = next_cron_time("30 2 * * *", first, NEW_YORK)
    assert second.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2024, 3, 11, 2, 30)


def test_fall_back_runs_a_repeated_time_once() -> None:
    # 2024-11-03 01:30 happens twice in New York; the job runs at the first one only.
    after = datetime(2024, 11, 2, 12, 0, tzinfo=NEW_YORK)
    first = next_cron_time("30 1 * * *", after, NEW_YORK)
    assert first == datetime(2024, 11, 3, 5, 30, tzinfo=UTC)  # 01:30 EDT
    second = next_cron_time("30 1 * * *", first, NEW_YORK)
    assert second == datetime(2024, 11, 4, 6, 30, tzinfo=UTC)  # 01:30 EST, the next day


def test_hourly_jobs_follow_real_hours_across_transitions() -> None:
    moment = datetime(2024, 11, 3, 0, 30, tzinfo=NEW_YORK)
    seen = []
    for _ in range(3):
        moment = next_cron_time("0 * * * *", moment, NEW_YORK)
        seen.append(moment)
    # The repeated 01:00 hour runs twice: it is two different real hours.
    assert seen == [
        datetime(2024, 11, 3, 5, 0, tzinfo=UTC),
        datetime(2024, 11, 3, 6, 0, tzinfo=UTC),
        datetime(2024, 11, 3, 7, 0, tzinfo=UTC),
    ]

    moment = datetime(2024, 3, 10, 0, 30, tzinfo=NEW_YORK)
    first = next_cron_time("0 * * * *", moment, NEW_YORK)
    second = next_cron_time("0 * * * *", first, NEW_YORK)
    assert second - first == timedelta(hours=1)  # 01:00 EST then 03:00 EDT


def test_invalid_expressions_fail_at_declaration() -> None:
    with pytest.raises(ValueError, match="Invalid cron expression"):
        Cron("not a cron")
    with pytest.raises(ValueError, match="Invalid cron expression"):
        Cron("61 * * * *")
    with pytest.raises(ValueError, match="Invalid cron expression"):
        next_cron_time("@fortnightly", datetime.now(UTC))


def test_cron_is_an_automatic_perpetual() -> None:
    cron = Cron("@hourly")
    assert isinstance(cron, Perpetual)
    assert cron.automatic is True
    assert cron.expression == "0 * * * *"
    assert Cron("@daily", automatic=False).automatic is False
    when = cron.initial_when
    now = datetime.now(UTC)
    assert now < when <= now + timedelta(hours=1)
    assert (when.minute, when.second, when.microsecond) == (0, 0, 0)
