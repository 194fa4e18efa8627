"""Which ended runs of a system go (the history limits, as a CronJob keeps its Jobs), and
which of its snapshots (``backup.retain``, ``rollback.keepFailedState``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from patchwarden.api.run import Phase
from patchwarden.core import builders
from patchwarden.core.times import parse_time, utc_text

NEVER = "1970-01-01T00:00:00Z"
"""A ``failed_state_before`` that prunes no failed-state snapshot."""


def to_prune(runs: list[dict[str, Any]], successful: int, failed: int) -> list[str]:
    """Names of the system's ended runs beyond the newest ``successful`` that succeeded and
    the newest ``failed`` that rolled back, failed or were cancelled. A run in progress is
    never pruned."""
    ended = [r for r in runs if (r.get("status") or {}).get("completionTime")]
    newest_first = sorted(ended, key=lambda r: r["status"]["completionTime"], reverse=True)
    kept = {Phase.SUCCEEDED.value: successful, Phase.ROLLED_BACK.value: failed}
    seen = {Phase.SUCCEEDED.value: 0, Phase.ROLLED_BACK.value: 0}
    out = []
    for run in newest_first:
        phase = run["status"].get("phase")
        kind = Phase.SUCCEEDED.value if phase == Phase.SUCCEEDED.value else Phase.ROLLED_BACK.value
        seen[kind] += 1
        if seen[kind] > kept[kind]:
            out.append(str(run["metadata"]["name"]))
    return out


def prunable(
    snapshots: Sequence[Mapping[str, Any]], run: str, retain: int, failed_state_before: str
) -> list[str]:
    """The snapshots to delete: backups beyond the newest ``retain`` runs' (``run``, the one
    that just succeeded, always keeps its own), and failed-state snapshots created before
    ``failed_state_before`` (never by ``retain``)."""
    by_run: dict[str, list[Mapping[str, Any]]] = {}
    expired: list[str] = []
    for snap in snapshots:
        labels = snap["metadata"].get("labels") or {}
        if labels.get(builders.LABEL_STATE) == builders.FAILED_STATE:
            if parse_time(snap["metadata"]["creationTimestamp"]) < parse_time(failed_state_before):
                expired.append(str(snap["metadata"]["name"]))
            continue
        by_run.setdefault(labels.get(builders.LABEL_RUN, ""), []).append(snap)
    newest_first = sorted(
        by_run,
        key=lambda r: min(s["metadata"]["creationTimestamp"] for s in by_run[r]),
        reverse=True,
    )
    keep = {run, *newest_first[:retain]}
    backups = [
        str(snap["metadata"]["name"])
        for other in newest_first
        if other not in keep
        for snap in by_run[other]
    ]
    return backups + expired


def beyond_retention(
    snapshots: Sequence[Mapping[str, Any]],
    runs: Sequence[Mapping[str, Any]],
    retain: int,
    keep_failed_state: timedelta,
) -> list[str]:
    """A system's snapshots to delete while none of its runs is in progress: the rule a
    successful run applies when it ends (:func:`prunable`), with its newest successful run
    keeping its own, and failed-state snapshots going only once a successful run ended
    ``keep_failed_state`` after they were taken. Runs that keep failing, or a history of
    runs made elsewhere, are bounded too."""
    if not snapshots:
        return []
    succeeded = [
        r
        for r in runs
        if (r.get("status") or {}).get("phase") == Phase.SUCCEEDED.value
        and r["status"].get("completionTime")
    ]
    newest = max(succeeded, key=lambda r: r["status"]["completionTime"], default=None)
    if newest is None:
        return prunable(snapshots, "", retain, NEVER)
    failed_before = utc_text(parse_time(newest["status"]["completionTime"]) - keep_failed_state)
    return prunable(snapshots, str(newest["metadata"]["name"]), retain, failed_before)
