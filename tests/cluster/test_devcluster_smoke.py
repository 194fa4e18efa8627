"""Smoke tests of the local control plane: the real parts the later issues rely on."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.conftest import Cluster
from tests.helpers import holds_for, wait_for

FAIL = {"devcluster.patchwarden.io/outcome": "fail"}


def job(name: str, pod_annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": pod_annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "update", "image": "busybox:1.36", "command": ["true"]}
                    ],
                },
            },
        },
    }


def job_condition(batch: client.BatchV1Api, ns: str, name: str) -> str | None:
    status = batch.read_namespaced_job_status(name, ns).status
    for cond in status.conditions or []:
        if cond.type in {"Complete", "Failed"} and cond.status == "True":
            return str(cond.type)
    return None


def pvc(name: str, data_source: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
    }
    if data_source:
        spec["dataSource"] = data_source
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": spec,
    }


def snapshot(name: str, claim: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"source": {"persistentVolumeClaimName": claim}},
    }


def snapshot_status(custom: client.CustomObjectsApi, ns: str, name: str) -> dict[str, Any]:
    obj = custom.get_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", ns, "volumesnapshots", name
    )
    return dict(obj.get("status") or {})


def claim_phase(core: client.CoreV1Api, ns: str, name: str) -> str:
    return str(core.read_namespaced_persistent_volume_claim(name, ns).status.phase)


def claim_with_snapshot(
    cluster: Cluster, ns: str, snap: str, annotations: dict[str, str] | None = None
) -> None:
    """A claim ``data`` and a VolumeSnapshot ``snap`` of it."""
    client.CoreV1Api(cluster.api).create_namespaced_persistent_volume_claim(ns, pvc("data"))
    client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", ns, "volumesnapshots", snapshot(snap, "data", annotations)
    )


def restore_source(snap: str) -> dict[str, str]:
    return {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snap}


def test_api_server_reports_kubernetes_1_34(cluster: Cluster) -> None:
    version = client.VersionApi(cluster.api).get_code()
    assert version.git_version.startswith("v1.34."), version.git_version
    assert (version.major, version.minor) == ("1", "34")


def test_api_server_listens_on_loopback_only(cluster: Cluster) -> None:
    host = cluster.api.configuration.host
    assert host.startswith(("https://127.0.0.1:", "https://localhost:")), host


def test_rbac_authorization_is_enforced(cluster: Cluster, namespace: str) -> None:
    """A ServiceAccount without roles is refused: RBAC is on, not AlwaysAllow."""
    out = cluster.kubectl(
        "auth",
        "can-i",
        "create",
        "jobs",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:default",
        check=False,
    )
    assert out.strip() == "no"
    out = cluster.kubectl("auth", "can-i", "create", "jobs", "-n", namespace)
    assert out.strip() == "yes"


def test_a_job_completes(cluster: Cluster, namespace: str) -> None:
    batch = client.BatchV1Api(cluster.api)
    batch.create_namespaced_job(namespace, job("ok"))
    assert (
        wait_for(lambda: job_condition(batch, namespace, "ok"), timeout=60, what="job ok to finish")
        == "Complete"
    )
    pods = (
        client.CoreV1Api(cluster.api)
        .list_namespaced_pod(namespace, label_selector="job-name=ok")
        .items
    )
    assert [p.status.phase for p in pods] == ["Succeeded"]
    assert pods[0].spec.node_name == "kwok-node-0"


def test_a_job_whose_pod_is_annotated_to_fail_is_failed(cluster: Cluster, namespace: str) -> None:
    batch = client.BatchV1Api(cluster.api)
    batch.create_namespaced_job(namespace, job("doomed", FAIL))
    assert (
        wait_for(
            lambda: job_condition(batch, namespace, "doomed"),
            timeout=60,
            what="job doomed to finish",
        )
        == "Failed"
    )
    pod = (
        client.CoreV1Api(cluster.api)
        .list_namespaced_pod(namespace, label_selector="job-name=doomed")
        .items[0]
    )
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 1


def test_kubectl_wait_for_condition_complete(cluster: Cluster, namespace: str) -> None:
    client.BatchV1Api(cluster.api).create_namespaced_job(namespace, job("waited"))
    out = cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=complete", "--timeout=60s", "job/waited"
    )
    assert "condition met" in out


def test_a_claim_binds_and_its_snapshot_becomes_ready(cluster: Cluster, namespace: str) -> None:
    core = client.CoreV1Api(cluster.api)
    custom = client.CustomObjectsApi(cluster.api)
    core.create_namespaced_persistent_volume_claim(namespace, pvc("data"))
    wait_for(
        lambda: claim_phase(core, namespace, "data") == "Bound",
        timeout=60,
        what="claim data to bind",
    )
    claim = core.read_namespaced_persistent_volume_claim("data", namespace)
    assert claim.spec.storage_class_name == "standard"
    assert claim.metadata.annotations["pv.kubernetes.io/bind-completed"] == "yes"

    custom.create_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", namespace, "volumesnapshots", snapshot("data-snap", "data")
    )
    status = wait_for(
        lambda: (s := snapshot_status(custom, namespace, "data-snap")).get("readyToUse") and s,
        timeout=60,
        what="snapshot data-snap to become ready",
    )
    assert status["restoreSize"]
    assert status["creationTime"]


def test_a_snapshot_annotated_to_fail_never_becomes_ready(cluster: Cluster, namespace: str) -> None:
    custom = client.CustomObjectsApi(cluster.api)
    claim_with_snapshot(cluster, namespace, "bad-snap", FAIL)
    status = wait_for(
        lambda: snapshot_status(custom, namespace, "bad-snap").get("error"),
        timeout=60,
        what="snapshot bad-snap to report its error",
    )
    assert "never becomes ready" in status["message"]
    holds_for(
        lambda: not snapshot_status(custom, namespace, "bad-snap").get("readyToUse"),
        duration=5,
        what="bad-snap staying not ready",
    )


def test_a_claim_restored_from_a_snapshot_binds_and_its_pod_is_scheduled(
    cluster: Cluster, namespace: str
) -> None:
    core = client.CoreV1Api(cluster.api)
    custom = client.CustomObjectsApi(cluster.api)
    claim_with_snapshot(cluster, namespace, "snap")
    wait_for(
        lambda: snapshot_status(custom, namespace, "snap").get("readyToUse"),
        timeout=60,
        what="snapshot ready",
    )
    core.create_namespaced_persistent_volume_claim(
        namespace, pvc("restored", restore_source("snap"))
    )
    wait_for(
        lambda: claim_phase(core, namespace, "restored") == "Bound",
        timeout=60,
        what="restored claim to bind",
    )
    assert (
        core.read_namespaced_persistent_volume_claim("restored", namespace).spec.data_source.name
        == "snap"
    )

    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "user"},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "busybox:1.36",
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }
                ],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "restored"}}],
            },
        },
    )
    wait_for(
        lambda: core.read_namespaced_pod("user", namespace).status.phase == "Running",
        timeout=60,
        what="the pod mounting the restored claim to run",
    )


def test_a_claim_from_a_snapshot_that_is_not_ready_stays_pending(
    cluster: Cluster, namespace: str
) -> None:
    core = client.CoreV1Api(cluster.api)
    claim_with_snapshot(cluster, namespace, "bad", FAIL)
    core.create_namespaced_persistent_volume_claim(
        namespace, pvc("restored", restore_source("bad"))
    )
    holds_for(
        lambda: claim_phase(core, namespace, "restored") == "Pending",
        duration=3,
        what="claim pending",
    )


@pytest.mark.parametrize(
    "kind", ["volumesnapshots", "volumesnapshotclasses", "volumesnapshotcontents"]
)
def test_the_volume_snapshot_api_is_served(cluster: Cluster, kind: str) -> None:
    custom = client.CustomObjectsApi(cluster.api)
    try:
        custom.list_cluster_custom_object("snapshot.storage.k8s.io", "v1", kind)
    except ApiException as exc:  # pragma: no cover - the assertion message is the point
        raise AssertionError(
            f"snapshot.storage.k8s.io/v1 {kind} is not served: {exc.status}"
        ) from exc
    classes = custom.list_cluster_custom_object(
        "snapshot.storage.k8s.io", "v1", "volumesnapshotclasses"
    )
    defaults = [
        c["metadata"]["name"]
        for c in classes["items"]
        if c["metadata"]
        .get("annotations", {})
        .get("snapshot.storage.kubernetes.io/is-default-class")
        == "true"
    ]
    assert defaults == ["standard-snapshots"]
