"""The pre-update backup of a run (core/backup.py): claims, Stopped, snapshots."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from patchwarden.api.run import Phase
from patchwarden.core import run as m
from patchwarden.core.run import Read, Wait
from tests.unit.runs import (
    CLAIM,
    EARLIER,
    SNAP,
    STAMP,
    condition,
    kinds,
    status,
    step,
    system,
    the_workload,
    workload,
)


def test_snapshots_are_recorded_and_requested_in_one_step() -> None:
    out = step(
        status(Phase.SNAPSHOTTING, since=EARLIER, claims=["data"]),
        system=system(volumes=["data"]),
        workload=workload(),
        claims={"data": CLAIM},
        snapshot_class="std",
    )
    assert out.status.phase == Phase.SNAPSHOTTING and out.wait == Wait.WATCHED
    (create,) = out.actions
    assert isinstance(create, m.CreateSnapshot)
    assert create.body["spec"]["volumeSnapshotClassName"] == "std"
    record = out.status.snapshots[0]
    assert (record.claim, record.snapshot, record.created) == ("data", "run-data", True)
    assert record.claim_spec == {"storageClassName": "std"}
    assert out.status.phase_start_time == STAMP, "the deadline counts from the request"


def test_stopped_consistency_stops_the_workload_snapshots_it_at_rest_then_starts_it() -> None:
    stopped = system(volumes=["data"], backup={"consistency": "Stopped"})
    seen: dict[str, Any] = {
        "system": stopped,
        "claims": {"data": CLAIM},
        "snapshot_class": "std",
    }
    first = step(
        status(Phase.SNAPSHOTTING, claims=["data"], startReplicas=3),
        workload=workload(replicas=3),
        **seen,
    )
    assert first.actions == [m.ScaleToZero("Deployment", "app")]
    assert the_workload(first).stopped_replicas == 3 and not first.status.snapshots
    assert m.reads(first.status) == {
        Read.WORKLOAD,
        Read.WORKLOAD_PODS,
        Read.CLAIMS,
        Read.SNAPSHOT_CLASS,
    }
    stopping = step(first.status, workload=workload(replicas=0), workload_pods=2, **seen)
    assert stopping.actions == [] and stopping.wait == Wait.POLL, "no snapshot while pods run"
    at_rest = step(first.status, workload=workload(replicas=0), **seen)
    (create,) = at_rest.actions
    assert isinstance(create, m.CreateSnapshot)
    ready = at_rest.status.model_copy(deep=True)
    ready.snapshots[0].ready_to_use = True
    started = step(ready, **seen)
    assert started.status.phase == Phase.RECORDING
    assert m.ScaleBack("Deployment", "app", 3) in started.actions
    assert started.status.message == ("1 snapshots ready; Deployment app scaled back to 3 replicas")


def test_a_stopped_workload_is_started_again_when_its_snapshots_fail_or_it_is_deleted() -> None:
    stopped = system(volumes=["data"], backup={"consistency": "Stopped"})
    st = status(
        Phase.SNAPSHOTTING,
        since=EARLIER,
        stoppedReplicas=2,
        snapshots=[{**SNAP, "readyToUse": False}],
    )
    late = step(st, system=stopped, snapshots={"run-data": {"status": {}}}, snapshot_class="std")
    assert late.status.phase == Phase.FAILED
    assert m.ScaleBack("Deployment", "app", 2) in late.actions
    assert (late.status.message or "").endswith("; Deployment app scaled back to 2 replicas")
    assert condition(late, "NeedsAttention") is None
    deleting = system(volumes=["data"], backup={"consistency": "Stopped"})
    deleting["metadata"]["deletionTimestamp"] = STAMP
    gone = step(st, system=deleting)
    assert gone.status.phase == Phase.CANCELLED
    assert m.ScaleBack("Deployment", "app", 2) in gone.actions


def test_without_volumes_the_workloads_claims_are_snapshotted() -> None:
    mounted = workload()
    mounted["spec"]["template"]["spec"]["volumes"] = [
        {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}
    ]
    started = step(status(None), workload=mounted, namespace_claims=("data", "other"))
    assert started.status.claims == ["data"] and the_workload(started).start_replicas == 1
    assert m.claims_to_read(started.status) == ["data"]
    # A run an older operator started (no claims recorded) decides them from the namespace's.
    from patchwarden.api.system import ManagedSystemSpec

    spec = ManagedSystemSpec.model_validate(system()["spec"])
    st = status(Phase.SNAPSHOTTING)
    assert m.claims_to_read(st, None, [mounted], ("data",)) == []
    assert m.claims_to_read(st, spec, [mounted], ("data",)) == ["data"]
    assert Read.NAMESPACE_CLAIMS in m.reads(st)


def test_a_system_without_claims_goes_straight_to_recording() -> None:
    out = step(status(Phase.SNAPSHOTTING), workload=workload(), snapshot_class="std")
    assert out.status.phase == Phase.RECORDING and out.actions[0] == m.PhaseEnded(
        Phase.SNAPSHOTTING, 0.0
    )


@pytest.mark.parametrize(
    ("seen", "why"),
    [
        ({"claims": {"data": CLAIM}}, "Deployment app not found; nothing was changed"),
        (
            {"workload": workload(), "claims": {"data": None}},
            "PersistentVolumeClaim data not found",
        ),
        (
            {"workload": workload(), "claims": {"data": CLAIM}},
            "no VolumeSnapshotClass to take the required backups",
        ),
    ],
)
def test_snapshotting_fails_before_anything_changed(seen: dict[str, Any], why: str) -> None:
    st = status(Phase.SNAPSHOTTING, claims=["data"])
    out = step(st, system=system(volumes=["data"]), **seen)
    assert out.status.phase == Phase.FAILED and why in (out.status.message or "")
    assert not any(isinstance(a, m.CreateSnapshot) for a in out.actions)
    assert condition(out, "NeedsAttention") is None


def test_without_a_class_and_not_required_the_run_goes_on_without_snapshots() -> None:
    out = step(
        status(Phase.SNAPSHOTTING),
        system=system(volumes=["data"], backup={"required": False}),
        workload=workload(),
        claims={"data": CLAIM},
    )
    assert out.status.phase == Phase.RECORDING and out.status.snapshots == []
    assert out.status.backup_skipped == "no VolumeSnapshotClass and backup.required is false"
    assert not any(isinstance(a, m.CreateSnapshot) for a in out.actions)
    assert (
        m.Emit(
            "Warning",
            "BackupSkipped",
            "no VolumeSnapshotClass and backup.required is false; the update runs anyway",
        )
        in out.actions
    )


def test_ready_snapshots_move_on_to_recording() -> None:
    st = status(Phase.SNAPSHOTTING, snapshots=[{**SNAP, "readyToUse": False}])
    out = step(st, snapshots={"run-data": {"status": {"readyToUse": True}}}, snapshot_class="std")
    assert out.status.phase == Phase.RECORDING
    assert out.status.message == "1 snapshots ready"


def test_a_snapshot_that_is_not_ready_is_waited_for_until_its_deadline() -> None:
    st = status(Phase.SNAPSHOTTING, since=EARLIER, snapshots=[{**SNAP, "readyToUse": False}])
    seen = {"snapshots": {"run-data": {"status": {}}}, "snapshot_class": "std"}
    waiting = step(st, timeouts=m.Timeouts(timedelta(hours=2), timedelta(minutes=15)), **seen)
    assert waiting.status.phase == Phase.SNAPSHOTTING and waiting.wait == Wait.WATCHED
    late = step(st, **seen)
    assert late.status.phase == Phase.FAILED
    assert late.status.message == (
        "snapshots not ready within 600s: run-data; the workload was not touched"
    )


def test_a_snapshot_that_disappears_fails_the_run() -> None:
    st = status(Phase.SNAPSHOTTING, snapshots=[{**SNAP, "readyToUse": False}])
    out = step(st, snapshots={"run-data": None}, snapshot_class="std")
    assert out.status.phase == Phase.FAILED
    assert "VolumeSnapshot run-data disappeared" in (out.status.message or "")


SIX = tuple(f"{t}-db-{i}" for t in ("data", "wal") for i in range(3))


def statefulset(replicas: int) -> dict[str, Any]:
    return {
        "kind": "StatefulSet",
        "metadata": {"name": "db", "generation": 2, "resourceVersion": "7"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"spec": {"containers": [{"name": "a", "image": "v1"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": t}} for t in ("data", "wal")],
        },
        "status": {"observedGeneration": 2},
    }


def test_a_stopped_statefulset_is_snapshotted_claim_for_claim() -> None:
    """The data-loss scenario of issue 31: a StatefulSet of 3 replicas and two claim
    templates, ``backup.consistency: Stopped``. Its 6 claims are decided before it is
    scaled to zero, and all 6 are snapshotted at rest — not the none its 0 replicas give."""
    db = system(workload={"kind": "StatefulSet", "name": "db"}, backup={"consistency": "Stopped"})
    started = step(status(None), system=db, workload=statefulset(3), namespace_claims=SIX)
    assert started.status.claims == sorted(SIX) and the_workload(started).start_replicas == 3
    seen: dict[str, Any] = {
        "system": db,
        "claims": {c: {"metadata": {"name": c}, "spec": {}} for c in SIX},
        "snapshot_class": "std",
    }
    stopping = step(started.status, workload=statefulset(3), **seen)
    assert stopping.actions == [m.ScaleToZero("StatefulSet", "db")]
    at_rest = step(stopping.status, workload=statefulset(0), **seen)
    created = [a.body["spec"]["source"] for a in at_rest.actions if isinstance(a, m.CreateSnapshot)]
    assert created == [{"persistentVolumeClaimName": c} for c in sorted(SIX)]
    assert [r.claim for r in at_rest.status.snapshots] == sorted(SIX)


def test_a_step_repeated_after_the_scale_down_scales_back_to_the_replicas_at_the_start() -> None:
    """Killed between scaling to zero and writing the status, the operator repeats the step
    and reads 0 replicas: the run still knows the 3 it started with."""
    db = system(backup={"consistency": "Stopped"}, volumes=["data"])
    st = status(Phase.SNAPSHOTTING, claims=["data"], startReplicas=3)
    out = step(st, system=db, workload=workload(replicas=0), claims={"data": CLAIM})
    assert the_workload(out).stopped_replicas == 3


def test_a_run_on_a_statefulset_without_its_claims_ends_before_changing_anything() -> None:
    db = system(workload={"kind": "StatefulSet", "name": "db"})
    out = step(status(None), system=db, workload=statefulset(0), namespace_claims=())
    assert out.status.phase == Phase.FAILED and kinds(out) == ["Emit"]
    assert (out.status.message or "").startswith(
        "StatefulSet db has volumeClaimTemplates (data, wal) but none of their claims exists"
    )
