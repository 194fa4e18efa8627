"""The run state machine against an in-memory API: idempotent steps, conflicts retried."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.rest import ApiException

from patchwarden.controllers.runs import Runner
from patchwarden.core.settings import Settings

NOW = datetime(2027, 2, 10, 12, 0, tzinfo=UTC)


class FakeKube:
    """Just enough of patchwarden.kube.Kube, in memory; ``conflicts`` makes the next
    workload replacements fail with 409 as a concurrent writer would."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.snaps: dict[str, dict[str, Any]] = {}
        self.claims = {"data": {"metadata": {"name": "data"}, "spec": {"storageClassName": "std"}}}
        self.workload = {
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
        }
        self.conflicts = 0
        self.creates: list[str] = []

    def get(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get((plural, name)))

    def patch_status(self, plural: str, ns: str, name: str, status: dict[str, Any]) -> None:
        self.objects[(plural, name)].setdefault("status", {}).update(copy.deepcopy(status))

    def snapshot_classes(self) -> list[dict[str, Any]]:
        return [
            {
                "metadata": {
                    "name": "std",
                    "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"},
                }
            }
        ]

    def get_snapshot(self, ns: str, name: str) -> dict[str, Any] | None:
        return self.snaps.get(name)

    def create_snapshot(self, ns: str, body: dict[str, Any]) -> None:
        self.creates.append("snapshot")
        self.snaps[body["metadata"]["name"]] = {**body, "status": {"readyToUse": True}}

    def list_snapshots(self, ns: str, selector: str) -> list[dict[str, Any]]:
        return [
            {**s, "metadata": {**s["metadata"], "creationTimestamp": "2027-01-01T00:00:00Z"}}
            for s in self.snaps.values()
        ]

    def delete_snapshot(self, ns: str, name: str) -> None:
        self.snaps.pop(name, None)

    def get_workload(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.workload)

    def replace_workload(self, kind: str, ns: str, body: dict[str, Any]) -> None:
        if self.conflicts:
            self.conflicts -= 1
            raise ApiException(status=409, reason="Conflict")
        self.workload["spec"] = copy.deepcopy(body["spec"])

    def scale(self, kind: str, ns: str, name: str, replicas: int) -> None:
        self.workload["spec"]["replicas"] = replicas

    def pods(self, ns: str, match_labels: dict[str, str]) -> list[dict[str, Any]]:
        return []

    def get_claim(self, ns: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.claims.get(name))

    def delete_claim(self, ns: str, name: str) -> None:
        self.claims.pop(name, None)

    def create_claim(self, ns: str, body: dict[str, Any]) -> None:
        self.claims[body["metadata"]["name"]] = body

    def get_job(self, ns: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.jobs.get(name))

    def create_job(self, ns: str, body: dict[str, Any]) -> None:
        self.creates.append("job")
        self.jobs[body["metadata"]["name"]] = body


def setup(template_annotations: dict[str, str] | None = None) -> tuple[FakeKube, Runner]:
    kube = FakeKube()
    kube.objects[("managedsystems", "app")] = {
        "metadata": {"name": "app", "namespace": "ns"},
        "spec": {
            "customer": "acme",
            "serviceModel": "SaaS",
            "workload": {"kind": "Deployment", "name": "app"},
            "volumes": ["data"],
            "updates": {"template": {"spec": {"containers": [{"name": "u", "image": "x"}]}}},
        },
    }
    kube.objects[("updateruns", "run")] = {
        "metadata": {"name": "run", "namespace": "ns", "uid": "u1"},
        "spec": {
            "systemRef": {"name": "app"},
            "customer": "acme",
            "trigger": "Schedule",
            "classes": ["security"],
            "window": {
                "name": "w",
                "start": "2027-02-10T11:00:00Z",
                "end": "2027-02-10T14:00:00Z",
                "cutoff": "2027-02-10T13:00:00Z",
            },
        },
    }
    settings = Settings(run_poll_seconds=1, priority=1)
    return kube, Runner(kube, settings, lambda *_: None, now=lambda: NOW)  # type: ignore[arg-type]


def drive(kube: FakeKube, runner: Runner, steps: int = 30, on_phase: Any = None) -> str:
    for _ in range(steps):
        run = kube.get("updateruns", "ns", "run")
        assert run is not None
        if on_phase:
            on_phase((run.get("status") or {}).get("phase"))
        if runner.step(run) is None:
            break
    return str(kube.objects[("updateruns", "run")]["status"]["phase"])


def finish_job(kube: FakeKube, result: str) -> None:
    for job in kube.jobs.values():
        job["status"] = {
            "conditions": [{"type": result, "status": "True", "reason": "x", "message": "y"}]
        }


def test_a_successful_run_creates_one_snapshot_and_one_job_however_often_it_steps() -> None:
    kube, runner = setup()
    phase = drive(
        kube, runner, on_phase=lambda p: finish_job(kube, "Complete") if p == "Updating" else None
    )
    assert phase == "Succeeded"
    assert kube.creates == ["snapshot", "job"]
    status = kube.objects[("updateruns", "run")]["status"]
    assert status["recorded"]["template"]["spec"]["containers"][0]["image"] == "v1"
    assert status["completionTime"] == "2027-02-10T12:00:00Z"
    assert "status" not in kube.objects[("managedsystems", "app")], "a run writes only its run"


