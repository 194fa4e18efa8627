"""Faults: every one ends in a clear phase and condition, with no duplicate Job or
snapshot, no run lost and no update outside a window."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.conftest import Cluster
from tests.helpers import holds_for, wait_for
from tests.operator_harness import (
    ENDED,
    condition,
    create,
    get,
    items,
    phase,
    running_operator,
    runs_of,
    system,
    wait_run,
    wait_stalled,
    workload,
)

FAIL = {"devcluster.patchwarden.io/outcome": "fail"}
SNAPSHOTS = ("snapshot.storage.k8s.io", "v1")


@pytest.fixture(scope="module", autouse=True)
def crds(cluster: Cluster) -> None:
    cluster.install_crds()


@pytest.fixture
def kube(
    cluster: Cluster,
) -> tuple[client.CoreV1Api, client.AppsV1Api, client.BatchV1Api, client.CustomObjectsApi]:
    api = cluster.api
    return (
        client.CoreV1Api(api),
        client.AppsV1Api(api),
        client.BatchV1Api(api),
        client.CustomObjectsApi(api),
    )


def snapshots(custom: client.CustomObjectsApi, ns: str) -> list[dict[str, Any]]:
    return list(custom.list_namespaced_custom_object(*SNAPSHOTS, ns, "volumesnapshots")["items"])


def no_duplicates(
    cluster: Cluster,
    ns: str,
    batch: client.BatchV1Api,
    custom: client.CustomObjectsApi,
    claims: int,
) -> None:
    runs = items(cluster, ns, "UpdateRun")
    assert len(runs) == 1, [r["metadata"]["name"] for r in runs]
    assert len(batch.list_namespaced_job(ns).items) <= 1
    found = snapshots(custom, ns)
    failed_state = [s for s in found if s["metadata"]["labels"].get("patchwarden.io/state")]
    assert len(found) - len(failed_state) == claims, "one backup per claim"
    # A rollback keeps each claim as the failed update left it: at most one such per claim.
    kept = [s["spec"]["source"]["persistentVolumeClaimName"] for s in failed_state]
    assert len(kept) == len(set(kept)) <= claims, kept


@pytest.mark.parametrize(
    ("kill_in", "job", "final"),
    [
        ("Snapshotting", {}, "Succeeded"),
        ("Updating", {"devcluster.patchwarden.io/duration": "4s"}, "Succeeded"),
        ("RollingBack", {**FAIL, "devcluster.patchwarden.io/duration": "1s"}, "RolledBack"),
    ],
)
def test_sigkill_in_each_phase_then_restart(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    kube: Any,
    kill_in: str,
    job: dict[str, str],
    final: str,
) -> None:
    core, apps, batch, custom = kube
    workload(core, apps, namespace, claims=2)
    with running_operator(cluster, namespace, tmp_path) as op:
        create(cluster, namespace, system("db", "SaaS", job=job))
        wait_for(
            lambda: any(phase(r) == kill_in for r in runs_of(cluster, namespace, "db")),
            timeout=60,
            interval=0.05,
            what=f"the run in {kill_in}",
        )
        op.kill()
        op.start()
        run = wait_run(cluster, namespace, "db", ENDED)
    assert phase(run) == final, run["status"]
    assert run["status"]["startTime"] and run["status"]["completionTime"]
    no_duplicates(cluster, namespace, batch, custom, claims=2)


def api_server_pid(cluster: Cluster) -> int:
    """The kube-apiserver serving this cluster's port, found by its command line (kwokctl's
    pid file can name an earlier process of the same component)."""
    port = str(urlparse(cluster.api.configuration.host).port)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if args[0].endswith("kube-apiserver") and f"--secure-port={port}" in args:
            found.append(int(entry.name))
    assert len(found) == 1, f"kube-apiserver processes on port {port}: {found}"
    return found[0]


def answers(cluster: Cluster) -> bool:
    try:
        client.VersionApi(cluster.api).get_code(_request_timeout=2)
    except Exception:
        return False
    return True


def test_the_api_server_paused_for_30s_during_a_run(
    cluster: Cluster, namespace: str, tmp_path: Path, kube: Any
) -> None:
    core, apps, batch, custom = kube
    workload(core, apps, namespace)
    pid = api_server_pid(cluster)
    with running_operator(cluster, namespace, tmp_path) as op:
        create(
            cluster,
            namespace,
            system("db", "SaaS", job={"devcluster.patchwarden.io/duration": "3s"}),
        )
        wait_run(cluster, namespace, "db", {"Updating"})
        os.kill(pid, signal.SIGSTOP)
        try:
            assert op.proc is not None
            # The outage is real: within a few seconds, no request is answered.
            wait_for(
                lambda: not answers(cluster),
                timeout=10,
                interval=0.5,
                what=f"the API server (pid {pid}) to stop answering",
            )
            holds_for(
                lambda: op.proc is not None and op.proc.poll() is None,
                duration=30,
                interval=1,
                what="the operator surviving the outage",
            )
        finally:
            os.kill(pid, signal.SIGCONT)
        run = wait_run(cluster, namespace, "db", ENDED, timeout=180)
    assert phase(run) == "Succeeded", run["status"]
    no_duplicates(cluster, namespace, batch, custom, claims=1)


def test_two_replicas_run_each_update_once(
    cluster: Cluster, namespace: str, tmp_path: Path, kube: Any
) -> None:
    core, apps, batch, custom = kube
    names = ["a", "b", "c"]
    for name in names:
        workload(core, apps, namespace, name=f"w-{name}")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with (
        running_operator(cluster, namespace, tmp_path / "one", PATCHWARDEN_PRIORITY="100"),
        running_operator(cluster, namespace, tmp_path / "two", PATCHWARDEN_PRIORITY="200"),
    ):
        for name in names:
            create(
                cluster,
                namespace,
                system(
                    name,
                    "SaaS",
                    workload_name=f"w-{name}",
                    job={"devcluster.patchwarden.io/duration": "2s"},
                ),
            )
        for name in names:
            assert phase(wait_run(cluster, namespace, name, ENDED)) == "Succeeded"
        # Serving a namespace, the replicas meet in one ClusterKopfPeering (named by the
        # harness after the namespace), not in a KopfPeering per namespace served.
        peering = custom.get_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", f"pw-{namespace}"
        )
        assert len(peering.get("status") or {}) == 2, peering.get("status")
        listed = custom.list_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings")
        assert listed["items"] == []
    for name in names:
        assert len(runs_of(cluster, namespace, name)) == 1
    assert len(batch.list_namespaced_job(namespace).items) == len(names)


def test_the_update_job_deleted_mid_run_rolls_back(
    cluster: Cluster, namespace: str, tmp_path: Path, kube: Any
) -> None:
    core, apps, batch, _ = kube
    workload(core, apps, namespace)
    with running_operator(cluster, namespace, tmp_path):
        create(
            cluster,
            namespace,
            system("db", "SaaS", job={"devcluster.patchwarden.io/duration": "30s"}),
        )
        run = wait_for(
            lambda: next(
                (
                    r
                    for r in runs_of(cluster, namespace, "db")
                    if (r.get("status") or {}).get("job", {}).get("created")
                ),
                None,
            ),
            timeout=60,
            what="the Job created",
        )
        batch.delete_namespaced_job(
            run["status"]["job"]["name"], namespace, propagation_policy="Background"
        )
        run = wait_run(cluster, namespace, "db", ENDED)
    assert phase(run) == "RolledBack", run["status"]
    assert "deleted" in run["status"]["failure"]


def test_a_snapshot_deleted_before_the_restore_fails_and_asks_for_a_person(
    cluster: Cluster, namespace: str, tmp_path: Path, kube: Any
) -> None:
    core, apps, _, custom = kube
    workload(core, apps, namespace)
    with running_operator(cluster, namespace, tmp_path):
        create(
            cluster,
            namespace,
            system("db", "SaaS", job={**FAIL, "devcluster.patchwarden.io/duration": "5s"}),
        )
        wait_run(cluster, namespace, "db", {"Updating"})
        for snap in snapshots(custom, namespace):
            custom.delete_namespaced_custom_object(
                *SNAPSHOTS, namespace, "volumesnapshots", snap["metadata"]["name"]
            )
        run = wait_run(cluster, namespace, "db", ENDED)
        assert phase(run) == "Failed", run["status"]
        assert "is gone" in run["status"]["message"]
        attention = condition(run, "NeedsAttention")
        assert (
            attention is not None
            and attention["status"] == "True"
            and "a person must" in attention["message"]
        )
        # The system reads degraded (kstatus: Stalled; Argo CD: Degraded) and starts no
        # update until a person says they dealt with it.
        name = run["metadata"]["name"]
        stalled = wait_stalled(cluster, namespace, "db")
        assert stalled["reason"] == "RollbackFailed" and name in stalled["message"]
        custom.patch_namespaced_custom_object(
            "patchwarden.io",
            "v1alpha1",
            namespace,
            "managedsystems",
            "db",
            {"metadata": {"annotations": {"patchwarden.io/acknowledged-run": name}}},
        )
        wait_for(
            lambda: (
                condition(get(cluster, namespace, "ManagedSystem", "db"), "Stalled")[  # type: ignore[index]
                    "status"
                ]
                == "False"
            ),
            timeout=30,
            what="the acknowledged system to be no longer stalled",
        )


@pytest.fixture
def stuck_claim(kube: Any, namespace: str) -> Iterator[str]:
    core = kube[0]
    yield "app-data-0"
    with contextlib.suppress(ApiException):  # let the namespace go
        core.patch_namespaced_persistent_volume_claim(
            "app-data-0", namespace, {"metadata": {"finalizers": None}}
        )


def test_a_claim_stuck_terminating_during_the_rollback_ends_failed_not_hanging(
    cluster: Cluster, namespace: str, tmp_path: Path, kube: Any, stuck_claim: str
) -> None:
    core, apps, _, _ = kube
    workload(core, apps, namespace)
    with running_operator(cluster, namespace, tmp_path, PATCHWARDEN_ROLLBACK_TIMEOUT_SECONDS="6"):
        create(
            cluster,
            namespace,
            system("db", "SaaS", job={**FAIL, "devcluster.patchwarden.io/duration": "4s"}),
        )
        wait_run(cluster, namespace, "db", {"Updating"})
        core.patch_namespaced_persistent_volume_claim(
            stuck_claim,
            namespace,
            {"metadata": {"finalizers": ["example.com/held-by-backup-tool"]}},
        )
        run = wait_run(cluster, namespace, "db", ENDED, timeout=120)
    assert phase(run) == "Failed", run["status"]
    assert "still terminating" in run["status"]["message"]
    assert condition(run, "NeedsAttention")["status"] == "True"  # type: ignore[index]


def test_a_job_still_running_at_the_rollback_reserve_is_stopped_and_rolled_back(
    cluster: Cluster, namespace: str, tmp_path: Path, kube: Any
) -> None:
    core, apps, batch, _ = kube
    workload(core, apps, namespace)
    with running_operator(cluster, namespace, tmp_path):
        body = system(
            "db", "SaaS", window="40s", job={"devcluster.patchwarden.io/duration": "120s"}
        )
        body["spec"]["updates"]["expectedDuration"] = "10s"
        body["spec"]["rollback"] = {"reserve": "10s"}
        create(cluster, namespace, body)
        run = wait_run(cluster, namespace, "db", ENDED, timeout=150)
    assert phase(run) == "RolledBack", run["status"]
    job = batch.read_namespaced_job(run["status"]["job"]["name"], namespace)
    # The window (40 s, opened 5 s ago) less the reserve: the Job ends 10 s before it does.
    assert job.spec.active_deadline_seconds <= 30
    assert any(c.reason == "DeadlineExceeded" for c in job.status.conditions or [])


def test_the_update_job_runs_under_the_restricted_pod_security_profile(
    cluster: Cluster, namespace: str, tmp_path: Path, kube: Any
) -> None:
    core, apps, _, _ = kube
    core.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    restricted = {
        "name": "app",
        "image": "example.com/app:1.0",
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    workload(core, apps, namespace, container=restricted)
    with running_operator(cluster, namespace, tmp_path) as op:
        create(cluster, namespace, system("db", "SaaS"))
        run = wait_run(cluster, namespace, "db", ENDED)
        log = op.output()
    assert phase(run) == "Succeeded", run["status"]
    pod = core.list_namespaced_pod(
        namespace, label_selector=f"job-name={run['status']['job']['name']}"
    ).items[0]
    assert pod.spec.security_context.run_as_non_root is True
    assert pod.spec.containers[0].security_context.allow_privilege_escalation is False
    assert "hunter2" not in log, "the template's environment values never reach the logs"
