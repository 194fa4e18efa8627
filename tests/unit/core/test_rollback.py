"""The rollback of a failed run (core/rollback.py), step by step."""

from __future__ import annotations

from typing import Any

import pytest

from patchwarden.api.run import Phase, RollbackStep
from patchwarden.core import run as m
from patchwarden.core.run import Wait
from tests.unit.runs import (
    CLAIM,
    EARLIER,
    FAILED_STATE,
    RECORDED,
    STAMP,
    condition,
    rolling,
    status,
    step,
    workload,
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
    claim = {**CLAIM, "metadata": {"name": "data", "uid": "c-1"}}
    out = step(out.status, claims={"data": claim}, workload=workload(replicas=0), snapshots=ready)
    assert out.actions == [m.DeleteClaim("data", "c-1")] and out.wait == Wait.POLL, (
        "only that claim: a late delete never removes the one restored in its place"
    )
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
    # Issue 34, section 4: what was written between the backup and the rollback is kept, and
    # the run says where and over which span.
    kept = rolling(
        RollbackStep.VERIFY,
        claims=["data"],
        startTime=EARLIER,
        failedState=[{**FAILED_STATE, "readyToUse": True}],
    )
    kept.start_time = "2027-02-10T10:30:00Z"
    said = step(kept, workload=workload(replicas=2)).status.message
    assert said == (
        "the update Job run-update failed; restored 1 claims and the workload in 3600s; what "
        f"was written to them from 2027-02-10T10:30:00Z to {EARLIER} (the update included) "
        "is kept in the failed-state snapshots run-data-failed"
    )
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
