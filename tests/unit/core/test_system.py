"""The system's decision (``core/system.py: decide``): what one reconcile writes and does,
from facts alone: no cluster, no controller."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from patchwarden.core.builders import RUN_FINALIZER
from patchwarden.core.gate import Decision as GateDecision
from patchwarden.core.gate import Verdict
from patchwarden.core.releases import Catalogs, states
from patchwarden.core.status import SystemFacts, parse_system
from patchwarden.core.system import (
    DeleteRun,
    DeleteSnapshot,
    HoldRun,
    ReleaseFinalizer,
    Timing,
    decide,
)
from patchwarden.core.times import parse_time

NOW = datetime(2027, 2, 10, 12, 0, tzinfo=UTC)
TIMING = Timing(resync=86400.0, gate_interval=60.0)
RUN = "a-202702101155"


def system(**spec: Any) -> dict[str, Any]:
    """A SaaS system whose window opened five minutes ago, with an update Job."""
    return {
        "metadata": {"namespace": "ns", "name": "a", "uid": "uid-a", "generation": 1},
        "spec": {
            "customer": "acme",
            "serviceModel": "SaaS",
            "workload": {"kind": "Deployment", "name": "a"},
            "maintenance": {
                "windows": [{"name": "now", "once": "2027-02-10T11:55:00Z", "duration": "2h"}]
            },
            "updates": {
                "template": {"spec": {"containers": [{"name": "u", "image": "x"}]}},
                "runJob": "EveryWindow",
            },
            "backup": {"required": False},
            **spec,
        },
    }


def ended(name: str, phase: str, at: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"window": {"start": "2027-01-01T00:00:00Z"}},
        "status": {"phase": phase, "completionTime": at},
    }


def test_a_due_system_starts_its_run_with_its_manifest_and_looks_again_at_the_cutoff() -> None:
    decision = decide(system(), SystemFacts(), NOW, TIMING)
    start = decision.started()
    assert start is not None and start.start.run == RUN
    assert start.manifest["metadata"] == {
        **start.manifest["metadata"],
        "name": RUN,
        "namespace": "ns",
    }
    assert start.window == ("2027-02-10T11:55:00Z", "2027-02-10T13:55:00Z")
    assert not decision.problems
    assert decision.status.next_window is not None
    cutoff = parse_time(decision.status.next_window.cutoff)  # the next instant that matters
    assert decision.requeue == (cutoff - NOW).total_seconds()


def test_a_stalled_system_starts_nothing_and_says_why() -> None:
    decision = decide(system(), SystemFacts(missing_workloads=["Deployment a"]), NOW, TIMING)
    assert decision.actions == ()
    assert decision.problems == ("Deployment a not found in this namespace",)
    stalled = next(c for c in decision.status.conditions if c.type == "Stalled")
    assert (stalled.status, stalled.reason) == ("True", "WorkloadNotFound")


def test_an_invalid_spec_names_the_field_and_starts_nothing() -> None:
    body = system(serviceModel="Hosting")
    decision = decide(body, SystemFacts(), NOW, TIMING)
    assert decision.actions == ()
    assert decision.problems and "spec.serviceModel" in decision.problems[0]


def test_a_system_being_deleted_releases_its_finalizer_and_starts_nothing() -> None:
    body = system()
    body["metadata"] |= {"deletionTimestamp": "2027-02-10T11:59:00Z", "finalizers": [RUN_FINALIZER]}
    decision = decide(body, SystemFacts(), NOW, TIMING)
    assert decision.actions == (ReleaseFinalizer(),)
    assert decision.requeue == TIMING.resync
    busy = decide(body, SystemFacts(active_run="a-1"), NOW, TIMING)
    assert busy.actions == (), "its run in progress holds the deletion"


def test_nothing_to_install_skips_the_window_once() -> None:
    body = system(
        components=[
            {
                "name": "app",
                "container": "app",
                "installedBy": "provider",
                "source": "standard-repository",
                "layer": "application",
            }
        ],
        updates={},
    )
    spec, _ = parse_system(body["spec"])
    assert spec is not None
    pod = {"containers": [{"name": "app", "image": "app:1.0"}]}
    found = states(spec, Catalogs({}), {"spec": {"template": {"spec": pod}}}, NOW)
    decision = decide(body, SystemFacts(components=found), NOW, TIMING)
    skip = decision.skipped()
    assert skip is not None and decision.started() is None
    assert (skip.type, skip.reason) == ("Normal", "NothingToInstall")
    assert decision.status.patch()["skippedWindow"] == {
        "name": "now",
        "start": "2027-02-10T11:55:00Z",
    }
    again = decide(body, SystemFacts(components=found, skipped=dict(skip.skipped)), NOW, TIMING)
    assert again.skipped() is None and "skippedWindow" not in again.status.patch()


def test_firing_alerts_hold_the_run_and_ask_again_at_the_gate_interval() -> None:
    verdict = Verdict(GateDecision.FIRING, True, "alert Down is firing", ("up == 0",), ("Down",))
    decision = decide(system(), SystemFacts(gate=verdict), NOW, TIMING)
    assert decision.actions == (HoldRun(RUN, "alert Down is firing"),)
    assert decision.requeue == TIMING.gate_interval


def test_a_spent_error_budget_starts_nothing() -> None:
    decision = decide(system(), SystemFacts(halted="3 runs failed"), NOW, TIMING)
    assert decision.actions == ()
    halted = next(c for c in decision.status.conditions if c.type == "UpdatesHalted")
    assert halted.status == "True"


def test_history_and_retention_prune_only_with_no_run_in_progress() -> None:
    body = system(
        history={"successfulRuns": 1, "failedRuns": 1}, backup={"required": False, "retain": 1}
    )
    runs = [
        ended("r1", "Succeeded", "2027-01-01T01:00:00Z"),
        ended("r2", "Succeeded", "2027-01-08T01:00:00Z"),
    ]
    snapshots = [
        {
            "metadata": {
                "name": f"{r}-data",
                "labels": {"patchwarden.io/run": r},
                "creationTimestamp": t,
            }
        }
        for r, t in (("r1", "2027-01-01T00:30:00Z"), ("r2", "2027-01-08T00:30:00Z"))
    ]
    facts = SystemFacts(runs=runs, snapshots=snapshots)
    decision = decide(body, facts, NOW, TIMING)
    assert DeleteRun("r1") in decision.actions
    assert DeleteSnapshot("r1-data") in decision.actions
    assert DeleteSnapshot("r2-data") not in decision.actions
    busy = decide(body, SystemFacts(runs=runs, snapshots=snapshots, active_run="r3"), NOW, TIMING)
    assert DeleteRun("r1") in busy.actions
    assert not [a for a in busy.actions if isinstance(a, DeleteSnapshot)]
