"""The one RFC 3339 helper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from patchwarden.core.times import parse_time, timestamp, utc_text


def test_text_is_whole_seconds_in_utc_and_reads_back() -> None:
    berlin = timezone(timedelta(hours=1))
    instant = datetime(2027, 2, 10, 13, 0, 30, 999_000, tzinfo=berlin)
    assert utc_text(instant) == "2027-02-10T12:00:30Z"
    assert parse_time("2027-02-10T12:00:30Z") == datetime(2027, 2, 10, 12, 0, 30, tzinfo=UTC)
    assert parse_time("2027-02-10T13:00:30+01:00") == parse_time("2027-02-10T12:00:30Z")
    assert timestamp("1970-01-01T00:01:00Z") == 60.0 and timestamp(None) is None


@pytest.mark.parametrize("text", ["2027-02-10T12:00:30", "yesterday", ""])
def test_text_without_a_zone_or_not_a_time_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)
