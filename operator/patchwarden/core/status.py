"""What a ManagedSystem's and an UpdateRequest's status should be: pure functions.

The systems and requests controllers gather the facts (does the workload exist, is
there a snapshot class …), calls these, and writes the result only when it
differs from what is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from patchwarden.api.common import describe_errors
from patchwarden.api.system import ManagedSystemSpec, ManagedSystemStatus, WindowRef
from patchwarden.core import conditions as c
from patchwarden.core.approval import PENDING, REMIND
from patchwarden.core.builders import pod_security
from patchwarden.core.gate import Verdict
from patchwarden.core.podsecurity import Level
from patchwarden.core.policy import Assessment, assess, installed_classes
from patchwarden.core.releases import Known, State, end_of_life_passed, pending_counts
from patchwarden.core.times import parse_time, utc_text
from patchwarden.core.windows import (
    Calendar,
    Occurrence,
    first_usable,
    next_windows,
    overlapping,
)

LOOKAHEAD = 24
"""Window occurrences examined for the next usable one."""


def window_ref(occ: Occurrence) -> WindowRef:
    return WindowRef(
        name=occ.window,
        start=utc_text(occ.start),
        end=utc_text(occ.end),
        cutoff=utc_text(occ.cutoff),
    )


def parse_system(spec: dict[str, Any]) -> tuple[ManagedSystemSpec | None, str | None]:
    try:
        return ManagedSystemSpec.model_validate(spec), None
    except ValidationError as exc:
        return None, "; ".join(describe_errors(exc, "spec"))


def needs_approval(spec: ManagedSystemSpec) -> bool:
    """Whether the provider's own runs of this system need the customer's approval."""
    return spec.updates.approval is not None and spec.updates.approval.required


def next_usable(
    spec: ManagedSystemSpec, now: datetime, calendar: Calendar | None = None
) -> Occurrence | None:
    expected = spec.reserved()
    upcoming = next_windows(spec.maintenance, expected, now, LOOKAHEAD, calendar)
    return first_usable(upcoming, now)


@dataclass
class SystemFacts:
    """What the systems controller found in the cluster (and the fleet registry) for one system."""

    missing_workloads: list[str] = field(default_factory=list)
    """The system's workloads not found in its namespace (``Kind name`` each)."""
    missing_claims: list[str] = field(default_factory=list)
    snapshot_class: str | None = None
    """The VolumeSnapshotClass runs would use; None when there is none."""
    active_run: str | None = None
    halted: str | None = None
    """Why no more runs start in the current window (MaxErrors), if so."""
    gate: Verdict | None = None
    """The alert gate's verdict, asked while a window is open and no run is in progress."""
    runs: list[dict[str, Any]] = field(default_factory=list)
    """The system's runs (summaries: spec, phase, message, completionTime)."""
    deleted_run: dict[str, Any] | None = None
    """Its newest ended run deleted since (by hand, or by the history limits), which
    ``lastRun`` must still name if nothing newer ended: its window gets no second run."""
    components: list[State] = field(default_factory=list)
    """Each component's installed version and newer releases (``core/releases.py``)."""
    pod_security: Level = Level.RESTRICTED
    """The operator's Pod Security floor for update Jobs."""
    waves: list[dict[str, str]] = field(default_factory=list)
    """Its wave in each ReleaseCatalog with waves (``{"catalog", "wave"}``)."""
    held: list[str] = field(default_factory=list)
    """Newest releases the waves hold back from it, each with why (``Ledger.why_not``)."""
    halted_release: bool = False
    """One of them is halted (a failed run), not only waiting for an earlier wave."""
    proposal: dict[str, Any] | None = None
    """The run proposed for approval (``updates.approval``), if one would start."""
    released: Callable[[Known], bool] | None = None
    """Whether the waves let this system take a release (None: no catalog has waves)."""
    soaked: list[datetime] = field(default_factory=list)
    """When the waves that hold a release back from it have soaked."""
    calendar: Calendar = field(default_factory=Calendar)
    """The window expansions its controller remembers (``core/windows.py``)."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    """Its UpdateRequests, decided (the requests controller wrote their statuses)."""
    snapshots: list[dict[str, Any]] | None = None
    """Its runs' VolumeSnapshots (``core/history.py`` reads them); None: not listed yet."""
    skipped: dict[str, Any] | None = None
    """The window it last skipped as this process wrote it (the watch may not have
    delivered that write yet)."""
    learned: list[dict[str, Any]] = field(default_factory=list)
    """``status.learnedVersions``: what runs installed of components described by hand."""


