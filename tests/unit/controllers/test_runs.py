"""The runs controller against the in-memory API: each step reads, acts and writes once;
steps are idempotent; conflicts are retried; a run writes only its run. (The decisions
themselves are tested branch by branch in tests/unit/core/test_run.py.)"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from patchwarden.controllers.runs import Runner, identity
from patchwarden.core.settings import Settings
from patchwarden_dev.fakekube import FakeKube
from tests.unit.runs import NOW, RUN_SPEC

NS = "ns"


def setup() -> tuple[FakeKube, Runner]:
    kube = FakeKube()
    kube.put(
        "managedsystems",
        NS,
        {
            "metadata": {"name": "app"},
            "spec": {
                "customer": "acme",
                "serviceModel": "SaaS",
                "workload": {"kind": "Deployment", "name": "app"},
                "volumes": ["data"],
                "updates": {
                    "template": {"spec": {"containers": [{"name": "u", "image": "x"}]}},
                    "bakeTime": "0s",
                },
            },
        },
    )
    kube.put(
        "updateruns",
        NS,
        {
            "metadata": {"name": "run", "uid": "u1"},
            "spec": RUN_SPEC,
        },
    )
    kube.put(
        "deployments",
        NS,
        {
            "kind": "Deployment",
            "metadata": {"name": "app", "generation": 1},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "app"}},
                "template": {
                    "spec": {"containers": [{"name": "a", "image": "v1"}]},
                    "metadata": {},
                },
            },
            "status": {
                "observedGeneration": 1,
                "replicas": 1,
                "updatedReplicas": 1,
                "availableReplicas": 1,
            },
        },
    )
    kube.put(
        "persistentvolumeclaims",
        NS,
        {"metadata": {"name": "data"}, "spec": {"storageClassName": "std"}},
    )
    kube.put(
        "volumesnapshotclasses",
        "",
        {
            "metadata": {
                "name": "std",
                "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"},
            }
        },
    )
    settings = Settings(run_poll_seconds=1, priority=1)
    return kube, Runner(kube, settings, lambda *_: None, now=lambda: NOW)


def run_of(kube: FakeKube) -> dict[str, Any]:
    return kube.stored("updateruns", NS, "run")


def drive(kube: FakeKube, runner: Runner, steps: int = 30, on_phase: Any = None) -> str:
    for _ in range(steps):
        run = kube.get("updateruns", NS, "run")
        assert run is not None
        if on_phase:
            on_phase((run.get("status") or {}).get("phase"))
        if runner.step(run) is None:
            break
    return str(run_of(kube)["status"]["phase"])


def finish_job(kube: FakeKube, result: str) -> None:
    for (plural, _, _), job in kube.objects.items():
        if plural == "jobs":
            job["status"] = {
                "conditions": [{"type": result, "status": "True", "reason": "x", "message": "y"}]
            }


def test_a_successful_run_creates_one_snapshot_and_one_job_however_often_it_steps() -> None:
    kube, runner = setup()
    phase = drive(
        kube, runner, on_phase=lambda p: finish_job(kube, "Complete") if p == "Updating" else None
    )
    assert phase == "Succeeded"
    assert kube.created() == ["create volumesnapshots/run-data", "create jobs/run-update"]
    status = run_of(kube)["status"]
    [recorded] = [w["recorded"] for w in status["workloads"]]
    assert recorded["template"]["spec"]["containers"][0]["image"] == "v1"
    assert status["completionTime"] == "2027-02-10T12:00:00Z"
    writes = {c.split("/")[0] + "/" + c.split("/")[1] for c in kube.calls if c.startswith("patch")}
    assert writes == {"patch updateruns/status"}, "a run writes only its run"


def test_a_conflict_while_restoring_the_workload_is_retried_and_nothing_is_lost() -> None:
    kube, runner = setup()
    workload = kube.stored("deployments", NS, "app")

    def fail_and_break(phase: str | None) -> None:
        if phase == "Updating":
            workload["spec"]["template"]["spec"]["containers"][0]["image"] = "v2-broken"
            finish_job(kube, "Failed")

    kube.conflicts = 2
    errors = 0
    for _ in range(40):
        run = kube.get("updateruns", NS, "run")
        assert run is not None
        fail_and_break((run.get("status") or {}).get("phase"))
        try:
            if runner.step(run) is None:
                break
        except ApiException as exc:  # the operator's daemon logs it and steps again
            assert exc.status == 409
            errors += 1
    status = run_of(kube)["status"]
    assert errors == 2
    assert status["phase"] == "RolledBack", status
    assert workload["spec"]["template"]["spec"]["containers"][0]["image"] == "v1"
    claim = kube.stored("persistentvolumeclaims", NS, "data")
    assert claim["spec"]["dataSource"]["name"] == status["snapshots"][0]["snapshot"]
    assert status["restore"] == {
        "step": "Verify",
        "startTime": status["restore"]["startTime"],
        "claims": ["data"],
        "failedState": [
            {
                "claim": "data",
                "snapshot": "run-data-failed",
                "created": True,
                "readyToUse": True,
                "claimSpec": {},
            }
        ],
        "completed": True,
    }
    failed_state = kube.stored("volumesnapshots", NS, "run-data-failed")
    assert failed_state["spec"]["source"] == {"persistentVolumeClaimName": "data"}


def test_a_run_past_its_cutoff_never_starts() -> None:
    kube, runner = setup()
    runner.now = lambda: NOW + timedelta(hours=2)  # 14:00, cutoff 13:00
    assert drive(kube, runner) == "Failed"
    assert kube.created() == []
    assert "cutoff" in run_of(kube)["status"]["message"]


def test_the_snapshot_deadline_counts_from_their_creation_not_from_a_late_restart() -> None:
    kube, runner = setup()
    run_of(kube)["status"] = {
        "phase": "Snapshotting",
        "phaseStartTime": "2027-02-10T11:00:00Z",  # an hour ago
        "snapshots": [
            {
                "claim": "data",
                "snapshot": "run-data",
                "created": False,
                "readyToUse": False,
                "claimSpec": {},
            }
        ],
    }
    kube.snapshots_ready = False
    runner.step(kube.get("updateruns", NS, "run") or {})
    status = run_of(kube)["status"]
    assert status["phase"] == "Snapshotting", status.get("message")
    assert status["phaseStartTime"] == "2027-02-10T12:00:00Z"


def test_snapshots_are_recorded_and_created_in_one_step_with_one_write() -> None:
    kube, runner = setup()
    run_of(kube)["status"] = {"phase": "Snapshotting", "phaseStartTime": "2027-02-10T12:00:00Z"}
    runner.step(kube.get("updateruns", NS, "run") or {})
    assert kube.created() == ["create volumesnapshots/run-data"]
    assert [c for c in kube.calls if c.startswith("patch")] == ["patch updateruns/status/run"]
    record = run_of(kube)["status"]["snapshots"][0]
    assert record == {
        "claim": "data",
        "snapshot": "run-data",
        "created": True,
        "readyToUse": False,
        "claimSpec": {"storageClassName": "std"},
    }


def test_steps_that_only_record_are_chained_and_a_change_is_taken_only_from_a_written_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Steps that only record are chained (one write, the workload read once), but a step
    that changes the cluster is taken only once what the steps before it recorded is
    written: Pending's decisions before the snapshots; Snapshotting → Recording → Updating
    (the workload's spec recorded) before the Job."""
    caplog.set_level(logging.INFO, logger="patchwarden.controllers.runs")
    kube, runner = setup()
    kube.calls.clear()
    assert runner.step(kube.get("updateruns", NS, "run") or {}) == 0.0, "goes on at once"
    status = run_of(kube)["status"]
    assert status["phase"] == "Snapshotting" and status["startTime"] and status["claims"]
    assert kube.created() == [], "the snapshot is made from the written status"
    assert [c for c in kube.calls if c.startswith("patch")] == ["patch updateruns/status/run"]
    kube.calls.clear()
    assert runner.step(kube.get("updateruns", NS, "run") or {}) != 0.0, "waits for the snapshot"
    assert kube.created() == ["create volumesnapshots/run-data"]
    assert run_of(kube)["status"]["snapshots"][0]["created"] is True
    kube.calls.clear()
    assert runner.step(kube.get("updateruns", NS, "run") or {}) == 0.0  # ready (FakeKube)
    status = run_of(kube)["status"]
    assert status["phase"] == "Updating"  # through Recording
    assert status["workloads"][0]["recorded"]["template"]["spec"]["containers"][0]["image"] == "v1"
    assert kube.created() == [], "the Job is made once the record of the workload is written"
    assert [c for c in kube.calls if c.startswith("patch")] == ["patch updateruns/status/run"]
    assert kube.calls.count("get deployments/app") == 1, kube.calls
    kube.calls.clear()
    runner.step(kube.get("updateruns", NS, "run") or {})
    assert kube.created() == ["create jobs/run-update"]
    logged = [
        r.getMessage().split(": ")[1] for r in caplog.records if "run ns/run" in r.getMessage()
    ]
    assert logged == ["Snapshotting", "Recording", "Updating"], "each phase passed is logged"


