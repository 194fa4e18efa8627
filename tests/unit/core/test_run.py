"""The run state machine (core/run.py), branch by branch, on an injected clock and no cluster."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from patchwarden.api.run import Phase, RollbackStep, UpdateRunStatus
from patchwarden.core import run as m
from patchwarden.core.gate import Decision, Verdict
from patchwarden.core.podsecurity import Level
from patchwarden.core.run import Observed, Read, Wait
from tests.unit.runs import (
    EARLIER,
    FAILED_JOB,
    NOW,
    RECORDED,
    RUN_SPEC,
    SNAP,
    STAMP,
    TIMEOUTS,
    condition,
    ended_pod,
    kinds,
    observed,
    rolling,
    status,
    step,
    system,
    the_workload,
    workload,
)


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
    assert out.status.phase == Phase.FAILED and out.wait == Wait.NOW  # then counted
    assert why in (out.status.message or "")
    assert kinds(out) == ["Emit"], "nothing created, nothing changed"
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
    assert kinds(out) == ["Emit"] and condition(out, "NeedsAttention") is None
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
    assert m.foreign_users(["data"], [by_expression], [owned, sibling, pods[3]]) == [
        ("data", "app-backup-77f9-y"),
        ("data", "backup-7"),
    ]


def test_recording_keeps_the_template_and_replicas() -> None:
    out = step(status(Phase.RECORDING), workload=workload(replicas=3))
    assert out.status.phase == Phase.UPDATING
    recorded = the_workload(out).recorded
    assert recorded is not None and recorded.replicas == 3
    assert recorded.template["spec"]["containers"][0]["image"] == "v2"
    assert step(status(Phase.RECORDING)).status.phase == Phase.FAILED, "no workload"


def test_the_job_is_created_once_with_a_deadline_inside_the_window() -> None:
    out = step(status(Phase.UPDATING, recorded=RECORDED))
    (create,) = out.actions
    assert isinstance(create, m.CreateJob) and out.wait == Wait.POLL, "looked at again soon"
    assert create.body["metadata"]["name"] == "run-update"
    running = step(out.status, job={"metadata": {"name": "run-update"}, "status": {}})
    assert running.actions == [] and running.wait == Wait.WATCHED, "then woken by its news"
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
    assert m.job_ended(FAILED_JOB) and not m.job_ended({"status": {}})
    st = status(Phase.UPDATING, recorded=RECORDED, job={"name": "run-update", "created": True})
    out = step(st, job=FAILED_JOB, job_pods=(ended_pod("u", 3, "E: no"),))
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


def test_a_ready_workload_succeeds_and_prunes_old_snapshots() -> None:
    out = step(status(Phase.VERIFYING, since=EARLIER), workload=workload())
    assert out.status.phase == Phase.SUCCEEDED and out.wait == Wait.NOW
    assert out.status.completion_time == STAMP
    assert condition(out, "Ready") == "True" and condition(out, "Reconciling") == "False"
    assert m.PruneSnapshots("app", 3, "2027-02-03T12:00:00Z") in out.actions, "7 days kept"
    assert m.PhaseEnded(Phase.VERIFYING, 3600.0) in out.actions
    # Counted in a step of its own, once the end is written: the crash matrix found an
    # end counted by nobody when the answer to that write was lost (issue 35, the
    # succeeds scenario, crash after the run's status write).
    assert out.status.counted is False and not any(isinstance(a, m.RunEnded) for a in out.actions)
    counted = step(out.status)
    assert counted.actions == [m.RunEnded("SaaS", "")] and counted.wait == Wait.DONE
    assert counted.status.counted is True


def test_a_run_ended_by_an_older_operator_is_not_counted_again() -> None:
    ended = status(Phase.ROLLED_BACK)
    assert ended.counted is None
    assert step(ended).actions == []


def test_a_workload_not_ready_is_polled_then_rolled_back_after_the_verify_timeout() -> None:
    st = status(Phase.VERIFYING, recorded=RECORDED)
    assert step(st, workload=workload(ready=False)).wait == Wait.POLL
    late = step(st, now=NOW + timedelta(minutes=11), workload=workload(ready=False))
    assert late.status.phase == Phase.ROLLING_BACK
    assert late.status.failure == "Deployment app not ready within 10m after the update"


def test_recording_keeps_the_whole_spec_labels_and_annotations() -> None:
    current = workload(replicas=3)
    current["metadata"]["labels"] = {"tier": "db"}
    current["metadata"]["annotations"] = {
        "owner": "team-a",
        "deployment.kubernetes.io/revision": "4",
    }
    current["spec"]["minReadySeconds"] = 5
    out = step(status(Phase.RECORDING), workload=current)
    recorded = the_workload(out).recorded
    assert recorded is not None and recorded.spec == current["spec"]
    assert recorded.labels == {"tier": "db"}
    assert recorded.annotations == {"owner": "team-a"}, "the controller's own is not ours"


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
    assert out.status.phase == Phase.CANCELLED and out.wait == Wait.NOW
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
        Observed(system=system(), workloads={"app": workload(replicas=0)}),
        NOW,
        TIMEOUTS,
    )
    assert again.status.phase == Phase.ROLLING_BACK
    assert again.status.restore is not None
    assert again.status.restore.step == RollbackStep.RESTORE_CLAIMS


@pytest.mark.parametrize("record", [None, {"name": "run-update"}], ids=["none", "not created"])
def test_a_run_stopped_with_a_job_its_record_does_not_know_rolls_back(
    record: dict[str, Any] | None,
) -> None:
    """The step that created the Job was cut short before its status write (crash matrix:
    the create landed, its answer lost): the Job may have run, so a stop rolls back."""
    st = status(Phase.UPDATING, recorded=RECORDED, job=record)
    out = m.advance(DELETED_RUN, st, Observed(system=system(), job={"status": {}}), NOW, TIMEOUTS)
    assert out.status.phase == Phase.ROLLING_BACK, out.status.message
    assert out.status.job is not None and out.status.job.created
    assert out.actions[0] == m.StopJob("run-update")
    never = m.advance(DELETED_RUN, st, Observed(system=system()), NOW, TIMEOUTS)
    assert never.status.phase == Phase.CANCELLED, "no Job exists: nothing was changed"


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
    now = seen.pop("now", NOW)
    return m.advance(IMAGE_RUN, st, observed(**seen), now, TIMEOUTS)


def test_targets_are_recorded_then_set_as_images_then_the_rollout_is_awaited_before_the_job() -> (
    None
):
    out = image_step(status(Phase.UPDATING, recorded=RECORDED))
    assert out.actions == [], "recorded before they are set: the record never says less"
    assert the_workload(out).images_set and out.wait == Wait.NOW
    (change,) = out.status.changes
    assert (change.from_version, change.to_version, change.to_image) == ("16.3", "16.4", "pg:16.4")
    assert change.advisories == ["CVE-2024-10979"] and change.source == "catalog"
    assert out.status.summary == "postgres 16.3→16.4"
    assert m.reads(out.status) == frozenset({Read.WORKLOAD})
    setting = image_step(out.status, workload=workload(image="v1"))
    assert setting.actions == [m.SetImages("Deployment", "app", {"a": "pg:16.4"}, "7")]
    assert setting.status == out.status and setting.wait == Wait.POLL, "no write: set, awaited"
    rolling = image_step(out.status, workload=workload(image="pg:16.4", ready=False))
    assert rolling.actions == [] and rolling.wait == Wait.POLL
    rolled = image_step(out.status, workload=workload(image="pg:16.4"))
    (create,) = rolled.actions
    assert isinstance(create, m.CreateJob)
    env = {
        e["name"]: e["value"]
        for e in create.body["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert '"to": "16.4"' in env["PATCHWARDEN_TARGETS"]
    late = image_step(
        out.status, workload=workload(image="pg:16.4", ready=False), now=NOW + timedelta(minutes=11)
    )
    assert late.status.phase == Phase.ROLLING_BACK
    assert "rollout of Deployment app with the new images did not complete" in (
        late.status.failure or ""
    )


def test_without_a_job_template_the_run_verifies_once_the_images_are_set() -> None:
    bare = system(updates={"verifyTimeout": "10m"})
    out = image_step(status(Phase.UPDATING, recorded=RECORDED), system=bare)
    done = image_step(out.status, system=bare, workload=workload(image="pg:16.4"))
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
    out = m.advance(
        deleting, st, Observed(system=system(), workloads={"app": workload()}), NOW, TIMEOUTS
    )
    assert out.status.phase == Phase.ROLLING_BACK, out.status.message


def test_a_job_too_late_after_the_images_were_set_rolls_the_images_back() -> None:
    st = image_step(status(Phase.UPDATING, recorded=RECORDED)).status
    late = image_step(
        st, workload=workload(image="pg:16.4"), now=NOW + timedelta(hours=1, minutes=50)
    )
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
        pod_security=Level.BASELINE,
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


def test_no_update_starts_while_a_claim_decided_at_the_start_has_no_ready_backup() -> None:
    """The guard: whatever went wrong between the start and the snapshots, Recording never
    goes on to Updating with a claim of the system uncovered."""
    st = status(
        Phase.RECORDING,
        claims=["data", "wal"],
        snapshots=[SNAP, {"claim": "wal", "snapshot": "run-wal", "created": True}],
    )
    out = step(st, workload=workload())
    assert out.status.phase == Phase.FAILED and the_workload(out).recorded is None
    assert out.status.message == (
        "claim wal of the system had no ready pre-update snapshot; the update was not "
        "started and nothing was changed"
    )
    assert condition(out, "NeedsAttention") is None
    covered = status(Phase.RECORDING, claims=["data"], snapshots=[SNAP])
    assert step(covered, workload=workload()).status.phase == Phase.UPDATING
    skipped = status(Phase.RECORDING, claims=["data"], backupSkipped=m.BACKUP_SKIPPED)
    assert step(skipped, workload=workload()).status.phase == Phase.UPDATING, "by choice"


def baking_system() -> dict[str, Any]:
    body = system()
    body["spec"]["updates"]["bakeTime"] = "2m"
    return body


def test_a_ready_workload_bakes_before_it_succeeds() -> None:
    """Issue 34, section 3: verification no longer ends the moment pods are ready."""
    ready = step(
        status(Phase.VERIFYING, recorded=RECORDED), workload=workload(), system=baking_system()
    )
    assert ready.status.phase == Phase.BAKING
    bake = ready.status.bake
    assert bake is not None and (bake.start_time, bake.until) == (STAMP, "2027-02-10T12:02:00Z")
    first = step(ready.status, workload=workload(), system=baking_system(), workload_restarts=4)
    assert first.status.phase == Phase.BAKING and first.wait == Wait.POLL
    assert first.status.bake is not None and first.status.bake.restarts == 4, "counted from here"
    done = step(
        first.status,
        now=NOW + timedelta(minutes=2),
        workload=workload(),
        system=baking_system(),
        workload_restarts=4,
    )
    assert done.status.phase == Phase.SUCCEEDED
    assert done.status.bake is not None and done.status.bake.result == "Passed"
    assert m.PhaseEnded(Phase.BAKING, 120.0) in done.actions, "the bake's own duration"


@pytest.mark.parametrize(
    ("seen", "why"),
    [
        ({"workload": workload(), "workload_restarts": 5}, "containers restarted 1 times"),
        ({"workload": workload(ready=False)}, "lost its readiness during the bake"),
    ],
)
def test_a_restart_or_lost_readiness_during_the_bake_rolls_back(
    seen: dict[str, Any], why: str
) -> None:
    ready = step(
        status(Phase.VERIFYING, recorded=RECORDED), workload=workload(), system=baking_system()
    )
    first = step(ready.status, workload=workload(), system=baking_system(), workload_restarts=4)
    out = step(first.status, now=NOW + timedelta(seconds=30), system=baking_system(), **seen)
    assert out.status.phase == Phase.ROLLING_BACK
    assert out.status.bake is not None and out.status.bake.result == "Failed"
    assert why in (out.status.bake.reason or "") and why in (out.status.failure or "")


def test_the_alert_gate_firing_during_the_bake_rolls_back_and_is_recorded() -> None:
    ready = step(
        status(Phase.VERIFYING, recorded=RECORDED), workload=workload(), system=baking_system()
    )
    firing = Verdict(Decision.FIRING, True, "alerts firing: HighErrorRate{}", ("q",))
    out = step(ready.status, workload=workload(), system=baking_system(), gate=firing)
    assert out.status.phase == Phase.ROLLING_BACK
    assert out.status.bake is not None and out.status.bake.result == "Failed"
    assert "the alert gate stopped the run" in (out.status.bake.reason or "")


def test_restore_data_never_rolls_back_the_spec_only_without_touching_the_claims() -> None:
    """Issue 34, section 4: ``rollback.restoreData: Never``: no scale-down, no claim
    snapshotted, deleted or recreated; the workload's spec and images come back."""
    never = system()
    never["spec"]["rollback"] = {"restoreData": "Never"}
    st = status(
        Phase.UPDATING,
        recorded=RECORDED,
        snapshots=[SNAP],
        claims=["data"],
        job={"name": "run-update", "created": True},
    )
    failed = step(st, job=FAILED_JOB, system=never)
    assert failed.status.phase == Phase.ROLLING_BACK and failed.status.restore is not None
    assert failed.status.restore.step == RollbackStep.RESTORE_WORKLOAD
    assert failed.status.restore.data is False
    replaced = step(failed.status, workload=workload(image="v2"), system=never)
    assert kinds(replaced) == ["ReplaceWorkload"], "no ScaleToZero, no claim touched"
    done = step(replaced.status, workload=workload(replicas=2), system=never)
    assert done.status.phase == Phase.ROLLED_BACK
    assert done.status.message == (
        "the update Job run-update failed: BackoffLimitExceeded; restored the workload's spec "
        "and images only in 0s (rollback.restoreData: Never); its claims data keep what the "
        "update wrote"
    )


