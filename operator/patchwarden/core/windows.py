"""Maintenance-window arithmetic: pure functions, no cluster, no clock.

Every recurrence is expanded in the *wall-clock time* of the system's IANA
time zone, then turned into instants with two documented rules:

* a wall time that does not exist (the hour skipped when clocks go forward)
  moves forward by the length of the gap: 02:30 on a spring-forward night in
  Europe/Berlin becomes 03:30 CEST;
* a wall time that occurs twice (the hour repeated when clocks go back) means
  its first occurrence: 02:30 on a fall-back night is 02:30 CEST, not CET.

A window's end is its (resolved) start plus its duration in wall-clock time,
so "23:00 for 4h" ends at 03:00 local the next day, whatever DST did in
between; the elapsed length differs from the duration only on DST nights.
Windows that cross midnight are ordinary intervals: nothing compares times of
day. A freeze vetoes every window it overlaps, and no run starts after a
window's cutoff (its end minus the expected duration of an update and the time
reserved for a rollback).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events
from croniter import croniter
from dateutil.rrule import rrule, rrulestr

from patchwarden.api.common import parse_duration
from patchwarden.api.maintenance import Cadence, CadencePeriod, Freeze, Maintenance, Recurrence

# Occurrences of recurrences without a DTSTART count from this Monday, so
# "every 2 weeks" and similar intervals are stable whatever --from is.
ANCHOR = datetime(2001, 1, 1)
# How far ahead next_windows looks before it says there is no window.
HORIZON = timedelta(days=3 * 366)


@dataclass(frozen=True, order=True)
class Interval:
    """A half-open interval [start, end) of aware UTC instants."""

    start: datetime
    end: datetime

    def overlaps(self, other: Interval) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True, order=True)
class Occurrence:
    """One occurrence of a maintenance window."""

    start: datetime
    end: datetime
    window: str
    cutoff: datetime
    """The latest instant a run may start: end minus the expected duration and the rollback
    reserve."""
    frozen_by: str | None = None

    @property
    def usable(self) -> bool:
        return self.frozen_by is None and self.cutoff >= self.start

    def latest_start(self, earliest: datetime) -> datetime | None:
        """When a run would start if it may not start before ``earliest``; None if too late."""
        begin = max(self.start, earliest)
        return begin if self.usable and begin <= self.cutoff else None


def resolve(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a naive wall-clock time in ``tz`` (see the module's rules)."""
    aware = wall.replace(tzinfo=tz, fold=0)
    # zoneinfo reads a skipped wall time with the offset in force before the
    # gap; converting to UTC and back lands that far after the gap.
    return aware.astimezone(UTC)


def to_wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def _wall_starts(
    rec: Recurrence, tz: ZoneInfo, begin: datetime, end: datetime
) -> Iterator[datetime]:
    """Naive local start times of ``rec`` (before its day offset) in [begin, end)."""
    if rec.cron is not None:
        it = croniter(rec.cron, begin - timedelta(seconds=1))
        while (nxt := it.get_next(datetime)) < end:
            yield nxt
    elif rec.rrule is not None:
        yield from _rrule(rec.rrule, rec.at).between(begin, end, inc=True)
    elif rec.once is not None:
        wall = to_wall(rec.once, tz)
        if begin <= wall < end:
            yield wall


def _rrule(text: str, at: str | None = None) -> rrule:
    hour, minute = (int(x) for x in (at or "00:00").split(":"))
    if "DTSTART" in text.upper():
        parsed = rrulestr(text, ignoretz=True)
    else:
        parsed = rrulestr(text, dtstart=ANCHOR.replace(hour=hour, minute=minute), ignoretz=True)
    assert isinstance(parsed, rrule), "a single RRULE, not a set"
    return parsed


def _ical_intervals(text: str, tz: ZoneInfo, begin: datetime, end: datetime) -> Iterator[Interval]:
    calendar = icalendar.Calendar.from_ical(text)
    for event in recurring_ical_events.of(calendar).between(begin, end):
        start, stop = event.start, event.end
        if not isinstance(start, datetime):  # an all-day event: local midnights
            start, stop = (
                datetime.combine(start, datetime.min.time()),
                datetime.combine(stop, datetime.min.time()),
            )
        yield Interval(
            resolve(start, tz) if start.tzinfo is None else start.astimezone(UTC),
            resolve(stop, tz) if stop.tzinfo is None else stop.astimezone(UTC),
        )


