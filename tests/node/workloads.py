"""Objects for the real-node tests: a StatefulSet that really writes data, and
ManagedSystems whose update Job really runs a container on the node."""

from __future__ import annotations

import copy
from typing import Any

from kubernetes import client

from patchwarden_dev.devcluster import images
from tests.conftest import Cluster
from tests.helpers import wait_for
from tests.operator_harness import system

USER = {"runAsUser": 1000, "runAsGroup": 1000}
PAYLOAD = "/data/payload"
# Known data: 100,000 numbered lines (588,895 bytes), written once on the first start.
WRITE_ONCE = f"trap 'exit 0' TERM; [ -f {PAYLOAD} ] || seq 1 100000 > {PAYLOAD}; sleep 36000 & wait"


def busybox() -> str:
    return images.busybox_name()


def statefulset(name: str, image: str) -> dict[str, Any]:
    """One replica writing :data:`PAYLOAD` on its claim ``data-<name>-0``; Ready once written."""
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "securityContext": {**USER, "fsGroup": 1000},
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": ["sh", "-c", WRITE_ONCE],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            "readinessProbe": {
                                "exec": {"command": ["test", "-s", PAYLOAD]},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "64Mi"}},
                    },
                }
            ],
        },
    }


def update_system(
    name: str, workload: str, script: str, claim: str | None = None
) -> dict[str, Any]:
    """A SaaS system over StatefulSet ``workload`` whose update Job runs ``script`` in
    busybox (as user 1000, with ``claim`` mounted at /data when given)."""
    container: dict[str, Any] = {
        "name": "update",
        "image": busybox(),
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
        "securityContext": copy.deepcopy(USER),
    }
    body = system(
        name,
        "SaaS",
        update=container,
        workload={"kind": "StatefulSet", "name": workload},
    )
    body["spec"]["updates"]["verifyTimeout"] = "2m"
    pod = body["spec"]["updates"]["template"]["spec"]
    pod["securityContext"] = {**USER, "fsGroup": 1000}
    if claim:
        container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
        pod["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    return body


def ready_pod(cluster: Cluster, ns: str, name: str, timeout: float = 180) -> client.V1Pod:
    """Pod ``name`` once it is Running with every container ready."""
    core = client.CoreV1Api(cluster.api)

    def probe() -> client.V1Pod | None:
        try:
            pod = core.read_namespaced_pod(name, ns)
        except client.ApiException:
            return None
        statuses = pod.status.container_statuses or []
        running = pod.status.phase == "Running" and statuses
        return pod if running and all(s.ready for s in statuses) else None

    return wait_for(probe, timeout=timeout, what=f"pod {ns}/{name} Running and Ready")


def checksum(cluster: Cluster, ns: str, pod: str) -> str:
    """sha256 of :data:`PAYLOAD`, computed inside the running pod (``kubectl exec``)."""
    out = cluster.kubectl("exec", "-n", ns, pod, "-c", "app", "--", "sha256sum", PAYLOAD)
    return out.split()[0]


def provisioned_claim(
    cluster: Cluster, ns: str, name: str, size: str, snapshot: str | None = None
) -> None:
    """Create claim ``name`` (from VolumeSnapshot ``snapshot`` when given) and wait until
    the CSI driver has provisioned it (Bound)."""
    core = client.CoreV1Api(cluster.api)
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if snapshot:
        spec["dataSource"] = {
            "apiGroup": "snapshot.storage.k8s.io",
            "kind": "VolumeSnapshot",
            "name": snapshot,
        }
    core.create_namespaced_persistent_volume_claim(ns, {"metadata": {"name": name}, "spec": spec})
    wait_for(
        lambda: core.read_namespaced_persistent_volume_claim(name, ns).status.phase == "Bound",
        timeout=120,
        what=f"claim {name} to be provisioned" + (f" from {snapshot}" if snapshot else ""),
    )


def read_payload(cluster: Cluster, ns: str, claim: str, command: str = "head -c 64") -> str:
    """What ``command`` prints of :data:`PAYLOAD` on ``claim``, read by a pod of its own."""
    core = client.CoreV1Api(cluster.api)
    name = f"read-{claim}"
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    mounts = [{"name": "data", "mountPath": "/data"}]
    core.create_namespaced_pod(ns, reader_pod(name, f"{command} {PAYLOAD}", volumes, mounts))
    wait_for(
        lambda: core.read_namespaced_pod(name, ns).status.phase == "Succeeded",
        timeout=120,
        what=f"pod {name} to read claim {claim}",
    )
    return cluster.kubectl("logs", "-n", ns, name)


def reader_pod(
    name: str, script: str, volumes: list[dict[str, Any]], mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    """A pod that runs ``script`` once in busybox (as user 1000) with the claims mounted."""
    container = {
        "name": "read",
        "image": busybox(),
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
        "volumeMounts": mounts,
    }
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "securityContext": {**USER, "fsGroup": 1000},
            "containers": [container],
            "volumes": volumes,
        },
    }