LAST_MESSAGE = 1024
"""Characters of the last run's message kept in the system's ``lastRun``."""
ACKNOWLEDGED = "patchwarden.io/acknowledged-run"
"""Annotation on a ManagedSystem: the run whose failed rollback a person has dealt with."""


def needs_attention(body: dict[str, Any], last: dict[str, Any] | None) -> str | None:
    """Why the system waits for a person, if it does: its last run failed leaving the
    workload changed (its rollback failed, or none was allowed), and nobody has said yet
    that they dealt with it."""
    if not last or not last.get("needsAttention"):
        return None
    annotations = body.get("metadata", {}).get("annotations") or {}
    if annotations.get(ACKNOWLEDGED) == last["name"]:
        return None
    name = body.get("metadata", {}).get("name", "")
    return (
        f"update run {last['name']} failed and left the workload as a person must check "
        "(its rollback did not complete); no update starts until then: "
        f"kubectl annotate managedsystem {name} {ACKNOWLEDGED}={last['name']}"
    )


Problem = tuple[str, str]
"""(reason, message) of something that stalls a system."""


@dataclass
class _Conditions:
    """A status's conditions, each set through :func:`conditions.set_condition` (which keeps
    the transition time of one that did not change)."""

    items: list[dict[str, Any]]
    generation: int | None
    stamp: str

    def set(self, type_: str, ok: bool, reason: str, message: str) -> None:
        self.items = c.set_condition(
            self.items, type_, ok, reason, message, generation=self.generation, now=self.stamp
        )


def system_status(
    body: dict[str, Any],
    facts: SystemFacts,
    now: datetime,
    parsed: tuple[ManagedSystemSpec | None, str | None] | None = None,
) -> tuple[ManagedSystemStatus, list[str]]:
    """The status a ManagedSystem should have (typed: the CRD's own model; what it sets is
    its merge patch, ``.patch()``), and the problems that stall it. ``parsed``:
    ``parse_system`` of its spec, when the caller has it already (half a millisecond)."""
    old: dict[str, Any] = dict(body.get("status") or {})
    generation = body.get("metadata", {}).get("generation")
    conds = _Conditions(list(old.get("conditions") or []), generation, utc_text(now))
    known = facts.runs if facts.deleted_run is None else [*facts.runs, facts.deleted_run]
    status: dict[str, Any] = last_run(old, known)
    status["observedGeneration"] = generation
    spec, invalid = parsed if parsed is not None else parse_system(body.get("spec") or {})
    problems: list[Problem] = []
    if spec is None:
        problems.append((c.INVALID_SPEC, f"the spec cannot be used: {invalid}"))
    else:
        problems += _contract(status, spec, facts, now, conds)
        if facts.learned or old.get("learnedVersions"):
            status["learnedVersions"] = facts.learned  # an invalid spec keeps what is stored
    attention = needs_attention(body, status.get("lastRun"))
    if attention:
        problems.insert(0, (c.ROLLBACK_FAILED, attention))
    _readiness(conds, problems)
    _progress(conds, facts)
    _rollout(status, old, facts, conds)
    _last_update(conds, status.get("lastRun"))
    status["conditions"] = conds.items
    return ManagedSystemStatus.model_validate(status), [m for _, m in problems]


def _contract(
    status: dict[str, Any],
    spec: ManagedSystemSpec,
    facts: SystemFacts,
    now: datetime,
    conds: _Conditions,
) -> list[Problem]:
    """What the contract and the cluster say of a valid spec: responsibility, eligibility,
    the next window, the components, the backups; and what stalls it."""
    assessment = assess(spec)
    status["responsibility"] = {
        "planning": assessment.planning.value,
        "execution": assessment.execution.value,
    }
    status["eligible"] = assessment.eligible
    status["eligibilityReason"] = assessment.reason
    conds.set(c.ELIGIBLE, assessment.eligible, assessment.code, assessment.reason)
    problems = _windows(status, spec, assessment.eligible, now, facts.calendar, conds)
    problems += _cluster_problems(spec, facts, assessment.eligible)
    if facts.components:
        _components(status, facts.components, assessment, now, conds.set)
    return problems + _backup(spec, facts, assessment.eligible, conds)


