"""The run state machine, branch by branch, on an injected clock and no cluster."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from patchwarden.api.run import Phase, RollbackStep, UpdateRunStatus
from patchwarden.core import run as m
from patchwarden.core.gate import Decision, Verdict
from patchwarden.core.run import Observed, Read, Wait
from tests.unit.runs import NOW, RUN_SPEC

STAMP = "2027-02-10T12:00:00Z"
EARLIER = "2027-02-10T11:00:00Z"  # an hour before NOW
TIMEOUTS = m.Timeouts(snapshot=timedelta(minutes=10), rollback=timedelta(minutes=15))

RUN = m.Run.of(
    {
        "metadata": {"namespace": "ns", "name": "run", "uid": "u1", "generation": 1},
        "spec": RUN_SPEC,
    }
)


def system(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "app", "namespace": "ns"},
        "spec": {
            "customer": "acme",
            "serviceModel": "SaaS",
            "workload": {"kind": "Deployment", "name": "app"},
            "updates": {
                "template": {"spec": {"containers": [{"name": "u", "image": "x"}]}},
                "runTimeout": "4h",
                "verifyTimeout": "10m",
            },
            **spec,
        },
    }


def workload(replicas: int = 1, ready: bool = True, image: str = "v2") -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "app", "generation": 2, "resourceVersion": "7"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {"spec": {"containers": [{"name": "a", "image": image}]}},
        },
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas if ready else 0,
        },
    }


CLAIM = {"metadata": {"name": "data"}, "spec": {"storageClassName": "std"}}
RECORDED = {
    "kind": "Deployment",
    "name": "app",
    "replicas": 2,
    "template": {"spec": {"containers": [{"name": "a", "image": "v1"}]}},
}
SNAP = {"claim": "data", "snapshot": "run-data", "created": True, "readyToUse": True}


def status(phase: Phase | None, since: str = STAMP, **fields: Any) -> UpdateRunStatus:
    wire: dict[str, Any] = {"phaseStartTime": since, **fields}
    if phase is not None:
        wire["phase"] = phase.value
    return UpdateRunStatus.model_validate(wire)


def step(
    st: UpdateRunStatus, now: datetime = NOW, timeouts: m.Timeouts = TIMEOUTS, **seen: Any
) -> m.Transition:
    seen.setdefault("system", system())
    if st.phase is None:  # a run starts only on a workload that exists
        seen.setdefault("workload", workload())
    return m.advance(RUN, st, Observed(**seen), now, timeouts)


def kinds(out: m.Transition) -> list[str]:
    return [type(a).__name__ for a in out.actions]


def condition(out: m.Transition, type_: str) -> str | None:
    return next((c.status.value for c in out.status.conditions if c.type == type_), None)


# ---- Pending -------------------------------------------------------------------------------
def test_pending_starts_snapshotting_and_says_so() -> None:
    out = step(status(None))
    assert out.status.phase == Phase.SNAPSHOTTING and out.wait == Wait.NOW
    assert out.status.start_time == STAMP and out.status.observed_generation == 1
    assert m.Emit("Normal", "Started", "Schedule update in window w") in out.actions
    assert condition(out, "Reconciling") == "True" and condition(out, "Stalled") == "False"


@pytest.mark.parametrize(
    ("seen_system", "now", "why"),
    [
        (None, NOW, "ManagedSystem app no longer exists"),
        ({"metadata": {"name": "app"}, "spec": {"customer": "acme"}}, NOW, "cannot be used"),
        (system(serviceModel="IaaS"), NOW, "no longer eligible"),
        (system(), NOW + timedelta(hours=2), "cutoff passed"),
    ],
)
def test_pending_fails_without_touching_anything(
    seen_system: dict[str, Any] | None, now: datetime, why: str
) -> None:
    out = step(status(None), now=now, system=seen_system)
    assert out.status.phase == Phase.FAILED and out.wait == Wait.DONE
    assert why in (out.status.message or "")
    assert kinds(out) == ["RunEnded", "Emit"], "nothing created, nothing changed"
    assert condition(out, "Stalled") == "True" and condition(out, "Ready") == "False"
    assert condition(out, "NeedsAttention") is None, "nothing changed: no person needed"


def pod(name: str, claim: str, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]},
    }


def test_a_claim_mounted_by_a_pod_outside_the_workload_stops_the_run_before_any_step() -> None:
    """A shared claim (an RWX volume a backup pod or a second app mounts) cannot be deleted
    and recreated while that pod uses it: found before anything is done, not halfway
    through a rollback."""
    with_claim = workload()
    with_claim["spec"]["template"]["spec"]["volumes"] = [
        {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}
    ]
    pods = (
        pod("app-1", "data", app="app"),  # the workload's own
        pod("run-update-x", "data", **{"patchwarden.io/run": "run"}),  # an update Job's
        pod("unrelated", "other"),
        pod("backup-7", "data", app="backup"),
    )
    out = step(status(None), workload=with_claim, namespace_pods=pods, namespace_claims=("data",))
    assert out.status.phase == Phase.FAILED
    assert out.status.message == (
        "claim data is also used by pod backup-7, outside Deployment app: a rollback could "
        "not replace it safely (shared claims cannot be restored while another pod mounts "
        "them); nothing was changed"
    )
    assert kinds(out) == ["RunEnded", "Emit"] and condition(out, "NeedsAttention") is None
    alone = step(
        status(None), workload=with_claim, namespace_pods=pods[:3], namespace_claims=("data",)
    )
    assert alone.status.phase == Phase.SNAPSHOTTING
    # A selector of matchExpressions only: the workload's pods are known by their owner.
    by_expression = workload()
    by_expression["spec"]["selector"] = {
        "matchExpressions": [{"key": "app", "operator": "In", "values": ["app"]}]
    }
    owned = pod("app-5d8f-x", "data", app="app")
    owned["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "app-5d8f"}]
    sibling = pod("app-backup-77f9-y", "data", app="app-backup")
    sibling["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "app-backup-77f9"}]
    assert m.foreign_users(["data"], by_expression, [owned, sibling, pods[3]]) == [
        ("data", "app-backup-77f9-y"),
        ("data", "backup-7"),
    ]


# ---- Snapshotting ------------------------------------------------------------------------
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
    assert first.status.stopped_replicas == 3 and not first.status.snapshots
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
    assert started.status.claims == ["data"] and started.status.start_replicas == 1
    assert m.claims_to_read(started.status) == ["data"]
    # A run an older operator started (no claims recorded) decides them from the namespace's.
    from patchwarden.api.system import ManagedSystemSpec

    spec = ManagedSystemSpec.model_validate(system()["spec"])
    st = status(Phase.SNAPSHOTTING)
    assert m.claims_to_read(st, None, mounted, ("data",)) == []
    assert m.claims_to_read(st, spec, mounted, ("data",)) == ["data"]
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


# ---- Recording and Updating --------------------------------------------------------------
def test_recording_keeps_the_template_and_replicas() -> None:
    out = step(status(Phase.RECORDING), workload=workload(replicas=3))
    assert out.status.phase == Phase.UPDATING
    assert out.status.recorded is not None and out.status.recorded.replicas == 3
    assert out.status.recorded.template["spec"]["containers"][0]["image"] == "v2"
    assert step(status(Phase.RECORDING)).status.phase == Phase.FAILED, "no workload"


def test_the_job_is_created_once_with_a_deadline_inside_the_window() -> None:
    out = step(status(Phase.UPDATING, recorded=RECORDED))
    (create,) = out.actions
    assert isinstance(create, m.CreateJob) and out.wait == Wait.WATCHED
    assert create.body["metadata"]["name"] == "run-update"
    # The run timeout is 4h, the window ends in 2h, 15 minutes of which are kept for a
    # rollback (rollback.reserve's default): the window wins.
    assert create.body["spec"]["activeDeadlineSeconds"] == 7200 - 900
    reserve = step(
        status(Phase.UPDATING, recorded=RECORDED), system=system(rollback={"reserve": "1h"})
    )
    (create,) = reserve.actions
    assert isinstance(create, m.CreateJob)
    assert create.body["spec"]["activeDeadlineSeconds"] == 3600
    off = step(
        status(Phase.UPDATING, recorded=RECORDED),
        system=system(rollback={"enabled": False, "reserve": "1h"}),
    )
    (create,) = off.actions
    assert isinstance(create, m.CreateJob)
    assert create.body["spec"]["activeDeadlineSeconds"] == 7200, "no rollback: nothing reserved"
    assert out.status.job is not None and out.status.job.created
    again = step(out.status, job={"status": {}})
    assert again.actions == [] and again.wait == Wait.WATCHED, "running: wait, create nothing"


def test_a_job_that_completes_moves_on_to_verifying() -> None:
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    st = status(Phase.UPDATING, recorded=RECORDED, job={"name": "run-update", "created": True})
    out = step(st, job=done)
    assert out.status.phase == Phase.VERIFYING and out.status.job is not None
    assert out.status.job.result == "Complete"


def test_a_failed_job_records_how_it_ended_and_rolls_back() -> None:
    failed = {
        "status": {
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
        }
    }
    pod = {
        "metadata": {"name": "p"},
        "status": {
            "containerStatuses": [
                {"name": "u", "state": {"terminated": {"exitCode": 3, "message": "E: no"}}}
            ]
        },
    }
    assert m.job_ended(failed) and not m.job_ended({"status": {}})
    st = status(Phase.UPDATING, recorded=RECORDED, job={"name": "run-update", "created": True})
    out = step(st, job=failed, job_pods=(pod,))
    assert out.status.phase == Phase.ROLLING_BACK
    assert out.status.job is not None
    assert out.status.job.termination == "container u exited with code 3 (Error):\nE: no"
    assert out.status.failure == (
        "the update Job run-update failed: BackoffLimitExceeded; "
        "container u exited with code 3 (Error):"
    )
    assert out.status.restore is not None
    assert out.status.restore.step == RollbackStep.SCALE_DOWN
    assert out.status.restore.start_time == STAMP
    assert m.Emit("Warning", "UpdateFailed", f"{out.status.failure}; rolling back") in out.actions


def test_a_deleted_job_and_a_closed_window_fail_the_update() -> None:
    st = status(Phase.UPDATING, recorded=RECORDED, job={"name": "run-update", "created": True})
    assert "was deleted before it finished" in (step(st).status.failure or "")


@pytest.mark.parametrize("now", [NOW + timedelta(minutes=110), NOW + timedelta(hours=3)])
def test_a_job_not_started_before_the_rollback_reserve_fails_without_rolling_back(
    now: datetime,
) -> None:
    """Within rollback.reserve of the window's end (or after it) no Job is started: the
    workload is unchanged, so the run ends Failed without a rollback or a person's attention."""
    late = step(status(Phase.UPDATING, recorded=RECORDED), now=now)
    assert late.status.phase == Phase.FAILED
    assert not any(isinstance(a, m.CreateJob) for a in late.actions)
    assert late.status.message == (
        "the window ends within rollback.reserve (15m); the update was not started and "
        "nothing was changed"
    )
    assert condition(late, "NeedsAttention") is None


