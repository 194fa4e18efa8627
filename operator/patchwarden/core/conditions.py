"""Condition types and reasons, defined once, and the one way to set them.

The types follow kstatus (``Ready``, ``Reconciling``, ``Stalled``), which Flux,
Argo CD and ``kubectl wait --for=condition=Ready`` understand, plus specific
ones. Reasons are CamelCase identifiers as ``metav1.Condition`` requires.
"""

from __future__ import annotations

from typing import Any

# Types
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
ELIGIBLE = "Eligible"
BACKUP_CONFIGURED = "BackupConfigured"
UPDATES_HALTED = "UpdatesHalted"
ACCEPTED = "Accepted"
NEEDS_ATTENTION = "NeedsAttention"
LAST_UPDATE_SUCCEEDED = "LastUpdateSucceeded"
UP_TO_DATE = "UpToDate"
END_OF_LIFE = "EndOfLife"
RELEASES_HELD = "ReleasesHeld"
SCHEDULED = "Scheduled"

# Reasons
RECONCILED = "Reconciled"
WAITING_FOR_WAVE = "WaitingForWave"
RELEASE_HALTED = "ReleaseHalted"
NOT_HELD = "NotHeld"
INVALID_SPEC = "InvalidSpec"
WORKLOAD_NOT_FOUND = "WorkloadNotFound"
CLAIM_NOT_FOUND = "ClaimNotFound"
SNAPSHOT_CLASS_NOT_FOUND = "SnapshotClassNotFound"
NO_UPDATE_TEMPLATE = "NoUpdateTemplate"
WINDOW_OVERLAP = "WindowLongerThanPeriod"
NO_USABLE_WINDOW = "NoUsableWindow"
WINDOW_AHEAD = "WindowAhead"
NOT_ELIGIBLE = "NotEligible"
SNAPSHOT_CLASS_FOUND = "SnapshotClassFound"
BACKUP_NOT_REQUIRED = "BackupNotRequired"
RUN_IN_PROGRESS = "RunInProgress"
MAX_ERRORS_REACHED = "MaxErrorsReached"
WITHIN_ERROR_BUDGET = "WithinErrorBudget"
ROLLBACK_FAILED = "RollbackFailed"
NOTHING_PENDING = "NothingPending"
UPDATES_PENDING = "UpdatesPending"
VERSION_UNKNOWN = "VersionUnknown"
CONTAINER_NOT_FOUND = "ContainerNotFound"
POD_SECURITY = "PodSecurity"
END_OF_LIFE_PASSED = "EndOfLifePassed"
SUPPORTED = "Supported"


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """A copy of ``conditions`` with ``type_`` set; its lastTransitionTime moves
    only when its status changes."""
    value = "True" if status else "False"
    old = next((c for c in conditions if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == value else now
    new = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    return [c for c in conditions if c.get("type") != type_] + [new]


def get(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]], type_: str) -> bool:
    cond = get(conditions, type_)
    return bool(cond and cond.get("status") == "True")


def transitions(
    old: list[dict[str, Any]], new: list[dict[str, Any]]
) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) of each condition whose status or reason changed."""
    out = []
    for cond in new:
        before = get(old, cond["type"])
        if not before or (before.get("status"), before.get("reason")) != (
            cond["status"],
            cond["reason"],
        ):
            out.append((cond["type"], cond["status"], cond["reason"], cond["message"]))
    return out
