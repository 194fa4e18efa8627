"""When a system may be updated: its maintenance windows, freezes and cadence, with the
recurrences (cron, RRULE, once, iCalendar) and the time zone they are read in."""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import Annotated, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar
from croniter import croniter
from dateutil.rrule import rrulestr
from pydantic import AfterValidator, AwareDatetime, Field, StrictInt

from patchwarden.api.common import (
    DNS_LABEL,
    Duration,
    Model,
    Rule,
    map_by,
    unique,
)


@functools.lru_cache(maxsize=1024)
def _cron_ok(text: str) -> bool:
    """Whether croniter accepts ``text`` (0.3 ms a call: a fleet repeats a few windows)."""
    return bool(croniter.is_valid(text))


def _valid_cron(text: str) -> str:
    if len(text.split()) != 5 or not _cron_ok(text):
        raise ValueError(
            f"{text!r} is not a 5-field cron expression (minute hour day month weekday)"
        )
    return text


def _valid_rrule(text: str) -> str:
    try:
        rrulestr(text, ignoretz=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{text!r} is not an RFC 5545 RRULE: {exc}") from exc
    return text


def _valid_ical(text: str) -> str:
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except ValueError as exc:
        raise ValueError(f"not iCalendar text: {exc}") from exc
    if not calendar.walk("VEVENT"):
        raise ValueError("the iCalendar text holds no VEVENT")
    return text


def _valid_time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not an IANA time zone such as Europe/Berlin") from exc
    return name


Cron = Annotated[str, Field(max_length=256), AfterValidator(_valid_cron)]
RRule = Annotated[str, Field(max_length=1024), AfterValidator(_valid_rrule)]
ICal = Annotated[str, Field(max_length=65536), AfterValidator(_valid_ical)]
TimeZone = Annotated[str, Field(max_length=64), AfterValidator(_valid_time_zone)]

_ONE_SOURCE = "[has(self.cron), has(self.rrule), has(self.once), has(self.ical)]"


def _sources(r: Recurrence) -> int:
    return sum(x is not None for x in (r.cron, r.rrule, r.once, r.ical))


ONE_SOURCE = Rule(
    f"{_ONE_SOURCE}.filter(x, x).size() == 1",
    "exactly one of cron, rrule, once or ical is required",
    ".cron",
    lambda r: _sources(r) == 1,
)
AT_WITH_RRULE = Rule(
    "!has(self.at) || has(self.rrule)",
    "at applies to rrule occurrences only",
    ".at",
    lambda r: r.at is None or r.rrule is not None,
)


class Recurrence(Model):
    """When something recurs: exactly one of cron, rrule, once or ical."""

    cron: Cron | None = None
    """A 5-field cron expression in the system's time zone, e.g. ``0 23 * * 0`` (Sundays 23:00)."""
    rrule: RRule | None = None
    """An RFC 5545 RRULE, e.g. ``FREQ=MONTHLY;BYDAY=TU;BYSETPOS=2`` (second Tuesday)."""
    at: str | None = Field(default=None, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    """Local start time (HH:MM) of each rrule occurrence; default 00:00."""
    once: AwareDatetime | None = None
    """A one-off start (RFC 3339 with offset), like a one-time patch deployment."""
    ical: ICal | None = None
    """iCalendar text (VEVENTs with DTSTART, DTEND or DURATION, RRULE), e.g. exported by Uyuni."""
    duration: Duration | None = None
    """Length in wall-clock time of the system's zone; required except for ical events."""
    offset_days: StrictInt = Field(default=0, ge=-31, le=31)
    """Days added to each occurrence, like Azure's "Second Tuesday Offset+3"."""

    rules: ClassVar[tuple[Rule, ...]] = (
        ONE_SOURCE,
        Rule(
            "has(self.duration) || has(self.ical)",
            "duration is required unless the occurrences come from ical",
            ".duration",
            lambda r: r.duration is not None or r.ical is not None,
        ),
        AT_WITH_RRULE,
    )


class Window(Recurrence):
    """A maintenance window: updates start only inside one, never in a freeze."""

    name: str = Field(pattern=DNS_LABEL, max_length=63)


class Freeze(Recurrence):
    """A period in which no update starts; it vetoes every window it overlaps."""

    name: str = Field(pattern=DNS_LABEL, max_length=63)
    end: AwareDatetime | None = None
    """End of a one-off freeze that starts at ``once`` (instead of a duration)."""

    rules: ClassVar[tuple[Rule, ...]] = (
        ONE_SOURCE,
        Rule(
            "has(self.duration) || has(self.ical) || has(self.end)",
            "a freeze needs a duration, an end, or ical events",
            ".duration",
            lambda r: r.duration is not None or r.ical is not None or r.end is not None,
        ),
        Rule(
            "!has(self.end) || has(self.once)",
            "end applies to a one-off freeze (once)",
            ".end",
            lambda r: r.end is None or r.once is not None,
        ),
        Rule(
            "!has(self.end) || !has(self.duration)",
            "give end or duration, not both",
            ".end",
            lambda r: r.end is None or r.duration is None,
        ),
        AT_WITH_RRULE,
    )


class CadencePeriod(StrEnum):
    QUARTERLY = "quarterly"
    MONTHLY = "monthly"
    WEEKS = "weeks"
    RRULE = "rrule"


class Cadence(Model):
    """The agreed schedule of a PaaS advanced system: one update per period,
    in the first usable window of the period."""

    period: CadencePeriod = CadencePeriod.QUARTERLY
    every_weeks: StrictInt | None = Field(default=None, ge=1, le=52)
    """Length in weeks of a period when period is weeks."""
    rrule: RRule | None = None
    """Period starts as an RRULE when period is rrule (each occurrence opens a period)."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "(self.period == 'weeks') == has(self.everyWeeks)",
            "everyWeeks is required with period weeks, and only then",
            ".everyWeeks",
            lambda c: (c.period == CadencePeriod.WEEKS) == (c.every_weeks is not None),
        ),
        Rule(
            "(self.period == 'rrule') == has(self.rrule)",
            "rrule is required with period rrule, and only then",
            ".rrule",
            lambda c: (c.period == CadencePeriod.RRULE) == (c.rrule is not None),
        ),
    )


_unique_names = unique("name", "names")
_MAP_BY_NAME = map_by("name")


class Maintenance(Model):
    """When updates may run."""

    time_zone: TimeZone = "UTC"
    """IANA time zone of every window, freeze and cadence of this system."""
    windows: Annotated[list[Window], AfterValidator(_unique_names)] = Field(
        default_factory=list, max_length=32, json_schema_extra=_MAP_BY_NAME
    )
    freezes: Annotated[list[Freeze], AfterValidator(_unique_names)] = Field(
        default_factory=list, max_length=64, json_schema_extra=_MAP_BY_NAME
    )
    cadence: Cadence | None = None
    """PaaS advanced only: how often the provider updates on its own (default quarterly)."""
