"""Status that GitOps tools understand: kstatus (Flux's library), kubectl wait,
and `patchwarden status`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kubernetes import client

from tests.conftest import Cluster
from tests.helpers import wait_for
from tests.operator_harness import (
    condition,
    create,
    get,
    now_plus,
    running_operator,
    system,
    wait_run,
    workload,
)


def kstatus(tools: Path, objects: list[dict[str, object]]) -> dict[str, str]:
    proc = subprocess.run(
        [str(tools / "kstatus")],
        input="\n".join(json.dumps(o) for o in objects),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return {r["name"]: r["status"] for r in map(json.loads, proc.stdout.splitlines())}


def test_kstatus_kubectl_wait_and_patchwarden_status(
    cluster: Cluster, namespace: str, tools: Path, tmp_path: Path
) -> None:
    cluster.install_crds()
    core, apps = client.CoreV1Api(cluster.api), client.AppsV1Api(cluster.api)
    workload(core, apps, namespace)
    with running_operator(cluster, namespace, tmp_path):
        create(cluster, namespace, system("later", "SaaS", window_start=now_plus(86400)))
        create(cluster, namespace, system("ghost", "SaaS", workload_name="missing"))
        create(cluster, namespace, system("now", "SaaS"))
        run = wait_run(cluster, namespace, "now", {"Succeeded"})
        for name in ("later", "ghost"):
            wait_for(
                lambda n=name: condition(get(cluster, namespace, "ManagedSystem", n), "Ready"),
                timeout=30,
                what=f"{name} reconciled",
            )
        out = cluster.kubectl(
            "wait", "-n", namespace, "--for=condition=Ready", "--timeout=30s", "msys/later"
        )
        assert "condition met" in out
        objects = [get(cluster, namespace, "ManagedSystem", n) for n in ("later", "ghost")]
        objects.append(get(cluster, namespace, "UpdateRun", run["metadata"]["name"]))
        assert kstatus(tools, objects) == {
            "later": "Current",
            "ghost": "Failed",
            run["metadata"]["name"]: "Current",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "patchwarden", "status", "-n", namespace, "-o", "json"],
            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
            capture_output=True,
            text=True,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["systems"]}
    assert set(rows) == {"later", "ghost", "now"}
    assert (
        rows["now"]["result"] == "Succeeded" and rows["now"]["lastRun"] == run["metadata"]["name"]
    )
    assert rows["later"]["model"] == "SaaS" and rows["later"]["eligible"] is True
    assert rows["later"]["nextWindow"] and rows["ghost"]["ready"] == "False"