def test_without_rollback_a_failed_update_ends_failed_and_asks_for_a_person() -> None:
    st = status(Phase.UPDATING, recorded=RECORDED, job={"name": "run-update", "created": True})
    out = step(st, system=system(rollback={"enabled": False}))
    assert out.status.phase == Phase.FAILED
    assert condition(out, "NeedsAttention") == "True"


# ---- Verifying ----------------------------------------------------------------------------
def test_a_ready_workload_succeeds_and_prunes_old_snapshots() -> None:
    out = step(status(Phase.VERIFYING, since=EARLIER), workload=workload())
    assert out.status.phase == Phase.SUCCEEDED and out.wait == Wait.DONE
    assert out.status.completion_time == STAMP
    assert condition(out, "Ready") == "True" and condition(out, "Reconciling") == "False"
    assert m.PruneSnapshots("app", 3, "2027-02-03T12:00:00Z") in out.actions, "7 days kept"
    assert m.RunEnded("SaaS", "") in out.actions
    assert m.PhaseEnded(Phase.VERIFYING, 3600.0) in out.actions


def test_a_workload_not_ready_is_polled_then_rolled_back_after_the_verify_timeout() -> None:
    st = status(Phase.VERIFYING, recorded=RECORDED)
    assert step(st, workload=workload(ready=False)).wait == Wait.POLL
    late = step(st, now=NOW + timedelta(minutes=11), workload=workload(ready=False))
    assert late.status.phase == Phase.ROLLING_BACK
    assert late.status.failure == "Deployment app not ready within 10m after the update"