def _windows(
    status: dict[str, Any],
    spec: ManagedSystemSpec,
    eligible: bool,
    now: datetime,
    calendar: Calendar,
    conds: _Conditions,
) -> list[Problem]:
    """``nextWindow`` (an eligible system's first usable one) and the Scheduled condition;
    windows that overlap themselves, or no usable one ahead (an eligible system that is
    never updated: a person must add or fix a window)."""
    upcoming = next_windows(spec.maintenance, spec.reserved(), now, LOOKAHEAD, calendar)
    occ = first_usable(upcoming, now) if eligible else None
    problems = [
        (c.WINDOW_OVERLAP, f"window {name} is longer than the time between its occurrences")
        for name in overlapping(spec.maintenance, now, calendar=calendar)
    ]
    if occ is not None:
        ref = window_ref(occ)
        status["nextWindow"] = ref.wire()
        message = f"next usable window: {occ.window} at {ref.start}"
        conds.set(c.SCHEDULED, True, c.WINDOW_AHEAD, message)
    elif not eligible:
        conds.set(c.SCHEDULED, False, c.NOT_ELIGIBLE, "the provider does not update this system")
    else:
        why = (
            f"none of the next {len(upcoming)} windows is usable: each is frozen, shorter "
            "than updates.expectedDuration plus rollback.reserve, or past its cutoff"
            if upcoming
            else "no maintenance window lies ahead (none is defined, or each was a one-off "
            "that has passed)"
        )
        conds.set(c.SCHEDULED, False, c.NO_USABLE_WINDOW, why)
        problems.append((c.NO_USABLE_WINDOW, f"{why}: the system is never updated"))
    return problems


def _cluster_problems(spec: ManagedSystemSpec, facts: SystemFacts, eligible: bool) -> list[Problem]:
    """What the spec names and the cluster lacks, or what the operator would refuse."""
    problems: list[Problem] = []
    if facts.missing_workloads:
        missing = ", ".join(facts.missing_workloads)
        problems.append((c.WORKLOAD_NOT_FOUND, f"{missing} not found in this namespace"))
    if facts.missing_claims:
        missing = ", ".join(facts.missing_claims)
        problems.append((c.CLAIM_NOT_FOUND, f"PersistentVolumeClaims not found: {missing}"))
    bound = any(x.container for x in spec.components)
    if eligible and not spec.updates.template and not bound:
        problems.append(
            (
                c.NO_UPDATE_TEMPLATE,
                "spec.updates.template is required to run updates (unless components are "
                "bound to containers of the workload)",
            )
        )
    above = pod_security(spec, facts.pod_security)
    if above:
        problems.append(
            (
                c.POD_SECURITY,
                f"the update Job's pod would break the operator's Pod Security level "
                f"{facts.pod_security.value}, so no pod is created: " + "; ".join(above),
            )
        )
    for i, state in enumerate(facts.components):
        if state.stalls:
            problems.append((c.CONTAINER_NOT_FOUND, f"spec.components[{i}]: {state.problem}"))
    return problems


def _backup(
    spec: ManagedSystemSpec, facts: SystemFacts, eligible: bool, conds: _Conditions
) -> list[Problem]:
    """The BackupConfigured condition; no snapshot class for required backups stalls an
    eligible system."""
    if not spec.backup.required:
        conds.set(c.BACKUP_CONFIGURED, True, c.BACKUP_NOT_REQUIRED, "backups are not required")
        return []
    if facts.snapshot_class:
        message = f"snapshots use VolumeSnapshotClass {facts.snapshot_class}"
        conds.set(c.BACKUP_CONFIGURED, True, c.SNAPSHOT_CLASS_FOUND, message)
        return []
    wanted = spec.backup.volume_snapshot_class_name
    message = (
        f"VolumeSnapshotClass {wanted} not found"
        if wanted
        else "no VolumeSnapshotClass is named and the cluster has no default one"
    )
    conds.set(c.BACKUP_CONFIGURED, False, c.SNAPSHOT_CLASS_NOT_FOUND, message)
    if not eligible:
        return []
    return [(c.SNAPSHOT_CLASS_NOT_FOUND, message + " (backup.required is true)")]


