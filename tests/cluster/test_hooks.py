"""Hook Jobs on the real API server (kwok plays their pods): a failing pre-update hook
ends the run with nothing changed; a failing post-update hook rolls the update back; the
run records each hook. (exec hooks need a real kubelet: tests/node.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import Cluster
from tests.operator_harness import (
    ENDED,
    create,
    phase,
    running_operator,
    system,
    wait_run,
    workload,
)

pytestmark = pytest.mark.usefixtures("crds")
FAIL = {"devcluster.patchwarden.io/outcome": "fail"}


def hook(name: str, **annotations: str) -> dict[str, Any]:
    return {
        "name": name,
        "job": {
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {"containers": [{"name": "h", "image": "example.com/hook:1"}]},
            }
        },
        "timeout": "1m",
    }


def test_hook_jobs_run_around_the_update_and_their_failures_stop_or_roll_back(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    for name in ("ok", "pre", "post"):
        workload(core, apps, namespace, name=name)
    bodies = {
        "ok": {"pre": [hook("prepare")], "post": [hook("smoke")]},
        "pre": {"pre": [hook("prepare", **FAIL)]},
        "post": {"post": [hook("smoke", **FAIL)]},
    }
    with running_operator(cluster, namespace, tmp_path):
        for name, hooks in bodies.items():
            body = system(name, "SaaS", workload_name=name)
            body["spec"]["updates"]["hooks"] = hooks
            create(cluster, namespace, body)
        ok = wait_run(cluster, namespace, "ok", ENDED, timeout=120)
        pre = wait_run(cluster, namespace, "pre", ENDED, timeout=120)
        post = wait_run(cluster, namespace, "post", ENDED, timeout=120)
    assert phase(ok) == "Succeeded", ok["status"]
    assert [(h["name"], h["stage"], h["state"]) for h in ok["status"]["hooks"]] == [
        ("prepare", "pre", "Succeeded"),
        ("smoke", "post", "Succeeded"),
    ]
    assert phase(pre) == "Failed", pre["status"]
    assert pre["status"]["message"].startswith("pre-update hook prepare failed: ")
    assert pre["status"]["message"].endswith("; nothing was changed")
    assert not pre["status"].get("snapshots") and not pre["status"].get("job"), "nothing else ran"
    assert phase(post) == "RolledBack", post["status"]
    assert post["status"]["failure"].startswith("post-update hook smoke failed: ")
    jobs = {
        j.metadata.name for j in client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items
    }
    assert (
        f"{ok['metadata']['name']}-pre-prepare" in jobs
        and f"{ok['metadata']['name']}-post-smoke" in jobs
    )


def test_a_ready_update_bakes_before_it_succeeds(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    """Issue 34, section 3: verification no longer ends the moment pods are ready; the run
    is Baking for updates.bakeTime, then Succeeded with what ended the bake."""
    workload(core, apps, namespace, name="baked")
    with running_operator(cluster, namespace, tmp_path):
        body = system("baked", "SaaS", workload_name="baked")
        body["spec"]["updates"]["bakeTime"] = "6s"
        create(cluster, namespace, body)
        baking = wait_run(cluster, namespace, "baked", {"Baking"}, timeout=60)
        assert baking["status"]["message"].startswith("ready; baking until ")
        done = wait_run(cluster, namespace, "baked", ENDED, timeout=60)
    assert phase(done) == "Succeeded", done["status"]
    bake = done["status"]["bake"]
    assert bake["result"] == "Passed" and bake["restarts"] == 0, bake
    assert bake["endTime"] >= bake["until"] > bake["startTime"]
