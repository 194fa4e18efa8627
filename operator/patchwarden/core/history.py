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


def learned_versions(
    old: Sequence[Mapping[str, Any]],
    by_hand: Mapping[str, str | None],
    runs: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """The versions of components described by hand (``by_hand``: name → the spec's
    version) that succeeded runs installed: what the update Job reported (``reported`` in
    the run's summary) or, without a report, the run's targets the Job was to apply. The
    newest run of each component wins; an entry stays when its run is pruned (``old``, as
    stored) and goes only with its component. Each remembers the spec's version it
    replaced: it counts while the spec still says that (:func:`counted`)."""
    entries = {e["component"]: dict(e) for e in old if e.get("component") in by_hand}
    done = [
        r
        for r in runs
        if (r.get("status") or {}).get("phase") == Phase.SUCCEEDED.value
        and r["status"].get("completionTime")
    ]
    for run in sorted(done, key=lambda r: r["status"]["completionTime"]):
        ended = run["status"]["completionTime"]
        found = {
            t["component"]: t["to"]
            for t in (run.get("spec") or {}).get("targets") or []
            if not t.get("container") and t.get("component") in by_hand and t.get("to")
        }
        for change in run["status"].get("reported") or []:
            if change.get("component") in by_hand and change.get("to"):
                found[change["component"]] = change["to"]
        for name, version in found.items():
            known = entries.get(name)
            if known is not None and known["time"] >= ended:
                continue  # learned from this run or a newer one already
            entry = {"component": name, "version": version, "run": run["metadata"]["name"]}
            if by_hand[name] is not None:
                entry["specVersion"] = by_hand[name]  # what it replaces, as GitOps wrote it
            entry["time"] = ended
            entries[name] = entry
    return [entries[k] for k in sorted(entries)]


def _counts(entry: Mapping[str, Any], by_hand: Mapping[str, str | None]) -> bool:
    return by_hand.get(entry["component"]) == entry.get("specVersion")


def counted(
    entries: Sequence[Mapping[str, Any]], by_hand: Mapping[str, str | None]
) -> dict[str, tuple[str, str]]:
    """Component → (version, run) of each learned version that counts: the spec still
    names the version it replaced (GitOps wrote nothing since; once it writes another,
    the spec counts again)."""
    return {e["component"]: (e["version"], e["run"]) for e in entries if _counts(e, by_hand)}