def test_the_snapshot_classes_come_from_the_watch_fed_copy_when_there_is_one() -> None:
    kube, runner = setup()
    classes = kube.snapshot_classes()
    runner.snapshot_classes = lambda: classes
    kube.calls.clear()
    run_of(kube)["status"] = {"phase": "Snapshotting", "phaseStartTime": "2027-02-10T12:00:00Z"}
    runner.step(kube.get("updateruns", NS, "run") or {})
    assert kube.created() == ["create volumesnapshots/run-data"]
    assert not [c for c in kube.calls if "volumesnapshotclasses" in c], kube.calls


def test_the_system_comes_from_the_read_model_when_there_is_one() -> None:
    kube, runner = setup()
    assert runner.system(NS, "app") is not None
    assert kube.calls[-1] == "get managedsystems/app", "without a read model: from the API"
    system = kube.get("managedsystems", NS, "app")
    runner.system_of = lambda ns, name: system if (ns, name) == (NS, "app") else None
    kube.calls.clear()
    phase = drive(
        kube, runner, on_phase=lambda p: finish_job(kube, "Complete") if p == "Updating" else None
    )
    assert phase == "Succeeded"
    assert "get managedsystems/app" not in kube.calls
    assert runner.system(NS, "gone") is None, "one the read model lacks is gone: no GET"
    assert "get managedsystems/gone" not in kube.calls


