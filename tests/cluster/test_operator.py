"""The operator against the real API server, with kwok running the pods."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import Cluster
from tests.helpers import holds_for, wait_for
from tests.operator_harness import (
    ENDED,
    Operator,
    condition,
    create,
    get,
    items,
    now_plus,
    phase,
    running_operator,
    runs_of,
    system,
    update_request,
    wait_run,
    wait_stalled,
    workload,
)

FAIL = {"devcluster.patchwarden.io/outcome": "fail"}


pytestmark = pytest.mark.usefixtures("crds")


def events(core: client.CoreV1Api, ns: str, name: str) -> list[tuple[str, str]]:
    return [
        (e.reason, e.message)
        for e in core.list_namespaced_event(ns).items
        if e.involved_object.name == name
    ]


def test_a_saas_update_snapshots_runs_the_job_and_succeeds(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    workload(core, apps, namespace, claims=2)
    create(cluster, namespace, system("files", "SaaS"))
    run = wait_run(cluster, namespace, "files", ENDED)
    assert phase(run) == "Succeeded", run["status"]
    assert run["spec"]["trigger"] == "Schedule"
    assert sorted(run["spec"]["classes"]) == [
        "feature",
        "security",
    ]  # SaaS runs feature updates too
    status = run["status"]
    assert sorted(s["claim"] for s in status["snapshots"]) == ["app-data-0", "app-data-1"]
    assert all(s["readyToUse"] for s in status["snapshots"])
    [recorded] = [w["recorded"] for w in status["workloads"]]
    assert recorded["replicas"] == 1
    assert recorded["template"]["spec"]["containers"][0]["image"] == "example.com/app:1.0"

    job = client.BatchV1Api(cluster.api).read_namespaced_job(status["job"]["name"], namespace)
    assert job.metadata.owner_references[0].kind == "UpdateRun"
    assert job.metadata.owner_references[0].name == run["metadata"]["name"]
    env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
    assert env["PATCHWARDEN_SYSTEM"] == "files"
    assert env["PATCHWARDEN_RUN"] == run["metadata"]["name"]
    assert env["PATCHWARDEN_CLASSES"] == "feature,security"
    assert 0 < job.spec.active_deadline_seconds <= 3600  # ends before the 1h window does

    snaps = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", namespace, "volumesnapshots"
    )["items"]
    assert sorted(s["spec"]["source"]["persistentVolumeClaimName"] for s in snaps) == [
        "app-data-0",
        "app-data-1",
    ]

    msys = wait_for(
        lambda: (
            (m := get(cluster, namespace, "ManagedSystem", "files"))["status"].get("lastRun") and m
        ),
        timeout=30,
        what="lastRun on the system",
    )
    assert msys["status"]["lastRun"]["result"] == "Succeeded"
    assert msys["status"]["responsibility"] == {"planning": "Provider", "execution": "Provider"}
    out = cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "--timeout=30s", "msys/files"
    )
    assert "condition met" in out
    assert ("Succeeded", "the update succeeded") in events(core, namespace, run["metadata"]["name"])
    assert "hunter2" not in operator.output()


def test_a_run_is_woken_by_its_snapshots_and_job_not_by_the_poll(
    cluster: Cluster,
    namespace: str,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    tmp_path: Path,
) -> None:
    """With a 60 s poll and the 15 s safety net, only the watch of snapshots and Jobs can
    move a run from its snapshots to its Job, and from the Job's end to Verifying, in
    seconds (kwok readies a snapshot 1 s after it is made)."""
    workload(core, apps, namespace, claims=1)
    with running_operator(cluster, namespace, tmp_path, PATCHWARDEN_RUN_POLL_SECONDS="60"):
        create(cluster, namespace, system("woken", "SaaS"))
        run = wait_run(cluster, namespace, "woken", {"Verifying", *ENDED}, timeout=60)
    status = run["status"]
    job = client.BatchV1Api(cluster.api).read_namespaced_job(status["job"]["name"], namespace)
    started = datetime.fromisoformat(status["startTime"].replace("Z", "+00:00"))
    assert (job.metadata.creation_timestamp - started).total_seconds() <= 8, (
        "snapshots ready → Job: woken by the snapshot's change, not after 15 s"
    )
    verifying = datetime.fromisoformat(status["phaseStartTime"].replace("Z", "+00:00"))
    assert (verifying - job.status.completion_time).total_seconds() <= 8, (
        "Job complete → Verifying: woken by the Job's change, not after 15 s"
    )


def test_a_failed_job_rolls_back_claims_and_pod_template(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    workload(core, apps, namespace)
    create(
        cluster,
        namespace,
        system("db", "SaaS", job={**FAIL, "devcluster.patchwarden.io/duration": "4s"}),
    )
    before = apps.read_namespaced_deployment("app", namespace).to_dict()
    updating = wait_run(cluster, namespace, "db", {"Updating"})
    # What a real update would do: change the workload while the Job runs — its image,
    # an env variable, the strategy, minReadySeconds, a label and the replica count.
    apps.patch_namespaced_deployment(
        "app",
        namespace,
        {
            "metadata": {"labels": {"updated-by": "job"}},
            "spec": {
                "replicas": 2,
                "minReadySeconds": 7,
                "strategy": {"type": "Recreate", "rollingUpdate": None},
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "example.com/app:2.0-broken",
                                "env": [{"name": "FEATURE", "value": "on"}],
                            }
                        ]
                    }
                },
            },
        },
    )
    run = wait_run(cluster, namespace, "db", ENDED)
    assert phase(run) == "RolledBack", run["status"]
    assert run["metadata"]["name"] == updating["metadata"]["name"]
    assert "the update Job" in run["status"]["message"] and "failed" in run["status"]["message"]
    assert run["status"]["restore"]["claims"] == ["app-data-0"]
    # Nothing the failed update wrote is lost: the claim as it left it, snapshotted first.
    (kept,) = run["status"]["restore"]["failedState"]
    assert kept["claim"] == "app-data-0" and kept["readyToUse"]
    snapshot = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", namespace, "volumesnapshots", kept["snapshot"]
    )
    assert snapshot["metadata"]["labels"]["patchwarden.io/state"] == "failed"
    assert snapshot["spec"]["source"] == {"persistentVolumeClaimName": "app-data-0"}

    claim = core.read_namespaced_persistent_volume_claim("app-data-0", namespace)
    assert claim.spec.data_source.kind == "VolumeSnapshot"
    assert claim.spec.data_source.name == run["status"]["snapshots"][0]["snapshot"]
    assert claim.status.phase == "Bound"
    deploy = apps.read_namespaced_deployment("app", namespace)
    assert deploy.spec.template.spec.containers[0].image == "example.com/app:1.0"
    assert deploy.spec.replicas == 1
    restored = deploy.to_dict()
    assert restored["spec"] == before["spec"], "every field of the spec is as before"
    assert restored["metadata"]["labels"] == before["metadata"]["labels"]
    wait_for(
        lambda: apps.read_namespaced_deployment("app", namespace).status.available_replicas == 1,
        timeout=30,
        what="the restored workload to be available",
    )
    msys = wait_for(
        lambda: (
            (m := get(cluster, namespace, "ManagedSystem", "db"))["status"].get("lastRun") and m
        ),
        timeout=30,
        what="lastRun on the system",
    )
    assert msys["status"]["lastRun"]["result"] == "RolledBack"
    last = next(c for c in msys["status"]["conditions"] if c["type"] == "LastUpdateSucceeded")
    assert (last["status"], last["reason"]) == ("False", "RolledBack"), last
    assert run["metadata"]["name"] in last["message"]


@pytest.mark.parametrize("consistency", ["Crash", "Stopped"])
def test_a_three_replica_statefulset_rolls_back_every_ordinals_claim(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    consistency: str,
) -> None:
    """The claims of every ordinal are snapshotted, kept as the failed update left them and
    recreated from their backups; the StatefulSet's spec is restored. Prints how long the
    rollback took (docs/operator.md quotes it). ``Stopped`` scales it to zero before the
    snapshots: its claims are still every ordinal's (issue 31: they were counted from the
    zero replicas, and none was snapshotted)."""
    apps.create_namespaced_stateful_set(
        namespace,
        {
            "metadata": {"name": "pg"},
            "spec": {
                "replicas": 3,
                "serviceName": "pg",
                "selector": {"matchLabels": {"app": "pg"}},
                "template": {
                    "metadata": {"labels": {"app": "pg"}},
                    "spec": {"containers": [{"name": "pg", "image": "example.com/pg:15.8"}]},
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    }
                ],
            },
        },
    )
    wait_for(
        lambda: (
            (apps.read_namespaced_stateful_set("pg", namespace).status.ready_replicas or 0) == 3
        ),
        timeout=60,
        what="three ready replicas",
    )
    before = apps.read_namespaced_stateful_set("pg", namespace).to_dict()
    body = system(
        "pg",
        "SaaS",
        job={**FAIL, "devcluster.patchwarden.io/duration": "4s"},
        backup={"consistency": consistency},
    )
    body["spec"]["workload"] = {"kind": "StatefulSet", "name": "pg"}
    create(cluster, namespace, body)
    wait_run(cluster, namespace, "pg", {"Updating"})
    apps.patch_namespaced_stateful_set(
        "pg",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "pg",
                                "image": "example.com/pg:16.0",
                                "env": [{"name": "PGDATA", "value": "/new"}],
                            }
                        ]
                    }
                }
            }
        },
    )
    run = wait_run(cluster, namespace, "pg", ENDED, timeout=120)
    assert phase(run) == "RolledBack", run["status"]
    ordinals = [f"data-pg-{i}" for i in range(3)]
    status = run["status"]
    assert status["claims"] == ordinals and status["workloads"][0]["startReplicas"] == 3
    assert [s["claim"] for s in status["snapshots"]] == ordinals
    assert sorted(status["restore"]["claims"]) == ordinals
    assert sorted(r["claim"] for r in status["restore"]["failedState"]) == ordinals
    for record in status["snapshots"]:
        claim = core.read_namespaced_persistent_volume_claim(record["claim"], namespace)
        assert claim.spec.data_source.name == record["snapshot"]
    after = apps.read_namespaced_stateful_set("pg", namespace).to_dict()
    assert after["spec"] == before["spec"]
    took = datetime.fromisoformat(status["completionTime"]) - datetime.fromisoformat(
        status["restore"]["startTime"]
    )
    said = re.search(r"restored 3 claims and the workload in (\d+)s; ", status["message"])
    assert said is not None, status["message"]
    # The message's figure is taken before the times are rounded to seconds.
    assert abs(int(said.group(1)) - took.total_seconds()) <= 1
    kept = ", ".join(r["snapshot"] for r in status["restore"]["failedState"])
    assert status["message"].endswith(f"is kept in the failed-state snapshots {kept}")
    print(f"\nrollback of a 3-replica StatefulSet ({consistency}): {took.total_seconds():.0f} s")


def test_without_a_snapshot_class_an_optional_backup_is_skipped_and_said_so(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    """backup.required: false, and the class it names does not exist: the run takes no
    snapshot (one without a class would never be ready), and its rollback restores the
    workload's spec only — the run and its Event say so; the claim is left alone."""
    workload(core, apps, namespace)
    body = system(
        "db",
        "SaaS",
        job={**FAIL, "devcluster.patchwarden.io/duration": "2s"},
        backup={"required": False, "volumeSnapshotClassName": "none-such"},
    )
    create(cluster, namespace, body)
    wait_run(cluster, namespace, "db", {"Updating"})
    apps.patch_namespaced_deployment(
        "app", namespace, {"spec": {"template": {"metadata": {"labels": {"v": "2"}}}}}
    )
    run = wait_run(cluster, namespace, "db", ENDED)
    assert phase(run) == "RolledBack", run["status"]
    status = run["status"]
    assert status["backupSkipped"] == "no VolumeSnapshotClass and backup.required is false"
    assert status.get("snapshots", []) == []
    assert re.search(
        r"restored the workload's spec only, not its data "
        r"\(no VolumeSnapshotClass and backup.required is false\) in \d+s$",
        status["message"],
    ), status["message"]
    snapshots = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", namespace, "volumesnapshots"
    )["items"]
    assert snapshots == []
    claim = core.read_namespaced_persistent_volume_claim("app-data-0", namespace)
    assert claim.spec.data_source is None, "the claim was not replaced"
    deploy = apps.read_namespaced_deployment("app", namespace)
    assert "v" not in (deploy.spec.template.metadata.labels or {})

    def reasons() -> set[str]:
        events = core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={run['metadata']['name']}"
        )
        return {e.reason for e in events.items}

    wait_for(
        lambda: {"BackupSkipped", "RolledBack"} <= reasons(),
        timeout=15,
        what="the run's BackupSkipped and RolledBack Events",
    )


