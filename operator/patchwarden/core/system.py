"""What one reconcile of a ManagedSystem does: a pure decision, like a run's step.

``decide(body, facts, now, timing)`` reads the system as stored and the facts its
controller gathered once (``core/status.py: SystemFacts``: the workload, the
claims, the snapshot class, its runs and requests, the components and the waves,
the fleet's and the alert gate's verdicts) and returns a :class:`Decision`: the
status to write (one write, ``skippedWindow`` included), the actions to apply in
order (frozen: release the finalizer, delete ended runs beyond the history, delete
snapshots beyond the retention, record a skipped window, start a run, hold a run
back), and when to look again. ``patchwarden plan`` calls it on simulated facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from patchwarden.api.common import parse_duration
from patchwarden.api.run import Target, Trigger
from patchwarden.api.system import ManagedSystemSpec, ManagedSystemStatus, SkippedWindow
from patchwarden.core import builders
from patchwarden.core.approval import ANSWERS, propose
from patchwarden.core.due import Due, due_run
from patchwarden.core.history import beyond_retention, to_prune
from patchwarden.core.policy import assess
from patchwarden.core.scheduler import Start, decide_start
from patchwarden.core.status import (
    SystemFacts,
    needs_approval,
    next_usable,
    parse_system,
    requeue_after,
    system_status,
    window_ref,
)
from patchwarden.core.times import utc_text


@dataclass(frozen=True)
class Timing:
    """The operator's intervals a decision needs (``core/settings.py``)."""

    resync: float
    """Seconds of the safety resync (a missed watch event)."""
    gate_interval: float
    """Seconds until the alert gate is asked again about a run it held back."""


@dataclass(frozen=True)
class ReleaseFinalizer:
    """No run is in progress: nothing holds the system's deletion any more."""


@dataclass(frozen=True)
class DeleteRun:
    """An ended run beyond ``history.successfulRuns`` / ``history.failedRuns``."""

    name: str


@dataclass(frozen=True)
class DeleteSnapshot:
    """A snapshot beyond ``backup.retain`` (or an expired failed-state snapshot)."""

    name: str


@dataclass(frozen=True)
class SkipWindow:
    """A window came and its due run does not start (``core/due.py``): one Event for it
    (``status.skippedWindow`` records it)."""

    skipped: Mapping[str, str]
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class StartRun:
    """The due run, as it is created once the fleet admits it."""

    start: Start
    targets: tuple[Target, ...]
    customer: str
    window: tuple[str, str]
    """The window occurrence's (start, end): the fleet's error budget is per occurrence."""
    manifest: Mapping[str, Any]
    event: str
    """The RunStarted Event's message."""


@dataclass(frozen=True)
class HoldRun:
    """The due run waits: the alert gate holds it back (asked again after ``requeue``)."""

    run: str
    why: str


Action = ReleaseFinalizer | DeleteRun | DeleteSnapshot | SkipWindow | StartRun | HoldRun


@dataclass(frozen=True)
class Decision:
    status: ManagedSystemStatus
    """What the status should be (``.patch()``: what the controller writes)."""
    actions: tuple[Action, ...]
    requeue: float
    """Seconds until the system needs another look (with nothing in the cluster changing)."""
    problems: tuple[str, ...] = ()
    """What stalls the system (its Stalled condition's messages)."""

    def started(self) -> StartRun | None:
        return next((a for a in self.actions if isinstance(a, StartRun)), None)

    def skipped(self) -> SkipWindow | None:
        return next((a for a in self.actions if isinstance(a, SkipWindow)), None)


def decide(
    body: Mapping[str, Any],
    facts: SystemFacts,
    now: datetime,
    timing: Timing,
    parsed: tuple[ManagedSystemSpec | None, str | None] | None = None,
) -> Decision:
    """The status, the actions and the next look of one reconcile (see the module)."""
    meta = body["metadata"]
    spec, invalid = parsed if parsed is not None else parse_system(body.get("spec") or {})
    if spec is not None and needs_approval(spec) and assess(spec).proactive is not None:
        facts = replace(facts, proposal=proposal(body, spec, facts, now))
    status, problems = system_status(dict(body), facts, now, (spec, invalid))
    actions: list[Action] = []
    if facts.active_run is None and builders.RUN_FINALIZER in meta.get("finalizers", ()):
        actions.append(ReleaseFinalizer())
    if meta.get("deletionTimestamp"):
        # Its run (if any) stops or rolls back and its end queues the system again, to let
        # the deletion complete; nothing new starts.
        return Decision(status, tuple(actions), timing.resync, tuple(problems))
    if spec is not None:
        actions += _retention(spec, facts)
    later = requeue_after(status, facts, now, timing.resync)
    if problems or spec is None:
        # What stalls it wakes it when it changes; its next window still moves on.
        return Decision(status, tuple(actions), later, tuple(problems))
    last = status.last_run.name if status.last_run is not None else None
    start = decide_start(
        meta["name"], spec, assess(spec), now, facts.requests, facts.runs, last, facts.calendar
    )
    if start is None:
        return Decision(status, tuple(actions), later)
    due = due_run(
        start, spec, facts.components, facts.released, facts.proposal, needs_approval(spec)
    )
    if due.skipped:
        skip = _skip(body, facts, due)
        if skip is not None:
            status.skipped_window = SkippedWindow.model_validate(skip.skipped)
            actions.append(skip)
        return Decision(status, tuple(actions), later)
    if facts.halted is not None:
        return Decision(status, tuple(actions), later)
    if facts.gate is not None and facts.gate.blocked:
        actions.append(HoldRun(start.run, facts.gate.message))
        # Asked again at the next interval (the answer is shared that long).
        return Decision(status, tuple(actions), min(timing.gate_interval, timing.resync))
    actions.append(_start(body, spec, start, due.targets))
    # While a run is in progress, its end queues the system again.
    return Decision(status, tuple(actions), later)