def test_a_failed_job_records_how_its_container_ended_and_its_pods_go_before_the_claims() -> None:
    """On a real node a finished Job's pod keeps the claim it mounts in use: the claim's
    deletion would wait for ever. The rollback deletes the Job's pods first, after the
    run has recorded how the container ended (its log tail, via the termination message)."""
    kube, runner = setup()
    kube.put(
        "pods",
        NS,
        {
            "metadata": {"name": "run-update-x", "labels": {"patchwarden.io/run": "run"}},
            "status": {
                "containerStatuses": [
                    {
                        "name": "u",
                        "state": {
                            "terminated": {
                                "exitCode": 3,
                                "reason": "Error",
                                "message": "apt: E: broken packages\n" + "x" * 5000,
                            }
                        },
                    }
                ]
            },
        },
    )
    phase = drive(
        kube, runner, on_phase=lambda p: finish_job(kube, "Failed") if p == "Updating" else None
    )
    status = run_of(kube)["status"]
    assert phase == "RolledBack", status
    deletions = [c for c in kube.calls if c.startswith("delete ")]
    assert deletions == ["delete pods/run-update-x", "delete persistentvolumeclaims/data"]
    termination = status["job"]["termination"]
    assert termination.startswith("container u exited with code 3 (Error):\n")
    assert len(termination) < 1100
    assert "container u exited with code 3" in status["failure"]


def test_a_run_in_a_namespace_being_deleted_ends_instead_of_retrying_for_ever() -> None:
    """The API server refuses to create anything in a terminating namespace; the run ends
    (and so lets its finalizers, and the namespace, go)."""
    kube, runner = setup()

    def refused(ns: str, body: dict[str, Any]) -> None:
        raise _terminating(ns)

    kube.create_snapshot = refused  # type: ignore[method-assign]
    assert drive(kube, runner) == "Failed"
    status = run_of(kube)["status"]
    assert status["message"] == (
        "namespace ns is being deleted, and with it the workload, its claims and snapshots: "
        "the run stopped in Snapshotting"
    )
    assert kube.created() == []


def _terminating(ns: str) -> ApiException:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = (
        f'{{"message": "volumesnapshots \\"run-data\\" is forbidden: unable to create new '
        f'content in namespace {ns} because it is being terminated"}}'
    )
    return exc


