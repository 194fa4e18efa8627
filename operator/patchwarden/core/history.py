"""Which ended runs of a system go: the history limits, as a CronJob keeps its Jobs."""

from __future__ import annotations

from typing import Any

from patchwarden.api.run import Phase


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