def _retention(spec: ManagedSystemSpec, facts: SystemFacts) -> list[Action]:
    """Ended runs beyond the history limits (``lastRun`` keeps a pruned run's outcome) and,
    with no run in progress, snapshots beyond the retention."""
    actions: list[Action] = [
        DeleteRun(run)
        for run in to_prune(facts.runs, spec.history.successful_runs, spec.history.failed_runs)
    ]
    if facts.active_run is None and facts.snapshots:
        keep = parse_duration(spec.rollback.keep_failed_state)
        beyond = beyond_retention(facts.snapshots, facts.runs, spec.backup.retain, keep)
        actions += [DeleteSnapshot(name) for name in beyond]
    return actions


def _skip(body: Mapping[str, Any], facts: SystemFacts, due: Due) -> SkipWindow | None:
    """The window passes without a run (nothing is newer and no Job does the update, or
    its proposal was not approved): recorded once per window occurrence."""
    skipped = {
        "name": due.start.occurrence.window,
        "start": window_ref(due.start.occurrence).start,
    }
    if due.start.request:
        skipped["request"] = due.start.request
    if due.why:
        skipped["reason"] = due.why
    if skipped in ((body.get("status") or {}).get("skippedWindow"), facts.skipped):
        return None
    at = f"window {skipped['name']} at {skipped['start']}"
    assert due.skipped is not None
    if due.why:
        return SkipWindow(skipped, "Warning", due.skipped, f"{at}: {due.why}; no run started")
    message = f"{at}: every component in scope runs its newest acceptable release; no run started"
    return SkipWindow(skipped, "Normal", due.skipped, message)


def _start(
    body: Mapping[str, Any], spec: ManagedSystemSpec, start: Start, chosen: list[Target]
) -> StartRun:
    """The run that starts: its manifest, and what the fleet admits it by."""
    meta = body["metadata"]
    window = window_ref(start.occurrence)
    manifest = builders.update_run(
        system=meta["name"],
        system_uid=meta["uid"],
        customer=spec.customer,
        trigger=start.trigger,
        window=window,
        window_start=start.occurrence.start,
        classes=list(start.classes),
        components=list(assess(spec).components),
        targets=[t.wire() for t in chosen],
        request=start.request,
        template=spec.updates.template,
        ticket=start.ticket,
    )
    manifest["metadata"]["namespace"] = meta["namespace"]
    event = (
        f"update run {start.run} ({start.trigger.value}) started in window "
        f"{start.occurrence.window}"
    )
    return StartRun(
        start, tuple(chosen), spec.customer, (window.start, window.end), manifest, event
    )


def proposal(
    body: Mapping[str, Any], spec: ManagedSystemSpec, facts: SystemFacts, now: datetime
) -> dict[str, Any] | None:
    """The run proposed for the next window in which the provider would start one on its
    own, with what it would install; None when none would start (approval needs a run of
    the provider's own initiative, and something to do)."""
    meta = body["metadata"]
    occ = next_usable(spec, now, facts.calendar)
    if occ is None:
        return None
    at = max(now, occ.start)
    old_status = body.get("status") or {}
    last = (old_status.get("lastRun") or {}).get("name")
    due = decide_start(meta["name"], spec, assess(spec), at, [], facts.runs, last, facts.calendar)
    old = old_status.get("proposal")
    if due is None or due.trigger == Trigger.REQUEST or due.occurrence.start != occ.start:
        # Its run started (or the window needs none): an approved proposal stays shown.
        return old if old and old.get("start") == utc_text(occ.start) else None
    answer = due_run(due, spec, facts.components, facts.released)  # approval aside
    if answer.skipped:  # nothing to install: nothing to propose
        return None
    approval = spec.updates.approval
    assert approval is not None
    return propose(
        old,
        occ.window,
        occ.start,
        answer.targets,
        parse_duration(approval.before),
        {k: v for k, v in (meta.get("annotations") or {}).items() if k in ANSWERS},
        now,
        meta["name"],
    )
