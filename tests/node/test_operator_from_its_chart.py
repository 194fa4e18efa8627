"""The operator as users run it: its image built from the Dockerfile (buildah),
installed with the Helm chart, running in the cluster as the chart's
ServiceAccount, carrying an update and a rollback through on the real node.

The real-node cluster has no kube-proxy, so pods cannot reach the API server's
Service: the operator runs with ``hostNetwork`` and the API server's loopback
address, and serves /metrics on 127.0.0.1 only, scraped here from the node.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
import yaml
from kubernetes import client

from patchwarden_dev.devcluster import images
from patchwarden_dev.devcluster.realnode import RealNodeCluster, free_port
from tests.conftest import REPO, Cluster
from tests.e2e import test_e2e
from tests.helpers import wait_for
from tests.node.workloads import busybox, ready_pod

CHART = REPO / "charts" / "patchwarden"
RELEASE, RELEASE_NS = "pw", "patchwarden-system"


def helm(cluster: Cluster, *args: str) -> str:
    proc = subprocess.run(
        [str(cluster.tools / "helm"), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture
def installed(node_cluster: Cluster) -> Iterator[int]:
    """The chart installed with the locally built image; yields the metrics port."""
    dev = node_cluster.dev
    assert isinstance(dev, RealNodeCluster)
    image = images.operator_image(dev.cache_dir, REPO)
    dev.import_image(image)
    repository, tag = image.name.rsplit(":", 1)
    server = urlparse(
        yaml.safe_load(node_cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    )
    port = free_port()
    api_env = [
        {"name": "KUBERNETES_SERVICE_HOST", "value": server.hostname},
        {"name": "KUBERNETES_SERVICE_PORT", "value": str(server.port)},
    ]
    helm(
        node_cluster,
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        "--set",
        f"image.repository={repository},image.tag={tag},image.pullPolicy=Never",
        "--set",
        f"replicaCount=1,hostNetwork=true,metricsAddress=127.0.0.1,metricsPort={port}",
        "--set",
        "settings.runPollSeconds=1,settings.snapshotTimeoutSeconds=180,"
        "settings.rollbackTimeoutSeconds=240,settings.resyncSeconds=5",
        "--set-json",
        f"extraEnv={json.dumps(api_env)}",
        "--wait",
        "--timeout",
        "5m",
    )
    try:
        yield port
    finally:
        helm(node_cluster, "uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait")


def test_the_chart_runs_the_operator_through_an_update_and_a_rollback(
    node_cluster: Cluster, node_namespace: str, installed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns, cluster = node_namespace, node_cluster
    core = client.CoreV1Api(cluster.api)
    [pod] = core.list_namespaced_pod(
        RELEASE_NS, label_selector="app.kubernetes.io/name=patchwarden"
    ).items
    # It runs as the chart's ServiceAccount (its only credentials are that account's token).
    assert pod.spec.service_account_name == f"{RELEASE}-patchwarden"
    ready_pod(cluster, RELEASE_NS, pod.metadata.name, timeout=120)

    # The tests/e2e scenario, as on any cluster: busybox `true` succeeds, `false` really
    # fails and is rolled back (with the locally built busybox).
    monkeypatch.setattr(test_e2e, "BUSYBOX", busybox())
    try:
        test_e2e.test_a_real_update_succeeds_and_a_failing_one_is_rolled_back((cluster, ns))
    except AssertionError:
        print(cluster.kubectl("logs", "-n", RELEASE_NS, pod.metadata.name, "--tail=80"))
        raise
    apps = client.AppsV1Api(cluster.api)
    wait_for(
        lambda: apps.read_namespaced_deployment("bad", ns).status.available_replicas == 1,
        timeout=120,
        what="the rolled-back deployment available again",
    )

    # /metrics, scraped from the node (the operator shares its network namespace).
    def counted(text: str, system_name: str, result: str) -> bool:
        return any(
            line.startswith("patchwarden_update_runs_total{")
            and f'system="{system_name}"' in line
            and f'result="{result}"' in line
            and line.endswith(" 1.0")
            for line in text.splitlines()
        )

    def scrape() -> bool:
        # The result series exist at 0 from the first look: wait for the values.
        with urllib.request.urlopen(f"http://127.0.0.1:{installed}/metrics", timeout=5) as r:
            text: str = r.read().decode()
        return counted(text, "good", "Succeeded") and counted(text, "bad", "RolledBack")

    wait_for(scrape, timeout=30, what="both runs counted in the operator's /metrics")