# ---- RollingBack ---------------------------------------------------------------------------
def rolling(step_: RollbackStep, since: str = STAMP, **fields: Any) -> UpdateRunStatus:
    return status(
        Phase.ROLLING_BACK,
        since=since,
        recorded=RECORDED,
        snapshots=[SNAP],
        failure="the update Job run-update failed",
        restore={"step": step_.value, **fields},
    )


def test_scale_down_waits_for_the_workloads_pods_then_deletes_the_jobs_pods() -> None:
    out = step(rolling(RollbackStep.SCALE_DOWN), workload=workload(), workload_pods=2)
    assert out.actions == [m.ScaleToZero("Deployment", "app")] and out.wait == Wait.POLL
    pods = (
        {"metadata": {"name": "job-a"}},
        {"metadata": {"name": "job-b", "deletionTimestamp": STAMP}},
    )
    out = step(rolling(RollbackStep.SCALE_DOWN), workload=workload(replicas=0), job_pods=pods)
    assert out.actions == [m.DeletePod("job-a")], "a pod already terminating is left alone"
    out = step(rolling(RollbackStep.SCALE_DOWN), workload=workload(replicas=0))
    assert out.status.restore is not None
    assert out.status.restore.step == RollbackStep.RESTORE_CLAIMS and out.wait == Wait.NOW


def test_pods_that_never_go_fail_the_rollback_and_ask_for_a_person() -> None:
    st = rolling(RollbackStep.SCALE_DOWN, since=EARLIER)
    out = step(st, workload=workload(replicas=0), workload_pods=1)
    assert out.status.phase == Phase.FAILED
    assert out.status.message == (
        "the rollback failed: pods of Deployment app still present 900s after scaling to zero"
    )
    assert condition(out, "NeedsAttention") == "True"


FAILED_STATE = {"claim": "data", "snapshot": "run-data-failed", "created": True}


def test_a_claim_is_kept_as_the_update_left_it_then_recreated_from_its_backup() -> None:
    st = rolling(RollbackStep.RESTORE_CLAIMS, since=EARLIER)
    seen = {"workload": workload(replicas=0), "snapshots": {"run-data": {}}}
    # First the failed-state snapshot of the claim; the claim stays.
    out = step(st, claims={"data": CLAIM}, snapshot_class="std", **seen)
    (create,) = out.actions
    assert isinstance(create, m.CreateSnapshot) and out.wait == Wait.WATCHED
    assert create.body["metadata"]["name"] == "run-data-failed"
    assert create.body["metadata"]["labels"]["patchwarden.io/state"] == "failed"
    assert create.body["spec"] == {
        "source": {"persistentVolumeClaimName": "data"},
        "volumeSnapshotClassName": "std",
    }
    assert out.status.restore is not None
    assert [r.snapshot for r in out.status.restore.failed_state] == ["run-data-failed"]
    assert out.status.phase_start_time == STAMP, "its deadline starts now"
    # Not ready yet: wait, delete nothing.
    waiting = step(
        out.status,
        claims={"data": CLAIM},
        snapshot_class="std",
        workload=workload(replicas=0),
        snapshots={"run-data": {}, "run-data-failed": {"status": {}}},
    )
    assert waiting.actions == [] and waiting.wait == Wait.WATCHED
    # Ready: now the claim may go.
    ready = {"run-data": {}, "run-data-failed": {"status": {"readyToUse": True}}}
    out = step(
        out.status,
        claims={"data": CLAIM},
        workload=workload(replicas=0),
        snapshots=ready,
    )
    assert out.actions == [m.DeleteClaim("data")] and out.wait == Wait.POLL
    assert out.status.restore is not None and out.status.restore.failed_state[0].ready_to_use
    terminating = {**CLAIM, "metadata": {"name": "data", "deletionTimestamp": STAMP}}
    assert step(out.status, claims={"data": terminating}, **seen).actions == []
    out = step(out.status, claims={"data": None}, **seen)
    (restore,) = out.actions
    assert isinstance(restore, m.CreateClaim)
    assert restore.body["spec"]["dataSource"]["name"] == "run-data"
    assert out.status.restore is not None and out.status.restore.claims == ["data"]
    assert out.status.restore.step == RollbackStep.RESTORE_WORKLOAD


@pytest.mark.parametrize(
    ("failed_state", "seen", "why"),
    [
        ([], {}, "no VolumeSnapshotClass to keep claim data as the failed update left it"),
        (
            [FAILED_STATE],
            {"snapshots": {"run-data": {}, "run-data-failed": None}},
            "VolumeSnapshot run-data-failed of claim data as the failed update left it disappeared",
        ),
        (
            [FAILED_STATE],
            {"snapshots": {"run-data": {}, "run-data-failed": {"status": {}}}},
            "VolumeSnapshot run-data-failed of claim data as the failed update left it "
            "not ready within 900s",
        ),
    ],
)
def test_a_claim_whose_failed_state_cannot_be_kept_is_never_deleted(
    failed_state: list[dict[str, Any]], seen: dict[str, Any], why: str
) -> None:
    st = rolling(RollbackStep.RESTORE_CLAIMS, since=EARLIER, failedState=failed_state)
    seen.setdefault("snapshots", {"run-data": {}})
    out = step(st, workload=workload(replicas=0), claims={"data": CLAIM}, **seen)
    assert out.status.phase == Phase.FAILED
    assert out.status.message == f"the rollback failed: {why}; the claim was not deleted"
    assert condition(out, "NeedsAttention") == "True"
    assert not any(isinstance(a, m.DeleteClaim) for a in out.actions)


