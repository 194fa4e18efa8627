"""End to end, on any cluster: the local one by default, or with
PATCHWARDEN_E2E=external the cluster in KUBECONFIG where the chart runs the
operator (the kind workflow in .github/workflows/e2e.yaml). Real images,
real Jobs: busybox `true` succeeds, busybox `false` fails and is rolled back.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tests.conftest import Cluster
from tests.helpers import wait_for
from tests.operator_harness import create, running_operator, system, wait_run, workload

pytestmark = pytest.mark.e2e
EXTERNAL = os.environ.get("PATCHWARDEN_E2E") == "external"
BUSYBOX = "busybox:1.36"
FAIL = {"devcluster.patchwarden.io/outcome": "fail"}  # the local cluster's kwok honours this


def update(command: str) -> dict[str, Any]:
    """The update container. The operator defaults update pods to the restricted Pod
    Security profile (runAsNonRoot); busybox runs as root unless told otherwise, and a
    real kubelet refuses that."""
    return {
        "name": "update",
        "image": BUSYBOX,
        "command": [command],
        "securityContext": {"runAsUser": 65532},
    }


@pytest.fixture
def e2e(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """(an object with .api, namespace) with an operator serving it."""
    with ExitStack() as stack:
        if EXTERNAL:
            api = config.new_client_from_config()
            ns = f"e2e-{uuid.uuid4().hex[:8]}"
            client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
            stack.callback(client.CoreV1Api(api).delete_namespace, ns)
            target: Any = type("External", (), {"api": api})()
        else:
            target = request.getfixturevalue("cluster")
            assert isinstance(target, Cluster)
            target.install_crds()
            ns = request.getfixturevalue("namespace")
            stack.enter_context(running_operator(target, ns, tmp_path))
        yield target, ns


def test_a_real_update_succeeds_and_a_failing_one_is_rolled_back(e2e: tuple[Any, str]) -> None:
    target, ns = e2e
    core, apps = client.CoreV1Api(target.api), client.AppsV1Api(target.api)
    app = {"name": "app", "image": BUSYBOX, "command": ["sleep", "36000"]}
    workload(core, apps, ns, name="good", container=app)
    workload(core, apps, ns, name="bad", container=app)
    for name in ("good", "bad"):
        wait_for(
            lambda n=name: apps.read_namespaced_deployment(n, ns).status.available_replicas == 1,
            timeout=300,
            what=f"deployment {name} available",
        )
    create(
        target,
        ns,
        system(
            "good",
            "SaaS",
            workload_name="good",
            update=update("true"),
        ),
    )
    create(
        target,
        ns,
        system(
            "bad",
            "SaaS",
            workload_name="bad",
            job=FAIL,
            update=update("false"),
        ),
    )
    good = wait_run(target, ns, "good", {"Succeeded", "RolledBack", "Failed"}, timeout=600)
    bad = wait_run(target, ns, "bad", {"Succeeded", "RolledBack", "Failed"}, timeout=600)
    assert good["status"]["phase"] == "Succeeded", good["status"]
    assert bad["status"]["phase"] == "RolledBack", bad["status"]
    restored = core.read_namespaced_persistent_volume_claim("bad-data-0", ns)
    assert restored.spec.data_source.name == bad["status"]["snapshots"][0]["snapshot"]