class Calendar:
    """A memo of window expansions, owned by its caller (a controller, a plan): a fleet
    shares a handful of window definitions and each reconcile asks again a little later,
    so one expansion serves them all. No process-wide state: whoever holds the calendar
    holds the memo, and every function here computes the same answer without one.

    * expansions are remembered over whole UTC days (the occurrences overlapping the
      day-aligned span include every one overlapping the span asked, so filtering them
      gives the same answer), up to ``days`` of them;
    * :func:`next_windows` answers are remembered per definition, expected duration and
      count (see there), up to ``answers`` of them.

    A full memo is emptied and filled again (its size bounds the memory)."""

    def __init__(self, days: int = 4096, answers: int = 1024) -> None:
        self.days, self.answers = days, answers
        self._days: dict[tuple[str, str, datetime, datetime], tuple[Interval, ...]] = {}
        self._next: dict[
            tuple[str, timedelta, int], tuple[datetime, datetime, tuple[Occurrence, ...]]
        ] = {}

    def expand_days(
        self, rec: Recurrence, tz: ZoneInfo, first: datetime, last: datetime
    ) -> tuple[Interval, ...]:
        key = (rec.model_dump_json(), str(tz.key), first, last)
        found = self._days.get(key)
        if found is None:
            found = tuple(_expand(rec, tz, first, last))
            if len(self._days) >= self.days:
                self._days.clear()
            self._days[key] = found
        return found

    def next_windows(
        self, maintenance: Maintenance, expected: timedelta, after: datetime, count: int
    ) -> list[Occurrence]:
        """:func:`next_windows`, remembered: the answer is the first ``count`` occurrences,
        in order of start, of those ending after ``after``, so it holds for any later
        instant until the first of them ends (a later instant only drops occurrences that
        ended; none of these did). An answer cut short by the horizon is not remembered (a
        later instant may see one more)."""
        key = (maintenance.model_dump_json(), expected, count)
        known = self._next.get(key)
        if known is not None and known[0] <= after < known[1]:
            return list(known[2])
        found = _next_windows(maintenance, expected, after, count, self)
        if found and len(found) == count:
            if len(self._next) >= self.answers:
                self._next.clear()
            self._next[key] = (after, min(o.end for o in found), tuple(found))
        return found


def expand(
    rec: Recurrence,
    tz: ZoneInfo,
    begin: datetime,
    end: datetime,
    calendar: Calendar | None = None,
) -> list[Interval]:
    """Every occurrence of ``rec`` that overlaps [begin, end) (aware instants), sorted;
    expanded over whole UTC days (remembered by ``calendar``, if given)."""
    first = begin.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last = end.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if last < end:
        last += timedelta(days=1)
    if calendar is not None:
        found: Iterable[Interval] = calendar.expand_days(rec, tz, first, last)
    else:
        found = _expand(rec, tz, first, last)
    window = Interval(begin, end)
    return [i for i in found if i.overlaps(window)]


def _expand(rec: Recurrence, tz: ZoneInfo, begin: datetime, end: datetime) -> list[Interval]:
    if rec.ical is not None:
        wall_begin, wall_end = to_wall(begin, tz) - timedelta(days=1), to_wall(end, tz)
        found = _ical_intervals(rec.ical, tz, wall_begin, wall_end)
    else:
        assert rec.duration is not None, "validated: duration unless ical"
        length = parse_duration(rec.duration)
        offset = timedelta(days=rec.offset_days)
        # Look back far enough to catch an occurrence already in progress.
        wall_begin = to_wall(begin, tz) - length - offset - timedelta(days=1)
        wall_end = to_wall(end, tz) - offset + timedelta(days=1)
        found = (
            Interval(start, resolve(to_wall(start, tz) + length, tz))
            for start in (
                resolve(w + offset, tz) for w in _wall_starts(rec, tz, wall_begin, wall_end)
            )
        )
    window = Interval(begin, end)
    return sorted({i for i in found if i.overlaps(window)})


def freeze_intervals(
    freeze: Freeze,
    tz: ZoneInfo,
    begin: datetime,
    end: datetime,
    calendar: Calendar | None = None,
) -> list[Interval]:
    if freeze.end is not None and freeze.once is not None:
        one = Interval(freeze.once.astimezone(UTC), freeze.end.astimezone(UTC))
        return [one] if one.overlaps(Interval(begin, end)) else []
    return expand(freeze, tz, begin, end, calendar)