def test_a_conflict_while_restoring_the_workload_is_retried_and_nothing_is_lost() -> None:
    kube, runner = setup()

    def fail_and_break(phase: str | None) -> None:
        if phase == "Updating":
            kube.workload["spec"]["template"]["spec"]["containers"][0]["image"] = "v2-broken"
            finish_job(kube, "Failed")

    kube.conflicts = 2
    errors = 0
    for _ in range(40):
        run = kube.get("updateruns", "ns", "run")
        assert run is not None
        fail_and_break((run.get("status") or {}).get("phase"))
        try:
            if runner.step(run) is None:
                break
        except ApiException as exc:  # the operator's daemon logs it and steps again
            assert exc.status == 409
            errors += 1
    status = kube.objects[("updateruns", "run")]["status"]
    assert errors == 2
    assert status["phase"] == "RolledBack", status
    assert kube.workload["spec"]["template"]["spec"]["containers"][0]["image"] == "v1"
    assert kube.claims["data"]["spec"]["dataSource"]["name"] == status["snapshots"][0]["snapshot"]
    assert status["restore"] == {"step": "Verify", "claims": ["data"], "completed": True}


def test_a_run_past_its_cutoff_never_starts() -> None:
    kube, runner = setup()
    runner.now = lambda: NOW + timedelta(hours=2)  # 14:00, cutoff 13:00
    assert drive(kube, runner) == "Failed"
    assert kube.creates == []
    assert "cutoff" in kube.objects[("updateruns", "run")]["status"]["message"]


def test_the_snapshot_deadline_counts_from_their_creation_not_from_a_late_restart() -> None:
    kube, runner = setup()
    late = kube.objects[("updateruns", "run")]
    late["status"] = {
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
    kube.snaps.clear()
    kube.create_snapshot = lambda ns, body: kube.snaps.update(  # type: ignore[method-assign]
        {body["metadata"]["name"]: {**body, "status": {}}}
    )  # not ready yet
    runner.step(kube.get("updateruns", "ns", "run"))  # type: ignore[arg-type]
    status = kube.objects[("updateruns", "run")]["status"]
    assert status["phase"] == "Snapshotting", status.get("message")
    assert status["phaseStartTime"] == "2027-02-10T12:00:00Z"


def test_snapshots_are_recorded_and_created_in_one_step_with_one_write() -> None:
    kube, runner = setup()
    kube.objects[("updateruns", "run")]["status"] = {
        "phase": "Snapshotting",
        "phaseStartTime": "2027-02-10T12:00:00Z",
    }
    writes: list[dict[str, Any]] = []
    patch = kube.patch_status
    kube.patch_status = lambda p, ns, n, s: (writes.append(s), patch(p, ns, n, s))  # type: ignore[method-assign, func-returns-value]
    runner.step(kube.get("updateruns", "ns", "run"))  # type: ignore[arg-type]
    assert kube.creates == ["snapshot"]
    assert len(writes) == 1, "the records and their creation go in one status write"
    assert writes[0]["snapshots"][0] | {"claimSpec": None} == {
        "claim": "data",
        "snapshot": "run-data",
        "created": True,
        "readyToUse": False,
        "claimSpec": None,
    }
    assert writes[0]["snapshots"][0]["claimSpec"] == {"storageClassName": "std"}


def test_the_system_comes_from_the_cache_when_there_is_one() -> None:
    kube, runner = setup()
    system = kube.get("managedsystems", "ns", "app")
    reads: list[str] = []
    get = kube.get
    kube.get = lambda plural, ns, name: (reads.append(plural), get(plural, ns, name))[1]  # type: ignore[method-assign]
    runner.cached_system = lambda ns, name: system if (ns, name) == ("ns", "app") else None
    phase = drive(
        kube, runner, on_phase=lambda p: finish_job(kube, "Complete") if p == "Updating" else None
    )
    assert phase == "Succeeded"
    assert "managedsystems" not in reads
    runner.cached_system = lambda ns, name: None  # not cached (yet): read from the API
    assert runner.system("ns", "app") is not None
    assert reads[-1] == "managedsystems", "not cached (yet): the API's copy"


def test_a_failed_job_records_how_its_container_ended_and_its_pods_go_before_the_claims() -> None:
    """On a real node a finished Job's pod keeps the claim it mounts in use: the claim's
    deletion would wait for ever. The rollback deletes the Job's pods first, after the
    run has recorded how the container ended (its log tail, via the termination message)."""
    kube, runner = setup()
    job_pod = {
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
    }
    pods = {"run-update-x": job_pod}
    deleted: list[str] = []
    kube.pods = lambda ns, labels: (  # type: ignore[method-assign]
        list(pods.values()) if labels == {"patchwarden.io/run": "run"} else []
    )

    def delete_pod(ns: str, name: str) -> None:
        deleted.append(name)
        assert "data" in kube.claims, "the Job's pod must go before the claim is deleted"
        pods.pop(name)

    kube.delete_pod = delete_pod  # type: ignore[attr-defined]
    phase = drive(
        kube, runner, on_phase=lambda p: finish_job(kube, "Failed") if p == "Updating" else None
    )
    status = kube.objects[("updateruns", "run")]["status"]
    assert phase == "RolledBack", status
    assert deleted == ["run-update-x"]
    termination = status["job"]["termination"]
    assert termination.startswith("container u exited with code 3 (Error):\n")
    assert len(termination) < 1100
    assert "container u exited with code 3" in status["failure"]