FREEZE = ["sh", "-c", "touch /data/.frozen"]
THAW = ["sh", "-c", "rm /data/.frozen"]


def grouped(kube: FakeKube, **backup: Any) -> None:
    """The system backs up by one group snapshot, its app frozen around it."""
    system = kube.stored("managedsystems", NS, "app")
    system["spec"]["backup"] = {
        "consistency": "Group",
        "freeze": [{"name": "app", "container": "a", "freeze": FREEZE, "thaw": THAW}],
        **backup,
    }
    kube.put(
        "volumegroupsnapshotclasses",
        "",
        {
            "metadata": {
                "name": "groups",
                "annotations": {"groupsnapshot.storage.kubernetes.io/is-default-class": "true"},
            }
        },
    )
    ready = {"name": "a", "ready": True}
    kube.put(
        "pods",
        NS,
        {
            "metadata": {"name": "app-1", "labels": {"app": "app"}},
            "status": {"phase": "Running", "containerStatuses": [ready]},
        },
    )


def test_a_group_backup_freezes_takes_one_group_snapshot_of_the_labelled_claims_and_thaws() -> None:
    kube, runner = setup()
    grouped(kube)
    phase = drive(
        kube, runner, on_phase=lambda p: finish_job(kube, "Complete") if p == "Updating" else None
    )
    assert phase == "Succeeded", run_of(kube)["status"]
    assert [c for _, _, c in kube.executed] == [FREEZE, THAW]
    order = [c for c in kube.calls if c.startswith(("exec", "create", "patch persistentvolume"))]
    assert order[:4] == [
        "patch persistentvolumeclaims/data",  # the group's selector selects it
        "exec pods/app-1",  # frozen before the group snapshot is asked for
        "create volumegroupsnapshots/run-group",
        "exec pods/app-1",  # thawed once the storage took it
    ]
    claim = kube.stored("persistentvolumeclaims", NS, "data")
    assert claim["metadata"]["labels"] == {"patchwarden.io/group-snapshot": "run"}
    status = run_of(kube)["status"]
    assert status["groupSnapshot"]["readyToUse"] and status["groupSnapshot"]["cutTime"]
    [record] = status["snapshots"]
    assert record == {
        **record,
        "claim": "data",
        "snapshot": "snapshot-run-group-data",  # the member the snapshot controller named
        "group": "run-group",
        "readyToUse": True,
    }
    freeze = status["freeze"]
    assert [(h["stage"], h["state"]) for h in freeze["hooks"]] == [
        ("freeze", "Succeeded"),
        ("thaw", "Succeeded"),
    ]
    assert freeze["frozenSeconds"] == 0 and freeze["endTime"]  # the test's clock stands still
    assert "volumesnapshots/run-data" not in " ".join(kube.created()), "no per-claim snapshot"


def test_a_failed_freeze_thaws_what_it_froze_and_changes_nothing() -> None:
    kube, runner = setup()
    grouped(kube)
    kube.exec_answers[tuple(FREEZE)] = (1, "database is locked")
    phase = drive(kube, runner)
    assert phase == "Failed"
    assert [c for _, _, c in kube.executed] == [FREEZE, THAW], "thawed although it failed"
    status = run_of(kube)["status"]
    assert status["message"].startswith("freeze hook app failed: database is locked")
    assert not [c for c in kube.created() if "snapshot" in c], "no snapshot, no group"
    assert not [c for c in kube.calls if c.startswith("create jobs")]


def test_a_cluster_without_group_snapshots_refuses_group_before_anything_changes() -> None:
    kube, runner = setup()
    grouped(kube)
    del kube.objects[("volumegroupsnapshotclasses", "", "groups")]
    assert drive(kube, runner) == "Failed"
    assert (
        "backup.consistency Group needs a VolumeGroupSnapshotClass"
        in (run_of(kube)["status"]["message"])
    )
    assert kube.executed == [] and not kube.created()