def test_an_image_someone_else_changed_during_the_update_fails_the_run_and_rolls_back() -> None:
    """Issue 35, part 4: a person or a GitOps controller setting another image on a target
    container during the run is not fought over, and a run is never Succeeded on a
    workload that no longer runs what it installed."""
    set_ = status(Phase.UPDATING, recorded=RECORDED, imagesSet=True)
    # Still the image recorded before the update: the run's own change had not landed.
    again = image_step(set_, workload=workload(image="v1"))
    assert again.actions == [m.SetImages("Deployment", "app", {"a": "pg:16.4"}, "7")]
    for phase, seen in [
        (Phase.UPDATING, workload(image="pg:17.0")),
        (Phase.VERIFYING, workload(image="pg:17.0")),
        (Phase.VERIFYING, workload(image="v1")),  # reverted to the old one
    ]:
        out = image_step(status(phase, recorded=RECORDED, imagesSet=True), workload=seen)
        assert out.status.phase == Phase.ROLLING_BACK, (phase, out.status.message)
        image = seen["spec"]["template"]["spec"]["containers"][0]["image"]
        assert out.status.failure == (
            f"the image of container a of Deployment app was changed to {image} by someone "
            "else during the update (the run set pg:16.4)"
        )
    pinned = workload(image="pg:16.4@sha256:" + "b" * 64)  # a policy engine added a digest
    verified = image_step(
        status(Phase.VERIFYING, recorded=RECORDED, imagesSet=True), workload=pinned
    )
    assert verified.status.phase == Phase.SUCCEEDED, verified.status.message
    baking = image_step(
        status(Phase.VERIFYING, recorded=RECORDED, imagesSet=True),
        workload=workload(image="pg:16.4"),
        system=baking_system(),
    )
    assert baking.status.phase == Phase.BAKING
    reverted = image_step(baking.status, workload=workload(image="v1"), system=baking_system())
    assert reverted.status.phase == Phase.ROLLING_BACK
    assert reverted.status.bake is not None and reverted.status.bake.result == "Failed"


