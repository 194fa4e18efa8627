"""The real-node profile itself: idempotent up, a Ready node with the CSI driver,
and a network that stays on this machine. (That ``down`` leaves the machine as
it was is checked by the ``node_cluster`` fixture when the session ends.)"""

from __future__ import annotations

import json

from kubernetes import client

from patchwarden.devcluster.realnode import NODE_NAME, POD_SUBNET, PROCESSES, RealNodeCluster
from tests.conftest import Cluster
from tests.helpers import wait_for
from tests.node.workloads import busybox


def _groups(dev: RealNodeCluster) -> dict[str, str]:
    return {p: (dev.pids_dir / f"{p}.pgid").read_text() for p in PROCESSES}


def test_up_again_keeps_the_running_node(node_cluster: Cluster) -> None:
    dev = node_cluster.dev
    assert isinstance(dev, RealNodeCluster)
    before = _groups(dev)
    dev.up()
    assert _groups(dev) == before  # nothing restarted
    node = json.loads(node_cluster.kubectl("get", "node", NODE_NAME, "-o", "json"))
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")
    drivers = node_cluster.kubectl(
        "get", "csinode", NODE_NAME, "-o", "jsonpath={.spec.drivers[*].name}"
    )
    assert "hostpath.csi.k8s.io" in drivers


def test_pods_get_an_address_on_the_bridge_and_no_route_off_the_machine(
    node_cluster: Cluster, node_namespace: str
) -> None:
    core = client.CoreV1Api(node_cluster.api)
    core.create_namespaced_pod(
        node_namespace,
        {
            "metadata": {"name": "routes"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "routes",
                        "image": busybox(),
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "ip -4 addr show eth0; echo routes:; ip route"],
                    }
                ],
            },
        },
    )
    wait_for(
        lambda: core.read_namespaced_pod("routes", node_namespace).status.phase == "Succeeded",
        timeout=120,
        what="the routes pod to complete",
    )
    out = node_cluster.kubectl("logs", "-n", node_namespace, "routes")
    assert f"inet {POD_SUBNET.rsplit('.', 1)[0]}." in out, out
    routes = out.split("routes:", 1)[1]
    assert "default" not in routes, out
