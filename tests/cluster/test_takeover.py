"""A takeover (issue 35, part 2): two replicas, the active one SIGKILLed while a run is in
Updating, and again while one is RollingBack; the standby, paused until the dead one's
peering entry expires, finishes the run as if nothing had happened — one Job, one
pre-update and one failed-state snapshot per claim, the old image back — and never wrote
while the active one lived. The time from the kill to the standby's first write is printed
(docs/reliability.md keeps the figures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import OLD, takeover
from tests.conftest import Cluster

LIFETIME = 15
"""The replicas' peering lifetime here (PATCHWARDEN_PEERING_LIFETIME_SECONDS; 60 by
default): the longest a dead replica's entry can keep the standby paused."""
SLACK = 10
"""What a takeover may take beyond the lifetime: kopf's re-listing of the runs, the
standby's first step, the first write."""

KILL_AT = {
    # The Job's create landed (its answer lost): the run is in Updating, the Job running.
    "Updating": lambda method, path: method == "POST" and path.endswith("/jobs"),
    # The rollback's first write, scaling the workload to zero.
    "RollingBack": lambda method, path: method == "PATCH" and path.endswith("/scale"),
}


@pytest.mark.parametrize("phase", list(KILL_AT))
def test_a_standby_takes_over_from_a_killed_active_replica(
    cluster: Cluster, namespace: str, tmp_path: Path, phase: str
) -> None:
    cluster.install_crds()
    found = takeover(cluster, namespace, tmp_path, KILL_AT[phase], LIFETIME)
    print(
        f"\ntakeover in {phase}: killed after {found.killed_at}; the standby's first write "
        f"{found.seconds:.1f} s later (lifetime {LIFETIME} s)"
        if found.seconds is not None
        else f"\ntakeover in {phase}: the standby never wrote"
    )
    assert not found.problems, found.problems
    assert found.written_while_active == [], "two writers: the standby wrote before the kill"
    outcome = found.outcome
    assert outcome is not None
    assert (outcome.phase, outcome.runs, outcome.jobs) == ("RolledBack", 1, 1)
    assert outcome.backups == (("app-data-0", 1), ("app-data-1", 1)), "one backup a claim"
    assert outcome.failed_state == (("app-data-0", 1), ("app-data-1", 1))
    assert outcome.images == (OLD,) and outcome.system_last_run == "RolledBack"
    assert {k: v for k, v in outcome.metric_runs if v} == {"RolledBack": 1.0}
    assert found.seconds is not None and found.seconds <= LIFETIME + SLACK, found.seconds