def _readiness(conds: _Conditions, problems: list[Problem]) -> None:
    """Stalled and Ready: the first problem's reason, every problem's message."""
    if problems:
        reason, _ = problems[0]
        message = "; ".join(m for _, m in problems)
        conds.set(c.STALLED, True, reason, message)
        conds.set(c.READY, False, reason, message)
    else:
        conds.set(c.STALLED, False, c.RECONCILED, "")
        conds.set(c.READY, True, c.RECONCILED, "the system is reconciled")


def _progress(conds: _Conditions, facts: SystemFacts) -> None:
    """Reconciling (a run in progress) and UpdatesHalted (MaxErrors, or the alert gate)."""
    active = facts.active_run
    conds.set(
        c.RECONCILING,
        active is not None,
        c.RUN_IN_PROGRESS if active else c.RECONCILED,
        f"update run {active} in progress" if active else "",
    )
    if facts.halted is not None:
        conds.set(c.UPDATES_HALTED, True, c.MAX_ERRORS_REACHED, facts.halted)
    elif facts.gate is not None:
        gate = facts.gate
        conds.set(c.UPDATES_HALTED, gate.blocked, gate.decision.value, gate.message)
    else:
        conds.set(c.UPDATES_HALTED, False, c.WITHIN_ERROR_BUDGET, "")


def _rollout(
    status: dict[str, Any], old: dict[str, Any], facts: SystemFacts, conds: _Conditions
) -> None:
    """The proposal awaiting approval, the system's waves, and ReleasesHeld."""
    if facts.proposal is not None or old.get("proposal"):
        status["proposal"] = facts.proposal
    if facts.waves or old.get("waves"):
        status["waves"] = facts.waves
        if facts.held:
            reason = c.RELEASE_HALTED if facts.halted_release else c.WAITING_FOR_WAVE
            conds.set(c.RELEASES_HELD, True, reason, "; ".join(facts.held))
        else:
            conds.set(c.RELEASES_HELD, False, c.NOT_HELD, "")


def _last_update(conds: _Conditions, last: dict[str, Any] | None) -> None:
    """LastUpdateSucceeded: the outcome of the newest run that ended, alertable and in
    ``kubectl describe``."""
    if not last:
        return
    detail = f": {last['message']}" if last.get("message") and last["result"] != "Succeeded" else ""
    conds.set(
        c.LAST_UPDATE_SUCCEEDED,
        last["result"] == "Succeeded",
        last["result"],
        f"update run {last['name']} ended {last['result']} at {last.get('completionTime')}"
        + detail,
    )


def _components(
    status: dict[str, Any],
    found: list[State],
    assessment: Assessment,
    now: datetime,
    cond: Any,
) -> None:
    """The components' status, ``pendingUpdates``, and the UpToDate and EndOfLife conditions."""
    status["components"] = [s.wire() for s in found]
    classes = installed_classes(assessment)
    counts = pending_counts(found, classes)
    status["pendingUpdates"] = ", ".join(f"{k} {v}" for k, v in counts.items())
    behind = [s for s in found if s.in_scope and set(s.pending()) & set(classes)]
    unknown = [s for s in found if s.in_scope and s.installed is None and s.problem]
    ended = [s for s in found if end_of_life_passed(s, now.date(), classes)]
    eol = "; ".join(
        f"{s.component.name} {s.installed} reached its end of life on {s.end_of_life} and "
        f"its track offers no newer {' or '.join(classes)} release the contract installs"
        for s in ended
    )
    if behind:
        parts = []
        for s in behind:
            newest = s.security if "security" in classes and s.security else s.feature
            since = utc_text(s.behind_since) if s.behind_since else "?"
            assert newest is not None
            parts.append(f"{s.component.name} {s.installed}→{newest.version} (since {since})")
        total = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        cond(
            c.UP_TO_DATE, False, c.UPDATES_PENDING, f"updates pending: {total}: " + "; ".join(parts)
        )
    elif unknown:
        cond(
            c.UP_TO_DATE,
            False,
            c.VERSION_UNKNOWN,
            "; ".join(f"{s.component.name}: {s.problem}" for s in unknown),
        )
    elif any(s.in_scope for s in ended):  # nothing it installs, and what runs is unsupported
        cond(c.UP_TO_DATE, False, c.END_OF_LIFE_PASSED, eol)
    else:
        in_scope = sum(1 for s in found if s.in_scope)
        cond(
            c.UP_TO_DATE,
            True,
            c.NOTHING_PENDING,
            f"all {in_scope} components in scope run their newest acceptable, approved release",
        )
    if ended:
        cond(c.END_OF_LIFE, True, c.END_OF_LIFE_PASSED, eol)
    else:
        cond(c.END_OF_LIFE, False, c.SUPPORTED, "")