def test_a_snapshot_that_never_becomes_ready_fails_without_touching_the_workload(
    cluster: Cluster, namespace: str, tmp_path: Path, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    workload(core, apps, namespace)
    before = apps.read_namespaced_deployment("app", namespace).metadata.generation
    with running_operator(cluster, namespace, tmp_path, PATCHWARDEN_SNAPSHOT_TIMEOUT_SECONDS="4"):
        create(
            cluster,
            namespace,
            system("db", "SaaS", backup={"volumeSnapshotClassName": "broken-snapshots"}),
        )
        run = wait_run(cluster, namespace, "db", ENDED)
    assert phase(run) == "Failed"
    assert "not ready within 4s" in run["status"]["message"]
    assert "job" not in run["status"]
    assert client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items == []
    assert apps.read_namespaced_deployment("app", namespace).metadata.generation == before
    assert condition(run, "NeedsAttention") is None


def test_a_claim_shared_with_a_pod_outside_the_workload_stops_the_run_before_any_step(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    workload(core, apps, namespace)
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "backup-agent", "labels": {"app": "backup"}},
            "spec": {
                "containers": [{"name": "agent", "image": "example.com/backup:1"}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "app-data-0"}}],
            },
        },
    )
    before = apps.read_namespaced_deployment("app", namespace).metadata.generation
    create(cluster, namespace, system("db", "SaaS"))
    run = wait_run(cluster, namespace, "db", ENDED)
    assert phase(run) == "Failed", run["status"]
    assert run["status"]["message"].startswith(
        "claim app-data-0 is also used by pod backup-agent, outside Deployment app"
    )
    assert not run["status"].get("snapshots") and "job" not in run["status"]
    assert apps.read_namespaced_deployment("app", namespace).metadata.generation == before
    msys = wait_for(
        lambda: (
            (m := get(cluster, namespace, "ManagedSystem", "db"))["status"].get("lastRun") and m
        ),
        timeout=30,
        what="lastRun on the system",
    )
    last = condition(msys, "LastUpdateSucceeded")
    assert last is not None and "backup-agent" in last["message"], last


