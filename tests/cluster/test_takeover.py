"""A takeover (issue 35, part 2): two replicas, the active one SIGKILLed while a run is in
Updating, and again while one is RollingBack; the standby, paused until the dead one's
peering entry expires, finishes the run as if nothing had happened — one Job, one
pre-update and one failed-state snapshot per claim, the old image back — and never wrote
while the active one lived. The time from the kill to the standby's first write is printed
(docs/reliability.md keeps the figures)."""

from __future__ import annotations

from dataclasses import replace
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


def test_a_replica_cut_off_from_the_api_server_stops_before_the_standby_starts(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The active replica's traffic stops (its proxy holds every request) while the
    standby reaches the API server: the cut-off one fences itself before its entry
    expires, so every write it still tries comes before the standby's first; reconnected,
    it waits for the standby to see it before it acts again, and changes nothing."""
    cluster.install_crds()
    found = takeover(cluster, namespace, tmp_path, KILL_AT["Updating"], LIFETIME, cut_off=True)
    print(
        f"\ncut off in Updating after {found.killed_at}: its writes tried afterwards "
        f"{[f'{t:.1f}s {w}' for t, w in found.held]}; the standby's first write "
        f"{found.seconds} s after the cut"
    )
    assert not found.problems, found.problems
    assert found.written_while_active == []
    assert found.fenced, "the cut-off replica said it stopped acting"
    assert found.seconds is not None and found.seconds <= LIFETIME + SLACK
    assert all(t < found.seconds for t, _ in found.held), "two writers: a write after the takeover"
    assert found.outcome is not None and found.outcome.phase == "RolledBack"
    assert found.outcome.images == (OLD,) and found.outcome.jobs == 1
    assert found.after_heal == replace(found.outcome, metric_runs=()), "changed after it came back"
