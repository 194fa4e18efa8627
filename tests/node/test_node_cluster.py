"""The real-node profile itself: idempotent up, a Ready node with the CSI driver,
and a network that stays on this machine. (That ``down`` leaves the machine as
it was is checked by the ``node_cluster`` fixture when the session ends.)"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from kubernetes import client

from patchwarden_dev.devcluster.realnode import NODE_NAME, POD_SUBNET, PROCESSES, RealNodeCluster
from tests.conftest import Cluster
from tests.helpers import wait_for
from tests.node.workloads import busybox, provisioned_claim


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


def _group_members(pgid: int) -> dict[int, str]:
    """pid -> command name of the live processes in process group ``pgid``."""
    members = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members[int(proc.name)] = (proc / "comm").read_text().strip()
        except (OSError, IndexError, ValueError):
            continue
    return members


def test_a_crashed_csi_driver_comes_back_and_provisions_again(
    node_cluster: Cluster, node_namespace: str
) -> None:
    dev = node_cluster.dev
    assert isinstance(dev, RealNodeCluster)
    pgid = int((dev.pids_dir / "hostpathplugin.pgid").read_text())
    [driver] = [pid for pid, name in _group_members(pgid).items() if name == "hostpathplugin"]
    os.kill(driver, signal.SIGKILL)
    wait_for(
        lambda: "supervise: " in (dev.logs_dir / "hostpathplugin.log").read_text(),
        timeout=10,
        what="the supervisor to notice the driver's death",
    )
    wait_for(
        lambda: [
            p for p, n in _group_members(pgid).items() if n == "hostpathplugin" and p != driver
        ],
        timeout=30,
        what="a new driver process",
    )
    # A claim made after the driver's restart is provisioned.
    provisioned_claim(node_cluster, node_namespace, "after-crash", "8Mi")
    assert all(dev.running(p) for p in PROCESSES)