def test_stopped_consistency_snapshots_the_claims_at_rest_and_starts_the_workload_again(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    """A database with separate data and WAL claims: stopped, both snapshotted, started."""
    workload(core, apps, namespace, replicas=2, claims=2)
    before = apps.read_namespaced_deployment("app", namespace).metadata.generation
    create(
        cluster,
        namespace,
        system(
            "db",
            "SaaS",
            job={"devcluster.patchwarden.io/duration": "2s"},
            backup={"consistency": "Stopped"},
        ),
    )
    run = wait_run(cluster, namespace, "db", ENDED, timeout=120)
    assert phase(run) == "Succeeded", run["status"]
    [pg] = run["status"]["workloads"]
    assert pg["stoppedReplicas"] == 0, "scaled back (recorded as done)"
    assert pg["recorded"]["replicas"] == 2, "recorded as it runs, not stopped"
    deploy = apps.read_namespaced_deployment("app", namespace)
    assert deploy.spec.replicas == 2
    assert deploy.metadata.generation == before + 2, "scaled to zero and back, once"
    assert (
        f"run {namespace}/{run['metadata']['name']}: Recording: 2 snapshots ready; "
        "Deployment app scaled back to 2 replicas"
    ) in operator.output()


def test_iaas_request_is_rejected_with_a_reason(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    workload(core, apps, namespace)
    create(cluster, namespace, system("vm", "IaaS"))
    create(cluster, namespace, update_request("r1", "vm", "HD-1"))
    request = wait_for(
        lambda: (
            (r := get(cluster, namespace, "UpdateRequest", "r1")).get("status", {}).get("state")
            and r
        ),
        timeout=30,
        what="the request to be decided",
    )
    assert request["status"]["state"] == "Rejected"
    assert "IaaS" in request["status"]["message"]
    assert condition(request, "Accepted")["status"] == "False"  # type: ignore[index]
    holds_for(lambda: runs_of(cluster, namespace, "vm") == [], duration=3, what="no run for IaaS")


def test_admin_access_makes_the_system_ineligible(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    workload(core, apps, namespace)
    create(cluster, namespace, system("erp", "PaaS", "advanced", customerAdminAccess=True))
    msys = wait_for(
        lambda: condition(get(cluster, namespace, "ManagedSystem", "erp"), "Eligible"),
        timeout=30,
        what="the Eligible condition",
    )
    assert msys["status"] == "False" and msys["reason"] == "CustomerAdminAccess"
    holds_for(lambda: runs_of(cluster, namespace, "erp") == [], duration=4, what="no run")


def test_basic_runs_only_on_request(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    workload(core, apps, namespace)
    create(cluster, namespace, system("cache", "PaaS", "basic"))
    wait_for(
        lambda: condition(get(cluster, namespace, "ManagedSystem", "cache"), "Ready"),
        timeout=30,
        what="the system to be reconciled",
    )
    holds_for(
        lambda: runs_of(cluster, namespace, "cache") == [],
        duration=5,
        what="no run without a request",
    )
    create(cluster, namespace, update_request("hd-7", "cache", "HD-7"))
    run = wait_run(cluster, namespace, "cache", ENDED)
    assert phase(run) == "Succeeded"
    assert run["spec"]["trigger"] == "Request" and run["spec"]["ticket"] == "HD-7"
    assert run["spec"]["classes"] == ["security"]
    request = wait_for(
        lambda: (
            (r := get(cluster, namespace, "UpdateRequest", "hd-7"))["status"]["state"]
            == "Succeeded"
            and r
        ),
        timeout=30,
        what="the request to end Succeeded",
    )
    assert request["status"]["runRef"]["name"] == run["metadata"]["name"]
    assert request["status"]["attempts"] == 1


def test_a_request_whose_run_rolled_back_is_accepted_again_for_a_later_window(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    workload(core, apps, namespace)
    create(cluster, namespace, system("cache", "PaaS", "basic", job=FAIL))
    create(cluster, namespace, update_request("hd-8", "cache", "HD-8"))
    run = wait_run(cluster, namespace, "cache", ENDED)
    assert phase(run) == "RolledBack", run["status"]
    name = run["metadata"]["name"]
    request = wait_for(
        lambda: (
            (r := get(cluster, namespace, "UpdateRequest", "hd-8"))["status"].get("attempts")
            and r["status"].get("state") != "Running"  # its run has ended
            and r
        ),
        timeout=30,
        what="the request to see its run end",
    )
    status = request["status"]
    # The one-off window has no later occurrence: accepted again, but for no window yet.
    assert status["state"] == "Accepted", status
    assert status["message"].startswith(f"update run {name} rolled back; retry 1 of 1"), status
    assert (status["runRef"], status["attempts"]) == ({"name": name}, 1)
    holds_for(
        lambda: len(runs_of(cluster, namespace, "cache")) == 1,
        duration=3,
        what="no second run in the window whose run rolled back",
    )


def test_ended_runs_beyond_the_history_limits_are_pruned(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    """Runs made directly (a history, no operator needed to make them): the system keeps
    the newest success and the newest failure, and its lastRun still names the newest."""
    workload(core, apps, namespace)
    custom = client.CustomObjectsApi(cluster.api)
    history = [("w1", "Succeeded"), ("w2", "RolledBack"), ("w3", "Failed"), ("w4", "Succeeded")]
    for day, (name, result) in enumerate(history, start=1):
        window = {
            "name": "w",
            "start": f"2026-01-0{day}T01:00:00Z",
            "end": f"2026-01-0{day}T05:00:00Z",
            "cutoff": f"2026-01-0{day}T04:00:00Z",
        }
        custom.create_namespaced_custom_object(
            "patchwarden.io",
            "v1alpha1",
            namespace,
            "updateruns",
            {
                "apiVersion": "patchwarden.io/v1alpha1",
                "kind": "UpdateRun",
                "metadata": {"name": name},
                "spec": {
                    "systemRef": {"name": "hist"},
                    "customer": "acme",
                    "trigger": "Schedule",
                    "classes": ["security"],
                    "window": window,
                },
            },
        )
        custom.patch_namespaced_custom_object_status(
            "patchwarden.io",
            "v1alpha1",
            namespace,
            "updateruns",
            name,
            {"status": {"phase": result, "completionTime": f"2026-01-0{day}T03:00:00Z"}},
        )
    create(
        cluster,
        namespace,
        system("hist", "PaaS", "basic", history={"successfulRuns": 1, "failedRuns": 1}),
    )
    wait_for(
        lambda: (
            sorted(r["metadata"]["name"] for r in runs_of(cluster, namespace, "hist"))
            == ["w3", "w4"]
        ),
        timeout=30,
        what="the history pruned to the newest success and the newest failure",
    )
    msys = get(cluster, namespace, "ManagedSystem", "hist")
    assert msys["status"]["lastRun"]["name"] == "w4"
    assert msys["status"]["lastSuccessfulUpdate"] == "2026-01-04T03:00:00Z"


def test_advanced_runs_on_its_cadence_once_per_period(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    workload(core, apps, namespace)
    body = system("shop", "PaaS", "advanced")
    body["spec"]["maintenance"]["windows"].append(
        {"name": "later", "once": now_plus(20), "duration": "1h"}
    )
    create(cluster, namespace, body)
    run = wait_run(cluster, namespace, "shop", ENDED)
    assert phase(run) == "Succeeded" and run["spec"]["trigger"] == "Cadence"
    # The second window (opening in 20 s) is in the same quarter: no second run.
    holds_for(
        lambda: len(runs_of(cluster, namespace, "shop")) == 1,
        duration=25,
        what="one run per quarter",
    )


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen", "twin-without-freeze"])
def test_a_freeze_blocks_the_window(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    frozen: bool,
) -> None:
    """The same system in the same open window: no run under a freeze, a run without one
    (so that "no run" is the freeze's doing, not a window that never opened)."""
    workload(core, apps, namespace)
    maintenance: dict[str, Any] = {
        "windows": [{"name": "now", "once": now_plus(-5), "duration": "1h"}]
    }
    if frozen:
        maintenance["freezes"] = [{"name": "release", "once": now_plus(-60), "end": now_plus(3600)}]
    create(cluster, namespace, system("frozen", "SaaS", maintenance=maintenance))
    wait_for(
        lambda: condition(get(cluster, namespace, "ManagedSystem", "frozen"), "Ready"),
        timeout=30,
        what="the system to be reconciled",
    )
    if frozen:
        holds_for(
            lambda: runs_of(cluster, namespace, "frozen") == [],
            duration=5,
            what="no run in a freeze",
        )
    else:
        wait_for(
            lambda: runs_of(cluster, namespace, "frozen") != [],
            timeout=30,
            what="the run of the same window without the freeze",
        )


@pytest.mark.parametrize(
    ("fleet_wide", "per_customer"),
    [("2", "5"), ("33%", "100%")],  # 33 % of the 6 systems in the window: 2 (rounded up)
    ids=["numbers", "percentages"],
)
def test_the_concurrency_limits_hold_with_many_systems(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    fleet_wide: str,
    per_customer: str,
) -> None:
    names = [f"s{i}" for i in range(6)]
    for name in names:
        workload(core, apps, namespace, name=f"w-{name}")
    # The window opens once every system is known with it as its next window (as systems
    # are, days before their window): a percentage is of those systems.
    opens = now_plus(12)
    with running_operator(
        cluster,
        namespace,
        tmp_path,
        PATCHWARDEN_MAX_CONCURRENT_RUNS=fleet_wide,
        PATCHWARDEN_MAX_RUNS_PER_CUSTOMER=per_customer,
    ):
        for name in names:
            create(
                cluster,
                namespace,
                system(
                    name,
                    "SaaS",
                    workload_name=f"w-{name}",
                    window_start=opens,
                    job={"devcluster.patchwarden.io/duration": "3s"},
                ),
            )
        wait_for(
            lambda: all(
                (get(cluster, namespace, "ManagedSystem", n).get("status") or {}).get("nextWindow")
                for n in names
            ),
            timeout=10,
            what="every system's next window",
        )
        peak = 0

        def all_done() -> bool:
            nonlocal peak
            runs = items(cluster, namespace, "UpdateRun")
            active = [r for r in runs if phase(r) not in ENDED]
            peak = max(peak, len(active))
            return len(runs) == len(names) and not active

        wait_for(all_done, timeout=180, interval=0.1, what="every system's run to end")
    runs = items(cluster, namespace, "UpdateRun")
    assert all(phase(r) == "Succeeded" for r in runs)
    assert 1 <= peak <= 2, peak
    if fleet_wide.endswith("%"):
        assert peak == 2, "33% of 6 is 2, not the floor of 1"


def test_max_errors_stops_the_window(
    cluster: Cluster, namespace: str, tmp_path: Path, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    names = [f"f{i}" for i in range(4)]
    # Half the windows open a minute after the others: one night, one error budget.
    starts = [now_plus(-65), now_plus(-5)]
    for name in names:
        workload(core, apps, namespace, name=f"w-{name}")
    with running_operator(
        cluster,
        namespace,
        tmp_path,
        PATCHWARDEN_MAX_CONCURRENT_RUNS="1",
        PATCHWARDEN_MAX_ERRORS_PER_WINDOW="2",
    ):
        for i, name in enumerate(names):
            create(
                cluster,
                namespace,
                system(
                    name,
                    "SaaS",
                    workload_name=f"w-{name}",
                    window_start=starts[i % 2],
                    job=FAIL,
                    rollback={"enabled": False},
                ),
            )

        def halted() -> list[str]:
            return [
                n
                for n in names
                if (c := condition(get(cluster, namespace, "ManagedSystem", n), "UpdatesHalted"))
                and c["status"] == "True"
            ]

        # Once two runs failed, the window is halted for every system in it.
        stopped = wait_for(
            lambda: len(halted()) == len(names) and halted(),
            timeout=120,
            what="the window halted for every system",
        )
        holds_for(
            lambda: len(items(cluster, namespace, "UpdateRun")) == 2,
            duration=5,
            what="no third run in the window",
        )
    runs = items(cluster, namespace, "UpdateRun")
    assert sorted(phase(r) for r in runs) == ["Failed", "Failed"]
    for name in stopped:
        reasons = [r for r, _ in events(core, namespace, name)]
        assert "MaxErrorsReached" in reasons


def test_the_operator_killed_mid_run_resumes_without_a_second_job_or_snapshot(
    cluster: Cluster, namespace: str, tmp_path: Path, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    workload(core, apps, namespace, claims=2)
    with running_operator(cluster, namespace, tmp_path) as op:
        create(
            cluster,
            namespace,
            system("db", "SaaS", job={"devcluster.patchwarden.io/duration": "5s"}),
        )
        wait_run(cluster, namespace, "db", {"Updating"})
        op.kill()
        holds_for(
            lambda: phase(runs_of(cluster, namespace, "db")[0]) == "Updating",
            duration=2,
            what="the run waiting while no operator runs",
        )
        op.start()
        run = wait_run(cluster, namespace, "db", ENDED)
    assert phase(run) == "Succeeded"
    assert len(runs_of(cluster, namespace, "db")) == 1
    assert len(client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items) == 1
    snaps = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", namespace, "volumesnapshots"
    )["items"]
    assert len(snaps) == 2


def test_unusable_specs_stall_and_the_other_systems_are_served(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    workload(core, apps, namespace)
    bad_tz = system("bad-tz", "SaaS")
    bad_tz["spec"]["maintenance"]["timeZone"] = "Mars/Olympus"
    bad_cron = system("bad-cron", "SaaS")
    bad_cron["spec"]["maintenance"]["windows"] = [
        {"name": "w", "cron": "61 25 * * *", "duration": "1h"}
    ]
    for body in (
        bad_tz,
        bad_cron,
        system("ghost", "SaaS", workload_name="missing"),
        system("no-class", "SaaS", backup={"volumeSnapshotClassName": "gone"}),
        system("good", "SaaS"),
    ):
        create(cluster, namespace, body)
    expected = {
        "bad-tz": (
            "InvalidSpec",
            "spec.maintenance.timeZone: 'Mars/Olympus' is not an IANA time zone",
        ),
        "bad-cron": ("InvalidSpec", "spec.maintenance.windows[0].cron"),
        "ghost": ("WorkloadNotFound", "Deployment missing not found"),
        "no-class": ("SnapshotClassNotFound", "VolumeSnapshotClass gone not found"),
    }
    for name, (reason, words) in expected.items():
        stalled = wait_stalled(cluster, namespace, name)
        assert stalled["reason"] == reason and words in stalled["message"], stalled
        assert runs_of(cluster, namespace, name) == []
    assert phase(wait_run(cluster, namespace, "good", ENDED)) == "Succeeded"
    assert operator.proc is not None and operator.proc.poll() is None, "the operator keeps running"


def test_restore_data_never_restores_the_spec_and_leaves_the_claims_as_they_are(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    """Issue 34, section 4: ``rollback.restoreData: Never`` rolls back the workload's spec
    and images only: its claim is the same object afterwards (not recreated from a
    snapshot), no failed-state snapshot is taken, and the run says so."""
    workload(core, apps, namespace)
    claim = core.read_namespaced_persistent_volume_claim("app-data-0", namespace)
    with running_operator(cluster, namespace, tmp_path):
        body = system("db", "SaaS", job=FAIL)
        body["spec"]["rollback"] = {"restoreData": "Never"}
        create(cluster, namespace, body)
        run = wait_run(cluster, namespace, "db", ENDED, timeout=120)
    status = run["status"]
    assert status["phase"] == "RolledBack", status
    assert "restored the workload's spec and images only in " in status["message"]
    assert status["message"].endswith(
        "(rollback.restoreData: Never); its claims app-data-0 keep what the update wrote"
    )
    assert status["restore"]["data"] is False and not status["restore"].get("failedState")
    after = core.read_namespaced_persistent_volume_claim("app-data-0", namespace)
    assert after.metadata.uid == claim.metadata.uid and after.spec.data_source is None
    assert status["snapshots"], "the pre-update snapshot was still taken (a copy to go back to)"