def test_a_claim_already_restored_is_not_touched_again() -> None:
    restored = {"metadata": {"name": "data"}, "spec": {"dataSource": {"name": "run-data"}}}
    out = step(
        rolling(RollbackStep.RESTORE_CLAIMS),
        workload=workload(replicas=0),
        snapshots={"run-data": {}},
        claims={"data": restored},
    )
    assert out.actions == [] and out.status.restore is not None
    assert out.status.restore.claims == ["data"]


@pytest.mark.parametrize(
    ("seen", "why"),
    [
        ({"snapshots": {"run-data": None}}, "VolumeSnapshot run-data is gone"),
        (
            {
                "snapshots": {"run-data": {}},
                "claims": {"data": {**CLAIM, "metadata": {"deletionTimestamp": EARLIER}}},
            },
            "claim data still terminating after 900s",
        ),
    ],
)
def test_a_claim_that_cannot_be_restored_fails_the_rollback(seen: dict[str, Any], why: str) -> None:
    st = rolling(RollbackStep.RESTORE_CLAIMS, since=EARLIER)
    out = step(st, workload=workload(replicas=0), **seen)
    assert out.status.phase == Phase.FAILED and why in (out.status.message or "")
    assert condition(out, "NeedsAttention") == "True"


def test_a_run_recorded_without_the_whole_spec_restores_template_and_replicas() -> None:
    current = workload(replicas=0, image="v2-broken")
    out = step(rolling(RollbackStep.RESTORE_WORKLOAD), workload=current)
    (replace,) = out.actions
    assert isinstance(replace, m.ReplaceWorkload)
    assert replace.body["spec"]["template"] == RECORDED["template"]
    assert replace.body["spec"]["replicas"] == 2
    assert replace.body["metadata"]["resourceVersion"] == "7", "a concurrent write conflicts"
    assert "status" not in replace.body
    assert out.status.restore is not None and out.status.restore.step == RollbackStep.VERIFY


def test_recording_keeps_the_whole_spec_labels_and_annotations() -> None:
    current = workload(replicas=3)
    current["metadata"]["labels"] = {"tier": "db"}
    current["metadata"]["annotations"] = {
        "owner": "team-a",
        "deployment.kubernetes.io/revision": "4",
    }
    current["spec"]["minReadySeconds"] = 5
    out = step(status(Phase.RECORDING), workload=current)
    recorded = out.status.recorded
    assert recorded is not None and recorded.spec == current["spec"]
    assert recorded.labels == {"tier": "db"}
    assert recorded.annotations == {"owner": "team-a"}, "the controller's own is not ours"


