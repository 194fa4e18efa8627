"""Which update run starts now: pure decisions, fleet limits included.

A run starts only inside a usable window occurrence (not frozen, before its
cutoff), for a reason the policy allows (an accepted request, the advanced
cadence, the SaaS schedule), at most once per system and window occurrence
(the run's name is derived from both), and only within the fleet limits.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from patchwarden.api.maintenance import Cadence
from patchwarden.api.request import RequestState
from patchwarden.api.run import TERMINAL, Phase, Trigger
from patchwarden.api.system import ManagedSystemSpec
from patchwarden.core.builders import run_name
from patchwarden.core.policy import Assessment
from patchwarden.core.times import parse_time
from patchwarden.core.windows import Calendar, Occurrence, cadence_period, occurrences

FAILED = {Phase.ROLLED_BACK.value, Phase.FAILED.value}
"""Runs that count against a window's error budget (a cancelled run does not)."""
NOT_SERVED = FAILED | {Phase.CANCELLED.value}
"""Runs after which a cadence period is still due."""


@dataclass(frozen=True)
class Start:
    trigger: Trigger
    occurrence: Occurrence
    run: str
    request: str | None = None
    ticket: str | None = None
    classes: tuple[str, ...] = ()


def open_window(
    spec: ManagedSystemSpec, now: datetime, calendar: Calendar | None = None
) -> Occurrence | None:
    """The usable window occurrence in which a run may start now, if any."""
    expected = spec.reserved()
    span = (now, now + timedelta(seconds=1))
    for occ in occurrences(spec.maintenance, expected, *span, calendar):
        if occ.latest_start(now) is not None:
            return occ
    return None


def decide_start(
    system: str,
    spec: ManagedSystemSpec,
    assessment: Assessment,
    now: datetime,
    requests: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    last_run: str | None = None,
    calendar: Calendar | None = None,
) -> Start | None:
    """The run this system should start now, ignoring fleet limits; None if none is due.

    ``requests`` and ``runs`` are this system's UpdateRequests and UpdateRuns as stored;
    ``last_run`` is the name in the system's ``status.lastRun`` (it stays when the run is
    deleted: a window whose run was deleted, by hand or mid-update, gets no second run).
    """
    if not assessment.eligible:
        return None
    occ = open_window(spec, now, calendar)
    if occ is None:
        return None
    name = run_name(system, occ.start)
    if name == last_run or any(r["metadata"]["name"] == name for r in runs):
        return None  # this window occurrence already has (or had) its run
    if any((r.get("status") or {}).get("phase") not in TERMINAL for r in runs):
        return None  # one run at a time per system
    due = sorted(
        (
            r
            for r in requests
            if (r.get("status") or {}).get("state") == RequestState.ACCEPTED.value
            and _not_before(r) <= now
        ),
        key=lambda r: r["metadata"].get("creationTimestamp", ""),
    )
    if due:
        first = due[0]
        return Start(
            Trigger.REQUEST,
            occ,
            name,
            first["metadata"]["name"],
            first["spec"]["ticket"],
            tuple(first["spec"].get("classes") or ["security"]),
        )
    classes = tuple(sorted(c.value for c in assessment.classes))
    if assessment.proactive == Trigger.SCHEDULE:
        return Start(Trigger.SCHEDULE, occ, name, classes=classes)
    if assessment.proactive == Trigger.CADENCE:
        tz = ZoneInfo(spec.maintenance.time_zone)
        cadence = spec.maintenance.cadence or Cadence()
        period = cadence_period(cadence, tz, now)
        for r in runs:
            phase = (r.get("status") or {}).get("phase")
            started = parse_time(r["spec"]["window"]["start"])
            if phase not in NOT_SERVED and cadence_period(cadence, tz, started) == period:
                return None  # this period is served
        return Start(Trigger.CADENCE, occ, name, classes=classes)
    return None


