"""Window arithmetic: DST, midnight, recurrences, freezes, cutoff, cadence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchwarden.api.maintenance import Cadence, Maintenance
from patchwarden.core.windows import (
    Calendar,
    _expand,
    cadence_period,
    expand,
    first_usable,
    next_windows,
    occurrences,
    resolve,
    to_wall,
)

BERLIN = ZoneInfo("Europe/Berlin")
HALF_HOUR = timedelta(minutes=30)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def maintenance(
    *windows: dict[str, Any], tz: str = "Europe/Berlin", freezes: Any = ()
) -> Maintenance:
    return Maintenance.model_validate(
        {"timeZone": tz, "windows": list(windows), "freezes": list(freezes)}
    )


def local(instant: datetime, tz: ZoneInfo = BERLIN) -> str:
    return instant.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def test_a_window_from_23h_for_4h_ends_the_next_day() -> None:
    m = maintenance({"name": "late", "cron": "0 23 * * 0", "duration": "4h"})
    [occ] = next_windows(m, HALF_HOUR, utc(2027, 1, 1), 1)
    assert local(occ.start) == "2027-01-03 23:00 CET"
    assert local(occ.end) == "2027-01-04 03:00 CET"
    assert occ.end - occ.start == timedelta(hours=4)


def test_a_window_in_progress_at_the_start_is_included() -> None:
    m = maintenance({"name": "late", "cron": "0 23 * * 0", "duration": "4h"})
    [occ] = next_windows(m, HALF_HOUR, utc(2027, 1, 4, 0, 30), 1)  # 01:30 CET Monday
    assert local(occ.start) == "2027-01-03 23:00 CET"
    assert occ.latest_start(utc(2027, 1, 4, 0, 30)) == utc(2027, 1, 4, 0, 30)


def test_a_start_in_the_spring_forward_gap_moves_forward_by_the_gap() -> None:
    m = maintenance({"name": "w", "cron": "30 2 * * 0", "duration": "4h"})
    occs = next_windows(m, HALF_HOUR, utc(2027, 3, 27), 1)
    assert local(occs[0].start) == "2027-03-28 03:30 CEST"
    assert local(occs[0].end) == "2027-03-28 07:30 CEST"  # 4h of wall-clock time from the start


def test_a_start_in_the_repeated_fall_back_hour_means_its_first_occurrence() -> None:
    m = maintenance({"name": "w", "cron": "30 2 * * 0", "duration": "1h"})
    [occ] = next_windows(m, HALF_HOUR, utc(2027, 10, 30), 1)
    assert occ.start == utc(2027, 10, 31, 0, 30)
    assert local(occ.start) == "2027-10-31 02:30 CEST"
    assert local(occ.end) == "2027-10-31 03:30 CET"  # wall-clock 1h, elapsed 2h
    assert occ.end - occ.start == timedelta(hours=2)


def test_a_window_across_the_spring_forward_night_keeps_its_wall_clock_end() -> None:
    m = maintenance({"name": "w", "cron": "0 23 * * 6", "duration": "6h"})
    [occ] = next_windows(m, HALF_HOUR, utc(2027, 3, 27), 1)
    assert local(occ.start) == "2027-03-27 23:00 CET"
    assert local(occ.end) == "2027-03-28 05:00 CEST"
    assert occ.end - occ.start == timedelta(hours=5)


def test_second_tuesday_offset_plus_three() -> None:
    m = maintenance(
        {
            "name": "w",
            "rrule": "FREQ=MONTHLY;BYDAY=TU;BYSETPOS=2",
            "at": "22:00",
            "offsetDays": 3,
            "duration": "3h",
        }
    )
    starts = [local(o.start) for o in next_windows(m, HALF_HOUR, utc(2027, 1, 1), 3)]
    assert starts == ["2027-01-15 22:00 CET", "2027-02-12 22:00 CET", "2027-03-12 22:00 CET"]


def test_last_sunday_of_the_month() -> None:
    m = maintenance(
        {"name": "w", "rrule": "FREQ=MONTHLY;BYDAY=-1SU", "at": "01:00", "duration": "2h"}
    )
    starts = [local(o.start) for o in next_windows(m, HALF_HOUR, utc(2027, 1, 1), 3)]
    assert starts == ["2027-01-31 01:00 CET", "2027-02-28 01:00 CET", "2027-03-28 01:00 CET"]


def test_a_negative_day_offset_moves_back_across_a_month_end() -> None:
    m = maintenance({"name": "w", "cron": "0 2 1 * *", "offsetDays": -1, "duration": "1h"})
    [occ] = next_windows(m, HALF_HOUR, utc(2027, 2, 15), 1)
    assert local(occ.start) == "2027-02-28 02:00 CET"


def test_a_one_off_window() -> None:
    m = maintenance({"name": "once", "once": "2027-01-15T01:00:00Z", "duration": "4h"})
    assert [(o.start, o.end) for o in next_windows(m, HALF_HOUR, utc(2027, 1, 1), 5)] == [
        (utc(2027, 1, 15, 1), utc(2027, 1, 15, 5))
    ]
    assert next_windows(m, HALF_HOUR, utc(2027, 2, 1), 5) == []


ICAL = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//EN
BEGIN:VEVENT
UID:a@test
DTSTAMP:20260101T000000Z
DTSTART;TZID=America/New_York:20270105T220000
DTEND;TZID=America/New_York:20270106T010000
RRULE:FREQ=WEEKLY;COUNT=2
END:VEVENT
BEGIN:VEVENT
UID:b@test
DTSTAMP:20260101T000000Z
DTSTART:20270110T030000
DURATION:PT2H
END:VEVENT
END:VCALENDAR
"""