def test_a_run_end_is_counted_once_when_its_record_fails_and_then_forgotten() -> None:
    """The end is counted before ``counted: true`` is written; a failed write is retried
    without counting again, and once it landed the process keeps nothing of the run."""
    counted: list[str] = []

    def counting(runner: Runner) -> None:
        original = runner.apply

        def apply(run: Any, body: dict[str, Any], action: Any) -> None:
            if type(action).__name__ == "RunEnded" and identity(run, body) not in runner._counted:
                counted.append(body["metadata"]["name"])
            original(run, body, action)

        runner.apply = apply  # type: ignore[method-assign]

    kube, runner = setup()
    counting(runner)
    drive(
        kube, runner, on_phase=lambda p: finish_job(kube, "Complete") if p == "Updating" else None
    )
    assert counted == ["run"] and run_of(kube)["status"]["counted"] is True
    assert runner._counted == set(), "nothing kept once the record landed"

    kube, runner = setup()
    counting(runner)
    counted.clear()
    run_of(kube)["status"] = {"phase": "Succeeded", "counted": False, "message": "done"}
    original = kube.patch_status

    def refuse(*args: Any) -> None:
        raise ApiException(status=500, reason="Internal Server Error")

    kube.patch_status = refuse  # type: ignore[method-assign]
    with pytest.raises(ApiException):
        runner.step(kube.get("updateruns", NS, "run") or {})
    assert runner._counted == {"u1"}, "counted, not yet recorded"
    kube.patch_status = original  # type: ignore[method-assign]
    assert runner.step(kube.get("updateruns", NS, "run") or {}) is None
    assert counted == ["run"], "the retry did not count again"
    assert run_of(kube)["status"]["counted"] is True and runner._counted == set()


def test_a_status_write_lands_only_on_the_run_as_its_step_read_it() -> None:
    """A late write — a replica cut off from the API server, whose step's write arrives
    after another replica took over and wrote — is refused, not applied over the other's;
    a finalizer or an annotation added meanwhile is no reason to refuse."""
    kube, runner = setup()
    kube.bump(("updateruns", NS, "run"))
    read = kube.get("updateruns", NS, "run") or {}
    kube.annotate("updateruns", NS, "run", {"patchwarden.io/notified": "x"})
    runner.step(read)
    status = run_of(kube)["status"]
    assert status["phase"] == "Snapshotting", "metadata only changed: written onto it"
    assert read["metadata"]["resourceVersion"] == run_of(kube)["metadata"]["resourceVersion"]

    late = kube.get("updateruns", NS, "run") or {}
    other = Runner(kube, Settings(run_poll_seconds=1, priority=2), lambda *_: None, now=lambda: NOW)
    other.step(kube.get("updateruns", NS, "run") or {})  # the snapshot made and recorded
    taken = run_of(kube)["status"]
    with pytest.raises(ApiException) as refused:
        runner.step(late)  # the first replica's step, from what it read before
    assert refused.value.status == 409
    assert run_of(kube)["status"] == taken, "the other replica's status stands"


def test_a_late_delete_or_image_apply_never_undoes_what_came_after_it() -> None:
    """What a cut-off replica's step sent may arrive after another replica went on: the
    claim it deletes must still be the one it read (not the one restored in its place),
    the workload it sets images on must still be the version it read."""
    from patchwarden.core import step as machine

    kube, runner = setup()
    run = machine.Run.of(kube.get("updateruns", NS, "run") or {})
    body = kube.get("updateruns", NS, "run") or {}
    kube.stored("persistentvolumeclaims", NS, "data")["metadata"]["uid"] = "restored"
    with pytest.raises(ApiException) as refused:
        runner.apply(run, body, machine.DeleteClaim("data", "the-one-it-read"))
    assert refused.value.status == 409
    assert kube.objects.get(("persistentvolumeclaims", NS, "data")) is not None
    runner.apply(run, body, machine.DeleteClaim("data", "restored"))
    assert kube.objects.get(("persistentvolumeclaims", NS, "data")) is None

    kube.bump(("deployments", NS, "app"))
    read = kube.stored("deployments", NS, "app")["metadata"]["resourceVersion"]
    kube.bump(("deployments", NS, "app"))  # the other replica's rollback replaced it
    with pytest.raises(ApiException):
        runner.apply(run, body, machine.SetImages("Deployment", "app", {"a": "v2"}, read))
    containers = kube.stored("deployments", NS, "app")["spec"]["template"]["spec"]["containers"]
    assert containers[0]["image"] == "v1"