@pytest.mark.parametrize("phase", [Phase.UPDATING, Phase.VERIFYING, Phase.BAKING])
def test_a_workload_deleted_during_the_update_fails_the_run_for_a_person_at_once(
    phase: Phase,
) -> None:
    """Issue 35, part 4: not a wait until verifyTimeout and a rollback that fails on it;
    the workload is never recreated, its claims and snapshots are kept."""
    bake = {"startTime": STAMP, "until": "2027-02-10T12:02:00Z"} if phase == Phase.BAKING else None
    st = status(phase, recorded=RECORDED, imagesSet=True, snapshots=[SNAP], bake=bake)
    out = image_step(st, workloads={"app": None})
    assert out.status.phase == Phase.FAILED
    assert out.status.message == (
        "Deployment app was deleted during the update: not rolled back (a workload someone "
        "deleted is never recreated); the claims and the pre-update snapshots run-data are kept"
    )
    assert condition(out, "NeedsAttention") == "True"
    assert not any(isinstance(a, (m.DeleteClaim, m.ScaleToZero, m.CreateJob)) for a in out.actions)
    if phase != Phase.BAKING:  # (a bake always reads it)
        unread = image_step(st)  # a step that did not read the workload decides nothing of it
        assert unread.status.phase == phase


def test_a_workload_scaled_by_hand_during_the_update_is_verified_at_its_new_size() -> None:
    """Issue 35, part 4: a scale during the run is not the run's to undo when it succeeds
    (verified at the size the workload now asks for); a rollback restores the whole spec
    recorded before the update, its replicas included (test_rollback, test_workloads)."""
    st = status(Phase.VERIFYING, recorded=RECORDED, imagesSet=True)
    scaled = image_step(st, workload=workload(replicas=5, image="pg:16.4"))
    assert scaled.status.phase == Phase.SUCCEEDED
    assert not any(isinstance(a, m.ScaleBack) for a in scaled.actions)
    growing = image_step(st, workload=workload(replicas=5, ready=False, image="pg:16.4"))
    assert growing.status.phase == Phase.VERIFYING and growing.wait == Wait.POLL