def test_windows_from_icalendar_keep_their_zone_and_floating_times_use_the_systems() -> None:
    m = maintenance({"name": "cal", "ical": ICAL})
    got = [(o.start, o.end) for o in next_windows(m, HALF_HOUR, utc(2027, 1, 1), 5)]
    assert got == [
        (utc(2027, 1, 6, 3), utc(2027, 1, 6, 6)),  # 22:00-01:00 EST
        (utc(2027, 1, 10, 2), utc(2027, 1, 10, 4)),  # floating 03:00 Berlin
        (utc(2027, 1, 13, 3), utc(2027, 1, 13, 6)),
    ]


def test_freezes_veto_every_window_they_overlap() -> None:
    m = maintenance(
        {"name": "w", "cron": "0 23 * * *", "duration": "2h"},
        freezes=[
            {
                "name": "xmas",
                "once": "2026-12-24T00:00:00+01:00",
                "end": "2026-12-26T00:00:00+01:00",
            },
            {"name": "fridays", "cron": "0 0 * * 5", "duration": "24h"},
        ],
    )
    occs = occurrences(m, HALF_HOUR, utc(2026, 12, 22), utc(2026, 12, 27))
    frozen = {local(o.start)[:10]: o.frozen_by for o in occs}
    assert frozen == {
        "2026-12-22": None,
        "2026-12-23": "xmas",  # 23:00-01:00 overlaps the freeze from midnight
        "2026-12-24": "xmas",
        "2026-12-25": "xmas",  # Friday too; the first match is reported
        "2026-12-26": None,
    }
    assert all(o.usable == (o.frozen_by is None) for o in occs)


def test_cutoff_is_end_minus_expected_duration() -> None:
    m = maintenance({"name": "w", "cron": "0 1 * * *", "duration": "1h"})
    [occ] = next_windows(m, timedelta(minutes=45), utc(2027, 1, 1), 1)
    assert occ.cutoff == occ.end - timedelta(minutes=45)
    assert occ.latest_start(occ.cutoff) == occ.cutoff
    assert occ.latest_start(occ.cutoff + timedelta(seconds=1)) is None
    [short] = next_windows(m, timedelta(hours=2), utc(2027, 1, 1), 1)
    assert not short.usable
    assert first_usable([short], utc(2027, 1, 1)) is None


@pytest.mark.parametrize(
    ("cadence", "instant", "label", "start"),
    [
        ({"period": "quarterly"}, utc(2027, 5, 20), "2027-Q2", utc(2027, 3, 31, 22)),
        ({"period": "monthly"}, utc(2027, 1, 31, 23, 30), "2027-02", utc(2027, 1, 31, 23)),
        (
            {"period": "weeks", "everyWeeks": 2},
            utc(2027, 1, 6),
            "2-week period from 2026-12-28",
            utc(2026, 12, 27, 23),
        ),
        (
            {"period": "rrule", "rrule": "FREQ=MONTHLY;BYMONTH=1,7;BYMONTHDAY=1"},
            utc(2027, 3, 1),
            "period from 2027-01-01 00:00",
            utc(2026, 12, 31, 23),
        ),
    ],
)
def test_cadence_periods(
    cadence: dict[str, Any], instant: datetime, label: str, start: datetime
) -> None:
    period = cadence_period(Cadence.model_validate(cadence), BERLIN, instant)
    assert (period.label, period.start) == (label, start)


# ---- properties ---------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Kolkata",
    "Pacific/Chatham",
]