def _not_before(request: dict[str, Any]) -> datetime:
    text = request["spec"].get("notBefore")
    return parse_time(text) if text else datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Limit:
    """A number of runs, or a percentage of the systems whose window it is (``"10%"``), as
    AWS SSM's MaxConcurrency / MaxErrors and Kubernetes' maxUnavailable are written."""

    value: int
    percent: bool = False

    @classmethod
    def parse(cls, given: object) -> Limit:
        """``3``, ``"3"`` or ``"10%"``; raises ValueError saying what is allowed."""
        if isinstance(given, Limit):
            return given
        text = str(given).strip()
        percent = text.endswith("%")
        digits = text.removesuffix("%").strip()
        if isinstance(given, bool) or not digits.isdigit():
            raise ValueError(f"{given!r} is neither a whole number nor a percentage like '10%'")
        value = int(digits)
        if value < 1 or (percent and value > 100):
            raise ValueError(f"{given!r} must be at least 1 (a percentage at most 100%)")
        return cls(value, percent)

    def of(self, systems: int) -> int:
        """The number this limit allows among ``systems`` systems: a percentage rounded up,
        never below 1 (a limit never stops every run)."""
        if not self.percent:
            return self.value
        return max(1, math.ceil(self.value * systems / 100))

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


@dataclass(frozen=True)
class Limits:
    max_concurrent: Limit | int
    per_customer: Limit | int
    max_errors: Limit | int

    def __post_init__(self) -> None:
        for name in ("max_concurrent", "per_customer", "max_errors"):
            object.__setattr__(self, name, Limit.parse(getattr(self, name)))

    @property
    def by_percent(self) -> bool:
        """Whether a limit depends on how many systems share the window."""
        return any(
            isinstance(x, Limit) and x.percent
            for x in (self.max_concurrent, self.per_customer, self.max_errors)
        )


Window = tuple[str, str]
"""A window occurrence as (start, end), RFC 3339 UTC text (``utc_text``): compared as text,
which orders them in time."""

Population = Mapping[str, int]
"""Customer → how many of its systems have a window overlapping the one decided for (what a
percentage is of); empty when no percentage is configured."""


def _of(limit: Limit | int, systems: int, whose: str) -> tuple[int, str]:
    """The limit's number among ``systems``, and how it was reached (for messages)."""
    limit = Limit.parse(limit)
    allowed = limit.of(systems)
    return allowed, (f"{limit} of {systems} {whose}" if limit.percent else str(allowed))


def within_limits(
    customer: str,
    window: Window,
    runs: list[dict[str, Any]],
    limits: Limits,
    population: Population | None = None,
) -> str | None:
    """None if one more run may start; otherwise why not (for a condition and an Event)."""
    population = population or {}
    total = sum(population.values())
    active = [r for r in runs if (r.get("status") or {}).get("phase") not in TERMINAL]
    allowed, said = _of(limits.max_concurrent, total, "systems in this window")
    if len(active) >= allowed:
        return f"{len(active)} runs in progress, the fleet-wide limit is {said}"
    per_customer = Counter(r["spec"].get("customer") for r in active)
    theirs = population.get(customer, 0)
    allowed, said = _of(limits.per_customer, theirs, f"customer {customer}'s systems in it")
    if per_customer[customer] >= allowed:
        return (
            f"{per_customer[customer]} runs of customer {customer} in progress, the limit is {said}"
        )
    return halted(window, runs, limits, population)


def halted(
    window: Window,
    runs: list[dict[str, Any]],
    limits: Limits,
    population: Population | None = None,
) -> str | None:
    """Why no more runs start in ``window`` (its error budget is spent), if so."""
    total = sum((population or {}).values())
    allowed, said = _of(limits.max_errors, total, "systems in this window")
    failed = failures_in_window(window, runs)
    return halted_message(window, failed, said) if failed >= allowed else None


def failures_in_window(window: Window, runs: list[dict[str, Any]]) -> int:
    """Failed runs whose window overlaps ``window``: one error budget for the night's
    rollout, whatever minute each system's window opens (a window a minute later shares
    it). A run recorded without its window's end counts by its start alone."""
    count = 0
    for r in runs:
        if (r.get("status") or {}).get("phase") not in FAILED:
            continue
        theirs = r["spec"]["window"]
        if overlaps((theirs["start"], theirs.get("end") or theirs["start"]), window):
            count += 1
    return count


def overlaps(a: Window, b: Window) -> bool:
    return a[0] == b[0] or (a[0] < b[1] and b[0] < a[1])


def halted_message(window: Window, failed: int, max_errors: int | str) -> str:
    return (
        f"{failed} runs failed in windows overlapping the one from {window[0]} to {window[1]} "
        f"(limit {max_errors}); no more runs start in it"
    )