def test_the_rollback_restores_the_whole_spec_labels_and_annotations() -> None:
    before = workload(replicas=2, image="v1")
    before["spec"]["minReadySeconds"] = 5
    before["spec"]["strategy"] = {"type": "Recreate"}
    recorded = {
        **RECORDED,
        "spec": before["spec"],
        "labels": {"tier": "db"},
        "annotations": {"owner": "team-a"},
    }
    # What the update changed: image, env, strategy, minReadySeconds, a label, replicas.
    after = workload(replicas=0, image="v2-broken")
    after["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "X", "value": "1"}]
    after["spec"]["strategy"] = {"type": "RollingUpdate"}
    after["metadata"]["labels"] = {"tier": "db", "updated": "yes"}
    after["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "5"}
    st = status(Phase.ROLLING_BACK, recorded=recorded, restore={"step": "RestoreWorkload"})
    (replace,) = step(st, workload=after).actions
    assert isinstance(replace, m.ReplaceWorkload)
    assert replace.body["spec"] == before["spec"]
    assert replace.body["metadata"]["labels"] == {"tier": "db"}
    assert replace.body["metadata"]["annotations"] == {
        "owner": "team-a",
        "deployment.kubernetes.io/revision": "5",
    }
    assert replace.body["metadata"]["resourceVersion"] == "7"


def test_a_ready_restored_workload_ends_rolled_back() -> None:
    out = step(
        rolling(RollbackStep.VERIFY, claims=["data"], startTime=EARLIER),
        workload=workload(replicas=2),
    )
    assert out.status.phase == Phase.ROLLED_BACK and out.status.restore is not None
    assert out.status.restore.completed
    assert out.status.message == (
        "the update Job run-update failed; restored 1 claims and the workload in 3600s"
    )
    assert condition(out, "Ready") == "False" and condition(out, "Stalled") == "False"
    late = step(
        rolling(RollbackStep.VERIFY, since=EARLIER), workload=workload(replicas=2, ready=False)
    )
    assert late.status.phase == Phase.FAILED and "not ready 900s after the restore" in (
        late.status.message or ""
    )


def test_a_rollback_without_snapshots_says_it_restored_the_spec_only() -> None:
    st = status(
        Phase.ROLLING_BACK,
        recorded=RECORDED,
        failure="the update Job run-update failed",
        backupSkipped="no VolumeSnapshotClass and backup.required is false",
        restore={"step": "Verify"},
    )
    out = step(st, workload=workload(replicas=2))
    assert out.status.phase == Phase.ROLLED_BACK
    message = (
        "the update Job run-update failed; restored the workload's spec only, not its data "
        "(no VolumeSnapshotClass and backup.required is false)"
    )
    assert out.status.message == message
    assert m.Emit("Warning", "RolledBack", message) in out.actions, "the Event says so too"


def test_a_workload_that_disappears_fails_the_rollback() -> None:
    out = step(rolling(RollbackStep.RESTORE_WORKLOAD))
    assert out.status.phase == Phase.FAILED
    assert (
        out.status.message == "the rollback failed: Deployment app disappeared during the rollback"
    )


# ---- ended, reads, helpers -------------------------------------------------------------------
@pytest.mark.parametrize("phase", [Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED])
def test_an_ended_run_does_nothing(phase: Phase) -> None:
    out = step(status(phase))
    assert out.actions == [] and out.wait == Wait.DONE and out.status == status(phase)


@pytest.mark.parametrize(
    ("st", "wanted"),
    [
        (status(None), {Read.WORKLOAD, Read.NAMESPACE_PODS, Read.NAMESPACE_CLAIMS}),
        (
            status(Phase.SNAPSHOTTING, claims=["data"]),
            {Read.WORKLOAD, Read.CLAIMS, Read.SNAPSHOT_CLASS},
        ),
        (status(Phase.SNAPSHOTTING, snapshots=[SNAP]), {Read.SNAPSHOTS, Read.SNAPSHOT_CLASS}),
        (status(Phase.UPDATING), {Read.JOB}),
        (rolling(RollbackStep.SCALE_DOWN), {Read.WORKLOAD, Read.WORKLOAD_PODS, Read.JOB_PODS}),
        (
            rolling(RollbackStep.RESTORE_CLAIMS),
            {Read.WORKLOAD, Read.SNAPSHOTS, Read.CLAIMS, Read.SNAPSHOT_CLASS},
        ),
        (rolling(RollbackStep.VERIFY), {Read.WORKLOAD}),
    ],
)
def test_each_step_reads_only_what_it_needs(st: UpdateRunStatus, wanted: set[Read]) -> None:
    assert m.reads(st) == wanted


# ---- a run or its system deleted mid-run ---------------------------------------------------
def deleting_system() -> dict[str, Any]:
    body = system()
    body["metadata"]["deletionTimestamp"] = STAMP
    return body


DELETED_RUN = m.Run.of(
    {
        "metadata": {
            "namespace": "ns",
            "name": "run",
            "uid": "u1",
            "generation": 1,
            "deletionTimestamp": STAMP,
        },
        "spec": RUN_SPEC,
    }
)


@pytest.mark.parametrize(
    "st",
    [
        status(None),
        status(Phase.SNAPSHOTTING, snapshots=[{**SNAP, "readyToUse": False}]),
        status(Phase.RECORDING, snapshots=[SNAP]),
        status(Phase.UPDATING, recorded=RECORDED),  # its Job not created yet
    ],
    ids=["Pending", "Snapshotting", "Recording", "Updating before its Job"],
)
def test_a_run_whose_system_is_deleted_before_the_update_is_cancelled(
    st: UpdateRunStatus,
) -> None:
    out = step(st, system=deleting_system())
    assert out.status.phase == Phase.CANCELLED and out.wait == Wait.DONE
    assert out.status.message == (
        "ManagedSystem app is being deleted; stopped before the update, the workload was "
        "not changed"
    )
    assert not any(
        isinstance(a, (m.CreateJob, m.CreateSnapshot, m.ScaleToZero)) for a in out.actions
    )
    if st.phase == Phase.UPDATING:  # a Job its last step may have made is stopped
        assert m.StopJob("run-update") in out.actions
    assert condition(out, "NeedsAttention") is None and condition(out, "Stalled") == "False"
    assert (
        m.Emit(
            "Normal",
            "Cancelled",
            "ManagedSystem app is being deleted; the run stopped before changing anything",
        )
        in out.actions
    )


def test_a_deleted_run_mid_update_stops_its_job_and_rolls_back() -> None:
    st = status(Phase.UPDATING, recorded=RECORDED, job={"name": "run-update", "created": True})
    out = m.advance(DELETED_RUN, st, Observed(system=system(), job={"status": {}}), NOW, TIMEOUTS)
    assert out.status.phase == Phase.ROLLING_BACK
    assert out.actions[0] == m.StopJob("run-update"), "the Job is stopped before the rollback"
    assert out.status.failure == "the UpdateRun run is being deleted"
    # The rollback itself goes on while the deletion waits for it.
    again = m.advance(
        DELETED_RUN,
        out.status,
        Observed(system=system(), workload=workload(replicas=0)),
        NOW,
        TIMEOUTS,
    )
    assert again.status.phase == Phase.ROLLING_BACK
    assert again.status.restore is not None
    assert again.status.restore.step == RollbackStep.RESTORE_CLAIMS


def test_a_system_deleted_while_verifying_rolls_back_and_without_rollback_asks_for_a_person() -> (
    None
):
    st = status(
        Phase.VERIFYING,
        recorded=RECORDED,
        job={"name": "run-update", "created": True, "result": "Complete"},
    )
    out = step(st, system=deleting_system(), workload=workload())
    assert out.status.phase == Phase.ROLLING_BACK
    assert not any(isinstance(a, m.StopJob) for a in out.actions), "the Job has ended"
    body = deleting_system()
    body["spec"]["rollback"] = {"enabled": False}
    off = step(st, system=body, workload=workload())
    assert off.status.phase == Phase.FAILED and condition(off, "NeedsAttention") == "True"


# ---- targets: images the operator sets itself ------------------------------------------
TARGET = {
    "component": "postgres",
    "container": "a",
    "from": "16.3",
    "to": "16.4",
    "fromImage": "pg:16.3",
    "image": "pg:16.4",
    "classes": ["security"],
    "advisories": ["CVE-2024-10979"],
}
IMAGE_RUN = m.Run.of(
    {
        "metadata": {"namespace": "ns", "name": "run", "uid": "u1", "generation": 1},
        "spec": {**RUN_SPEC, "targets": [TARGET]},
    }
)


def image_step(st: UpdateRunStatus, **seen: Any) -> m.Transition:
    seen.setdefault("system", system())
    now = seen.pop("now", NOW)
    return m.advance(IMAGE_RUN, st, Observed(**seen), now, TIMEOUTS)


def test_targets_are_set_as_images_then_the_rollout_is_awaited_before_the_job() -> None:
    out = image_step(status(Phase.UPDATING, recorded=RECORDED))
    assert out.actions == [m.SetImages("Deployment", "app", {"a": "pg:16.4"})]
    assert out.status.images_set and out.wait == Wait.POLL
    (change,) = out.status.changes
    assert (change.from_version, change.to_version, change.to_image) == ("16.3", "16.4", "pg:16.4")
    assert change.advisories == ["CVE-2024-10979"] and change.source == "catalog"
    assert out.status.summary == "postgres 16.3→16.4"
    assert m.reads(out.status) == frozenset({Read.WORKLOAD})
    rolling = image_step(out.status, workload=workload(ready=False))
    assert rolling.actions == [] and rolling.wait == Wait.POLL
    rolled = image_step(out.status, workload=workload())
    (create,) = rolled.actions
    assert isinstance(create, m.CreateJob)
    env = {
        e["name"]: e["value"]
        for e in create.body["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert '"to": "16.4"' in env["PATCHWARDEN_TARGETS"]
    late = image_step(out.status, workload=workload(ready=False), now=NOW + timedelta(minutes=11))
    assert late.status.phase == Phase.ROLLING_BACK
    assert "rollout of Deployment app with the new images did not complete" in (
        late.status.failure or ""
    )


def test_without_a_job_template_the_run_verifies_once_the_images_are_set() -> None:
    bare = system(updates={"verifyTimeout": "10m"})
    out = image_step(status(Phase.UPDATING, recorded=RECORDED), system=bare)
    done = image_step(out.status, system=bare, workload=workload())
    assert done.status.phase == Phase.VERIFYING and kinds(done) == ["PhaseEnded"]
    assert done.status.job is None


def test_a_successful_job_adds_the_changes_of_its_termination_message() -> None:
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    report = '{"changes": [{"component": "openssl", "from": "3.0.14-1", "to": "3.0.15-1"}]}'

    def pod(message: str) -> dict[str, Any]:
        terminated = {"exitCode": 0, "message": message}
        return {
            "metadata": {"name": "p"},
            "status": {"containerStatuses": [{"name": "u", "state": {"terminated": terminated}}]},
        }

    st = status(Phase.UPDATING, recorded=RECORDED, job={"name": "run-update", "created": True})
    out = step(st, job=done, job_pods=(pod(report),))
    assert out.status.phase == Phase.VERIFYING
    assert [(c.component, c.to_version, c.source) for c in out.status.changes] == [
        ("openssl", "3.0.15-1", "job")
    ]
    assert out.status.summary == "openssl 3.0.14-1→3.0.15-1"
    bad = step(st, job=done, job_pods=(pod('{"changes": [{"from": 1}]}'),))
    assert bad.status.phase == Phase.VERIFYING and not bad.status.changes
    assert "is not the documented changes JSON" in (bad.status.message or "")
    plain = step(st, job=done, job_pods=(pod("all done"),))
    assert plain.status.changes == [] and "JSON" not in (plain.status.message or "")


def test_a_run_stopped_after_its_images_were_set_rolls_back_instead_of_cancelling() -> None:
    st = image_step(status(Phase.UPDATING, recorded=RECORDED)).status
    deleting = m.Run.of(
        {
            "metadata": {
                "namespace": "ns",
                "name": "run",
                "uid": "u1",
                "generation": 1,
                "deletionTimestamp": STAMP,
            },
            "spec": {**RUN_SPEC, "targets": [TARGET]},
        }
    )
    out = m.advance(deleting, st, Observed(system=system(), workload=workload()), NOW, TIMEOUTS)
    assert out.status.phase == Phase.ROLLING_BACK, out.status.message


def test_a_job_too_late_after_the_images_were_set_rolls_the_images_back() -> None:
    st = image_step(status(Phase.UPDATING, recorded=RECORDED)).status
    late = image_step(st, workload=workload(), now=NOW + timedelta(hours=1, minutes=50))
    assert late.status.phase == Phase.ROLLING_BACK
    assert "update Job was not started" in (late.status.failure or "")


def test_a_template_above_the_pod_security_floor_creates_no_pod() -> None:
    privileged = system(
        updates={
            "template": {
                "spec": {
                    "containers": [
                        {"name": "u", "image": "x", "securityContext": {"privileged": True}}
                    ]
                }
            }
        }
    )
    out = step(status(Phase.UPDATING, recorded=RECORDED), system=privileged)
    assert out.status.phase == Phase.FAILED, "nothing changed yet: no rollback"
    assert not any(isinstance(a, m.CreateJob) for a in out.actions)
    assert "spec.updates.template.spec.containers[0].securityContext.privileged" in (
        out.status.message or ""
    )
    assert "no pod was created" in (out.status.message or "")
    baseline = m.Timeouts(
        snapshot=timedelta(minutes=10),
        rollback=timedelta(minutes=15),
        pod_security=m.Level.BASELINE,
    )
    root = system(
        updates={
            "template": {
                "spec": {
                    "containers": [
                        {"name": "u", "image": "x", "securityContext": {"runAsNonRoot": False}}
                    ]
                }
            }
        }
    )
    assert step(status(Phase.UPDATING, recorded=RECORDED), system=root).status.phase == (
        Phase.FAILED
    ), "restricted: root refused"
    allowed = step(status(Phase.UPDATING, recorded=RECORDED), system=root, timeouts=baseline)
    assert any(isinstance(a, m.CreateJob) for a in allowed.actions), "baseline allows it"


# ---- the alert gate ----------------------------------------------------------------------
FIRING = Verdict(
    Decision.FIRING, True, 'alerts firing: NodeDown{node="n1"}', ("q",), ('NodeDown{node="n1"}',)
)
CLEAR = Verdict(Decision.CLEAR, False, "no alert fires ('q')", ("q",))


def test_a_run_not_started_waits_for_the_gate_and_records_why() -> None:
    out = step(status(None), gate=FIRING)
    assert out.status.phase is None and out.wait == Wait.POLL
    assert out.status.message == 'held back by the alert gate: alerts firing: NodeDown{node="n1"}'
    assert kinds(out) == ["Emit"] and out.actions[0].reason == "AlertGateClosed"  # type: ignore[union-attr]
    assert out.status.alert_gate is not None and out.status.alert_gate.stopped
    assert out.status.alert_gate.firing == ['NodeDown{node="n1"}']
    again = step(out.status, gate=FIRING)
    assert again.actions == [] and again.status == out.status, "unchanged answer: no write"
    cleared = step(out.status, gate=CLEAR)
    assert cleared.status.phase == Phase.SNAPSHOTTING
    assert cleared.status.alert_gate is not None
    assert cleared.status.alert_gate.decision == "AlertsClear", "the record says it cleared"
    assert not cleared.status.alert_gate.stopped


def test_a_held_run_ends_unchanged_at_the_cutoff() -> None:
    out = step(status(None), now=NOW + timedelta(hours=2), gate=FIRING)
    assert out.status.phase == Phase.FAILED and "while the alert gate held" in (
        out.status.message or ""
    )
    assert condition(out, "NeedsAttention") is None


def test_the_gate_cancels_a_run_that_changed_nothing_yet() -> None:
    out = step(status(Phase.RECORDING), gate=FIRING, workload=workload())
    assert out.status.phase == Phase.CANCELLED
    assert (out.status.message or "").startswith("the alert gate stopped the run: alerts firing")
    assert "the workload was not changed" in (out.status.message or "")


def test_the_gate_rolls_back_a_run_that_changed_the_workload() -> None:
    st = status(Phase.UPDATING, recorded=RECORDED, job={"name": "run-update", "created": True})
    out = step(st, gate=FIRING, job={"status": {}})
    assert out.status.phase == Phase.ROLLING_BACK
    assert "StopJob" in kinds(out), "the running Job is stopped first"
    assert (out.status.failure or "").startswith("the alert gate stopped the run")
    verifying = step(status(Phase.VERIFYING, recorded=RECORDED), gate=FIRING, workload=workload())
    assert verifying.status.phase == Phase.ROLLING_BACK


def test_a_rollback_is_never_asked_to_the_gate() -> None:
    assert not m.gated(status(Phase.ROLLING_BACK)) and not m.gated(status(Phase.SUCCEEDED))
    assert m.gated(status(None)) and m.gated(status(Phase.VERIFYING))


# ---- hooks -------------------------------------------------------------------------------
def hooked(
    pre: list[dict[str, Any]] | None = None, post: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    body = system()
    body["spec"]["updates"]["hooks"] = {"pre": pre or [], "post": post or []}
    return body


FLUSH = {"name": "flush", "exec": {"container": "a", "command": ["psql", "-c", "CHECKPOINT"]}}
SMOKE = {
    "name": "smoke",
    "job": {"template": {"spec": {"containers": [{"name": "t", "image": "curl"}]}}},
    "timeout": "2m",
}


def test_a_pre_hook_runs_before_the_snapshots_and_its_output_is_kept() -> None:
    st = status(Phase.SNAPSHOTTING)
    out = step(
        st,
        system=hooked(pre=[FLUSH]),
        workload=workload(),
        claims={"data": CLAIM},
        snapshot_class="csi",
        hook_result=m.HookResult("flush", True, "CHECKPOINT\n"),
    )
    (record,) = out.status.hooks
    assert (record.name, record.stage, record.state, record.output) == (
        "flush",
        "pre",
        "Succeeded",
        "CHECKPOINT\n",
    )
    assert not out.status.snapshots and out.wait == Wait.NOW, "the snapshots at the next step"
    assert m.hook_stage(out.status, m._spec_or_none(hooked(pre=[FLUSH])), workload()) is None
    again = step(
        out.status,
        system=hooked(pre=[FLUSH]),
        workload=workload(),
        claims={"data": CLAIM},
        snapshot_class="csi",
    )
    assert again.status.phase == Phase.RECORDING, "then the snapshots (none: no claims here)"
    assert len(again.status.hooks) == 1, "the hook is not run again"


def test_a_failed_pre_hook_ends_the_run_with_nothing_changed() -> None:
    out = step(
        status(Phase.SNAPSHOTTING),
        system=hooked(pre=[FLUSH]),
        workload=workload(),
        hook_result=m.HookResult(
            "flush", False, "ERROR: permission denied\nexited with code 1 in pod p"
        ),
    )
    assert out.status.phase == Phase.FAILED
    assert (
        out.status.message
        == "pre-update hook flush failed: exited with code 1 in pod p; nothing was changed"
    )
    assert condition(out, "NeedsAttention") is None and out.status.hooks[0].state == "Failed"


def test_a_post_hook_job_runs_once_the_workload_is_ready_and_a_failure_rolls_back() -> None:
    body = hooked(post=[SMOKE])
    st = status(Phase.VERIFYING, recorded=RECORDED)
    out = step(st, system=body, workload=workload())
    (create,) = [a for a in out.actions if isinstance(a, m.CreateJob)]
    assert create.body["metadata"]["name"] == "run-post-smoke"
    assert (
        create.body["spec"]["template"]["metadata"]["labels"]["patchwarden.io/hook"] == "post-smoke"
    )
    assert out.status.hooks[0].job == "run-post-smoke" and out.wait == Wait.WATCHED
    running = step(out.status, system=body, workload=workload(), hook_job={"status": {}})
    assert running.status.phase == Phase.VERIFYING and running.wait == Wait.WATCHED
    failed = {
        "status": {
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
        }
    }
    pod = {
        "metadata": {"name": "p"},
        "status": {
            "containerStatuses": [
                {
                    "name": "t",
                    "state": {"terminated": {"exitCode": 22, "message": "curl: (22) 503"}},
                }
            ]
        },
    }
    ended = step(
        running.status, system=body, workload=workload(), hook_job=failed, hook_pods=(pod,)
    )
    assert ended.status.phase == Phase.ROLLING_BACK
    assert ended.status.failure == "post-update hook smoke failed: curl: (22) 503"
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    ok = step(running.status, system=body, workload=workload(), hook_job=done)
    assert ok.status.hooks[0].state == "Succeeded" and ok.status.phase == Phase.VERIFYING
    assert step(ok.status, system=body, workload=workload()).status.phase == Phase.SUCCEEDED


def test_a_hook_job_that_does_not_end_in_time_is_stopped_and_fails() -> None:
    body = hooked(post=[SMOKE])
    out = step(status(Phase.VERIFYING, recorded=RECORDED), system=body, workload=workload())
    late = step(
        out.status,
        now=NOW + timedelta(minutes=3),
        system=body,
        workload=workload(),
        hook_job={"status": {}},
    )
    assert late.status.phase == Phase.ROLLING_BACK and "did not end within 2m" in (
        late.status.failure or ""
    )
    assert "StopJob" in kinds(late)


@pytest.mark.parametrize(
    ("event", "status", "wakes"),
    [
        ("ADDED", {}, False),  # the run just made it
        ("MODIFIED", {"readyToUse": False}, False),
        ("MODIFIED", {"readyToUse": True}, True),
        ("MODIFIED", {"readyToUse": False, "error": {"message": "no space"}}, True),
        ("ADDED", {"readyToUse": True}, True),  # listed again after a broken watch
        ("MODIFIED", {"active": 1, "ready": 1}, False),  # the Job's pod started
        ("MODIFIED", {"conditions": [{"type": "Complete", "status": "True"}]}, True),
        ("MODIFIED", {"conditions": [{"type": "Suspended", "status": "True"}]}, True),
        ("DELETED", {}, True),
    ],
)
def test_only_news_of_a_runs_snapshot_or_job_wakes_the_run(
    event: str, status: dict[str, Any], wakes: bool
) -> None:
    assert m.wakes_its_run(event, {"metadata": {"name": "x"}, "status": status}) is wakes


# ---- issue 31: the claims are decided at the start, and no update runs without them -------
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
    assert started.status.claims == sorted(SIX) and started.status.start_replicas == 3
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
    assert out.status.stopped_replicas == 3


def test_a_run_on_a_statefulset_without_its_claims_ends_before_changing_anything() -> None:
    db = system(workload={"kind": "StatefulSet", "name": "db"})
    out = step(status(None), system=db, workload=statefulset(0), namespace_claims=())
    assert out.status.phase == Phase.FAILED and kinds(out) == ["RunEnded", "Emit"]
    assert (out.status.message or "").startswith(
        "StatefulSet db has volumeClaimTemplates (data, wal) but none of their claims exists"
    )


def test_no_update_starts_while_a_claim_decided_at_the_start_has_no_ready_backup() -> None:
    """The guard: whatever went wrong between the start and the snapshots, Recording never
    goes on to Updating with a claim of the system uncovered."""
    st = status(
        Phase.RECORDING,
        claims=["data", "wal"],
        snapshots=[SNAP, {"claim": "wal", "snapshot": "run-wal", "created": True}],
    )
    out = step(st, workload=workload())
    assert out.status.phase == Phase.FAILED and out.status.recorded is None
    assert out.status.message == (
        "claim wal of the system had no ready pre-update snapshot; the update was not "
        "started and nothing was changed"
    )
    assert condition(out, "NeedsAttention") is None
    covered = status(Phase.RECORDING, claims=["data"], snapshots=[SNAP])
    assert step(covered, workload=workload()).status.phase == Phase.UPDATING
    skipped = status(Phase.RECORDING, claims=["data"], backupSkipped=m.BACKUP_SKIPPED)
    assert step(skipped, workload=workload()).status.phase == Phase.UPDATING, "by choice"


def test_every_failed_state_snapshot_is_asked_for_at_once() -> None:
    st = rolling(RollbackStep.RESTORE_CLAIMS, since=EARLIER)
    st.snapshots = [
        st.snapshots[0],
        st.snapshots[0].model_copy(update={"claim": "wal", "snapshot": "run-wal"}),
    ]
    out = step(
        st,
        workload=workload(replicas=0),
        snapshots={"run-data": {}, "run-wal": {}},
        claims={"data": CLAIM, "wal": {**CLAIM, "metadata": {"name": "wal"}}},
        snapshot_class="std",
    )
    names = [a.body["metadata"]["name"] for a in out.actions if isinstance(a, m.CreateSnapshot)]
    assert names == ["run-data-failed", "run-wal-failed"] and out.wait == Wait.WATCHED
    assert not any(isinstance(a, m.DeleteClaim) for a in out.actions)


@pytest.mark.parametrize(
    ("fields", "phase", "message"),
    [
        (
            {"claims": ["data", "wal"]},
            Phase.FAILED,
            "the update Job run-update failed; the rollback restored the workload and 1 of 2 "
            "claims in 3600s, not wal (no pre-update snapshot): they hold what the failed "
            "update wrote",
        ),
        (
            {"claims": [], "snapshots": []},
            Phase.ROLLED_BACK,
            "the update Job run-update failed; restored the workload (it has no claims) in 3600s",
        ),
    ],
)
def test_a_rollback_never_reads_as_success_when_it_restored_less_than_expected(
    fields: dict[str, Any], phase: Phase, message: str
) -> None:
    st = rolling(RollbackStep.VERIFY, claims=["data"], startTime=EARLIER)
    st = st.model_copy(
        update={k: v for k, v in fields.items() if k != "claims"} | {"claims": fields["claims"]}
    )
    out = step(st, workload=workload(replicas=2))
    assert out.status.phase == phase and out.status.message == message
    if phase == Phase.FAILED:
        assert condition(out, "NeedsAttention") == "True"