def next_look(status: ManagedSystemStatus, facts: SystemFacts, now: datetime) -> datetime | None:
    """The next instant at which the clock alone changes the system's status or what it
    decides, with nothing in the cluster changing: its next window opens, stops taking runs
    (cutoff) or closes; its proposal's approval deadline passes; a release becomes approved
    or an end of life passes; a wave that holds a release back has soaked. None: no such
    instant (only a change in the cluster, which wakes the system, changes anything)."""
    found: list[datetime] = []
    window = status.next_window
    if window is not None:
        found += [parse_time(t) for t in (window.start, window.cutoff, window.end)]
    proposal = status.proposal
    if proposal is not None and proposal.state == PENDING and proposal.approve_by:
        deadline = parse_time(proposal.approve_by)
        found += [deadline - REMIND, deadline]  # the reminder's CloudEvent, then the expiry
    found += [s.changes_at for s in facts.components if s.changes_at is not None]
    found += facts.soaked
    return min((t for t in found if t > now), default=None)


def requeue_after(
    status: ManagedSystemStatus, facts: SystemFacts, now: datetime, resync: float
) -> float:
    """Seconds until the system needs another look: :func:`next_look`, or the safety resync
    (a watch event missed) when that comes first. What happens meanwhile (its spec, its
    workload or claims, a run, a request, a catalog, a freed slot) queues the system itself."""
    at = next_look(status, facts, now)
    if at is None:
        return resync
    return min(resync, (at - now) / timedelta(seconds=1))


def resolve_snapshot_class(
    classes: list[dict[str, Any]],
    wanted: str | None,
    fallback: str | None,
    default_annotation: str = "snapshot.storage.kubernetes.io/is-default-class",
) -> str | None:
    """The class a system's snapshots use: its own, else the cluster's default (the class
    with ``default_annotation``), else the setting. VolumeGroupSnapshotClasses are chosen
    the same way (:data:`GROUP_DEFAULT_ANNOTATION`)."""
    names = {k["metadata"]["name"] for k in classes}
    if wanted:
        return wanted if wanted in names else None
    for k in classes:
        annotations = k["metadata"].get("annotations") or {}
        if annotations.get(default_annotation) == "true":
            return str(k["metadata"]["name"])
    return fallback if fallback in names else None


GROUP_DEFAULT_ANNOTATION = "groupsnapshot.storage.kubernetes.io/is-default-class"


def last_run(old: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``lastRun`` and ``lastSuccessfulUpdate`` of a system, from its runs: the newest
    ended run; a value already recorded stays when its run is gone (pruned history)."""
    out: dict[str, Any] = {k: old[k] for k in ("lastRun", "lastSuccessfulUpdate") if k in old}
    ended = [r for r in runs if (r.get("status") or {}).get("completionTime")]
    if ended:
        newest = max(ended, key=lambda r: r["status"]["completionTime"])
        recorded = (out.get("lastRun") or {}).get("completionTime") or ""
        if newest["status"]["completionTime"] >= recorded:
            out["lastRun"] = {
                "name": newest["metadata"]["name"],
                "result": newest["status"]["phase"],
                "completionTime": newest["status"]["completionTime"],
            }
            if newest["status"].get("message"):
                out["lastRun"]["message"] = newest["status"]["message"][:LAST_MESSAGE]
            if newest["status"].get("needsAttention"):
                out["lastRun"]["needsAttention"] = True
    successes = [
        r["status"]["completionTime"] for r in ended if r["status"].get("phase") == "Succeeded"
    ]
    if successes and max(successes) > (out.get("lastSuccessfulUpdate") or ""):
        out["lastSuccessfulUpdate"] = max(successes)
    return out