def exists(wall: datetime, tz: ZoneInfo) -> bool:
    return to_wall(resolve(wall, tz), tz) == wall


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Maintenance, timedelta, datetime]:
    tz = draw(st.sampled_from(ZONES))
    minute, hour = draw(st.integers(0, 59)), draw(st.integers(0, 23))
    days = draw(st.sampled_from(["*", "0", "6", "1-5", "0,3"]))
    duration = draw(st.integers(1, 12 * 60))
    freeze_start = draw(st.datetimes(datetime(2026, 1, 1), datetime(2030, 1, 1)))
    m = maintenance(
        {
            "name": "w",
            "cron": f"{minute} {hour} * * {days}",
            "duration": f"{duration}m",
            "offsetDays": draw(st.integers(-3, 3)),
        },
        tz=tz,
        freezes=[
            {
                "name": "f",
                "once": freeze_start.replace(tzinfo=UTC).isoformat(),
                "duration": f"{draw(st.integers(1, 72))}h",
            }
        ],
    )
    expected = timedelta(minutes=draw(st.integers(0, 6 * 60)))
    after = draw(st.datetimes(datetime(2026, 1, 1), datetime(2030, 1, 1))).replace(tzinfo=UTC)
    return m, expected, after


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_window_properties(scenario: tuple[Maintenance, timedelta, datetime]) -> None:
    m, expected, after = scenario
    tz = ZoneInfo(m.time_zone)
    duration = timedelta(minutes=int(m.windows[0].duration.removesuffix("m")))  # type: ignore[union-attr]
    occs = next_windows(m, expected, after, 6)
    assert occs, "a weekly-or-more-often cron always has windows"
    assert occs == sorted(occs), "ordered by start"
    freeze = m.freezes[0]
    assert freeze.once is not None and freeze.duration is not None
    for occ in occs:
        assert occ.end > after and occ.end > occ.start
        start_wall, end_wall = to_wall(occ.start, tz), to_wall(occ.end, tz)
        nominal_end = start_wall + duration
        # Right length in wall-clock time, except when the end falls in a DST gap,
        # which moves it forward by that gap.
        assert end_wall == nominal_end or (not exists(nominal_end, tz) and end_wall > nominal_end)
        assert abs((occ.end - occ.start) - duration) <= timedelta(hours=1)
        # A freeze lasts its duration in wall-clock time, like a window: across a DST
        # change its end moves (by 30 minutes on Lord Howe). Where that wall-clock end is
        # ambiguous, either reading may be taken.
        wall_end = to_wall(freeze.once, tz) + timedelta(hours=int(freeze.duration[:-1]))
        ends = {wall_end.replace(tzinfo=tz, fold=f).astimezone(UTC) for f in (0, 1)}
        readings = {occ.start < end and freeze.once < occ.end for end in ends}
        overlaps = next(iter(readings))
        if len(readings) == 1:
            assert (occ.frozen_by == "f") == overlaps
        if occ.usable and len(readings) == 1:
            assert not overlaps, "a usable window lies outside every freeze"
        begins = occ.latest_start(after)
        if begins is not None:
            assert occ.start <= begins <= occ.cutoff == occ.end - expected
            assert begins >= after


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.integers(0, 24 * 3600), st.integers(1, 60 * 24 * 3600))
def test_memoised_expansion_equals_a_fresh_one(
    scenario: tuple[Maintenance, timedelta, datetime], shift: int, span: int
) -> None:
    m, _, after = scenario
    tz = ZoneInfo(m.time_zone)
    begin = after + timedelta(seconds=shift)
    end = begin + timedelta(seconds=span)
    calendar = Calendar()
    for rec in [*m.windows, *m.freezes]:
        assert expand(rec, tz, begin, end, calendar) == _expand(rec, tz, begin, end)
        assert expand(rec, tz, begin, end, calendar) == expand(rec, tz, begin, end)


@given(scenarios(), st.lists(st.integers(0, 9 * 24 * 3600), min_size=2, max_size=8))
def test_remembered_next_windows_equal_fresh_ones(
    scenario: tuple[Maintenance, timedelta, datetime], steps: list[int]
) -> None:
    """Many systems ask at later and later instants (and a test at an earlier one): each
    answer is the one computed afresh, across window ends, freezes and DST nights."""
    m, expected, after = scenario
    instants = [after + timedelta(seconds=s) for s in sorted(steps)] + [after]
    calendar = Calendar()
    for at in instants:
        assert next_windows(m, expected, at, 6, calendar) == next_windows(m, expected, at, 6)


def test_next_windows_are_remembered_until_the_first_of_them_ends() -> None:
    m = maintenance({"name": "sun", "cron": "0 23 * * 0", "duration": "4h"})
    calendar = Calendar()
    first = next_windows(m, HALF_HOUR, utc(2027, 1, 4, 12), 3, calendar)  # Monday noon
    again = next_windows(m, HALF_HOUR, utc(2027, 1, 10, 22, 59), 3, calendar)  # Sunday
    assert again == first and again is not first, "the same answer, a list of its own"
    assert calendar._next, "remembered by the calendar that was asked"
    assert not Calendar()._next, "and by no other: nothing process-wide"
    opened = next_windows(m, HALF_HOUR, utc(2027, 1, 11, 1, 59), 3, calendar)  # 02:59 CET
    assert opened == first, "the first window has not ended yet"
    after = next_windows(m, HALF_HOUR, utc(2027, 1, 11, 2), 3, calendar)  # ended (03:00 CET)
    assert after[0] == first[1] and len(after) == 3
