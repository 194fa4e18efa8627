"""Which update run starts now: pure decisions, fleet limits included.

A run starts only inside a usable window occurrence (not frozen, before its
cutoff), for a reason the policy allows (an accepted request, the advanced
cadence, the SaaS schedule), at most once per system and window occurrence
(the run's name is derived from both), and only within the fleet limits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from patchwarden.api.request import RequestState
from patchwarden.api.run import TERMINAL, Phase, Trigger
from patchwarden.api.system import Cadence, ManagedSystemSpec
from patchwarden.core.builders import run_name
from patchwarden.core.policy import Assessment
from patchwarden.core.times import parse_time
from patchwarden.core.windows import Occurrence, cadence_period, occurrences

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


def open_window(spec: ManagedSystemSpec, now: datetime) -> Occurrence | None:
    """The usable window occurrence in which a run may start now, if any."""
    expected = spec.reserved()
    for occ in occurrences(spec.maintenance, expected, now, now + timedelta(seconds=1)):
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
) -> Start | None:
    """The run this system should start now, ignoring fleet limits; None if none is due.

    ``requests`` and ``runs`` are this system's UpdateRequests and UpdateRuns as stored;
    ``last_run`` is the name in the system's ``status.lastRun`` (it stays when the run is
    deleted: a window whose run was deleted, by hand or mid-update, gets no second run).
    """
    if not assessment.eligible:
        return None
    occ = open_window(spec, now)
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
class Limits:
    max_concurrent: int
    per_customer: int
    max_errors: int


Window = tuple[str, str]
"""A window occurrence as (start, end), RFC 3339 UTC text (``utc_text``): compared as text,
which orders them in time."""


def within_limits(
    customer: str, window: Window, runs: list[dict[str, Any]], limits: Limits
) -> str | None:
    """None if one more run may start; otherwise why not (for a condition and an Event)."""
    active = [r for r in runs if (r.get("status") or {}).get("phase") not in TERMINAL]
    if len(active) >= limits.max_concurrent:
        return f"{len(active)} runs in progress, the fleet-wide limit is {limits.max_concurrent}"
    per_customer = Counter(r["spec"].get("customer") for r in active)
    if per_customer[customer] >= limits.per_customer:
        return (
            f"{per_customer[customer]} runs of customer {customer} in progress, "
            f"the limit is {limits.per_customer}"
        )
    failed = failures_in_window(window, runs)
    if failed >= limits.max_errors:
        return halted_message(window, failed, limits.max_errors)
    return None


def failures_in_window(window: Window, runs: list[dict[str, Any]]) -> int:
    """Failed runs whose window overlaps ``window``: one error budget for the night's
    rollout, whatever minute each system's window opens (a window a minute later shares
    it). A run recorded without its window's end counts by its start alone."""
    start, end = window
    count = 0
    for r in runs:
        if (r.get("status") or {}).get("phase") not in FAILED:
            continue
        theirs = r["spec"]["window"]
        their_start = theirs["start"]
        their_end = theirs.get("end") or their_start
        if their_start == start or (their_start < end and start < their_end):
            count += 1
    return count


def halted_message(window: Window, failed: int, max_errors: int) -> str:
    return (
        f"{failed} runs failed in windows overlapping the one from {window[0]} to {window[1]} "
        f"(limit {max_errors}); no more runs start in it"
    )