def occurrences(
    maintenance: Maintenance,
    expected: timedelta,
    begin: datetime,
    end: datetime,
    calendar: Calendar | None = None,
) -> list[Occurrence]:
    """All window occurrences overlapping [begin, end), each marked with its cutoff and freeze."""
    tz = ZoneInfo(maintenance.time_zone)
    freezes = [
        (f.name, interval)
        for f in maintenance.freezes
        for interval in freeze_intervals(f, tz, begin - HORIZON / 12, end + HORIZON / 12, calendar)
    ]
    found = []
    for window in maintenance.windows:
        for interval in expand(window, tz, begin, end, calendar):
            frozen = next((name for name, f in freezes if f.overlaps(interval)), None)
            found.append(
                Occurrence(
                    interval.start, interval.end, window.name, interval.end - expected, frozen
                )
            )
    return sorted(found)


def next_windows(
    maintenance: Maintenance,
    expected: timedelta,
    after: datetime,
    count: int,
    calendar: Calendar | None = None,
) -> list[Occurrence]:
    """The next ``count`` occurrences that end after ``after`` (within :data:`HORIZON`);
    remembered by ``calendar`` (:meth:`Calendar.next_windows`), if given."""
    if calendar is not None:
        return calendar.next_windows(maintenance, expected, after, count)
    return _next_windows(maintenance, expected, after, count, None)


def _next_windows(
    maintenance: Maintenance,
    expected: timedelta,
    after: datetime,
    count: int,
    calendar: Calendar | None,
) -> list[Occurrence]:
    span = timedelta(days=31)
    while True:
        found = [
            o
            for o in occurrences(maintenance, expected, after, after + span, calendar)
            if o.end > after
        ]
        if len(found) >= count or span >= HORIZON:
            return found[:count]
        span = min(span * 4, HORIZON)


def first_usable(occs: Iterable[Occurrence], earliest: datetime) -> Occurrence | None:
    """The first occurrence in which a run may still start at or after ``earliest``."""
    return next((o for o in occs if o.latest_start(earliest) is not None), None)


@dataclass(frozen=True)
class Period:
    """One period of a cadence: the advanced package updates once in each."""

    start: datetime
    label: str


def cadence_period(cadence: Cadence, tz: ZoneInfo, instant: datetime) -> Period:
    """The cadence period (in the system's zone) that ``instant`` falls in."""
    wall = to_wall(instant, tz)
    if cadence.period == CadencePeriod.QUARTERLY:
        month = 3 * ((wall.month - 1) // 3) + 1
        start = datetime(wall.year, month, 1)
        return Period(resolve(start, tz), f"{wall.year}-Q{(month - 1) // 3 + 1}")
    if cadence.period == CadencePeriod.MONTHLY:
        start = datetime(wall.year, wall.month, 1)
        return Period(resolve(start, tz), f"{wall.year}-{wall.month:02d}")
    if cadence.period == CadencePeriod.WEEKS:
        assert cadence.every_weeks is not None, "validated: everyWeeks with period weeks"
        days = 7 * cadence.every_weeks
        start = ANCHOR + timedelta(days=days * ((wall - ANCHOR).days // days))
        return Period(
            resolve(start, tz), f"{cadence.every_weeks}-week period from {start:%Y-%m-%d}"
        )
    assert cadence.rrule is not None, "validated: rrule with period rrule"
    opened = _rrule(cadence.rrule).before(wall, inc=True) or ANCHOR
    return Period(resolve(opened, tz), f"period from {opened:%Y-%m-%d %H:%M}")


def overlapping(
    maintenance: Maintenance, after: datetime, count: int = 4, calendar: Calendar | None = None
) -> list[str]:
    """Names of recurring windows whose occurrences overlap each other: a window
    longer than its period, which cannot be meant."""
    tz = ZoneInfo(maintenance.time_zone)
    found = []
    for window in maintenance.windows:
        if window.cron is None and window.rrule is None:
            continue
        span = timedelta(days=400)
        occs = expand(window, tz, after, after + span, calendar)[:count]
        if any(a.end > b.start for a, b in pairwise(occs)):
            found.append(window.name)
    return found
