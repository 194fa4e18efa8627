"""Update runs on a real node: the update Job's container really runs, the
snapshots are real CSI snapshots of the data, and a failed update really gives
the data back, byte for byte.

The operator runs as a process on the host (as ``make run`` does); the chart
test runs it inside the cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from tests.conftest import Cluster
from tests.node.workloads import (
    busybox,
    checksum,
    provisioned_claim,
    read_payload,
    ready_pod,
    statefulset,
    update_system,
)
from tests.operator_harness import ENDED, create, running_operator, wait_run

# Real snapshots and pods take seconds, not the kwok profile's fraction of one.
SLOWER = {
    "PATCHWARDEN_SNAPSHOT_TIMEOUT_SECONDS": "180",
    "PATCHWARDEN_ROLLBACK_TIMEOUT_SECONDS": "240",
    "PATCHWARDEN_RUN_POLL_SECONDS": "1",
}


def snapshot_content(cluster: Cluster, ns: str, snapshot: str) -> dict[str, Any]:
    custom = client.CustomObjectsApi(cluster.api)
    snap = custom.get_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", ns, "volumesnapshots", snapshot
    )
    content = snap["status"]["boundVolumeSnapshotContentName"]
    return custom.get_cluster_custom_object(  # type: ignore[no-any-return]
        "snapshot.storage.k8s.io", "v1", "volumesnapshotcontents", content
    )


def test_a_failed_update_gives_the_data_back_byte_for_byte(
    node_cluster: Cluster, node_namespace: str, tmp_path: Path
) -> None:
    ns, cluster = node_namespace, node_cluster
    cluster.install_crds()
    apps, core = client.AppsV1Api(cluster.api), client.CoreV1Api(cluster.api)
    apps.create_namespaced_stateful_set(ns, statefulset("db", busybox()))
    before_pod = ready_pod(cluster, ns, "db-0")
    original = checksum(cluster, ns, "db-0")
    image = before_pod.spec.containers[0].image

    # The update really overwrites the data, then really fails.
    script = "echo corrupted > /data/payload && sync && echo 'update: overwrote the data' && exit 1"
    with running_operator(cluster, ns, tmp_path, **SLOWER) as op:
        create(cluster, ns, update_system("db", "db", script, claim="data-db-0"))
        run = wait_run(cluster, ns, "db", ENDED, timeout=420)
        assert run["status"]["phase"] == "RolledBack", (run["status"], op.output()[-3000:])

    status = run["status"]
    # The Job ran a real container that wrote to the claim and exited 1; its pod is gone
    # (it kept the claim in use), its log's last lines are in the run's record.
    termination = status["job"]["termination"]
    assert termination.startswith("container update exited with code 1 (Error)"), termination
    assert "update: overwrote the data" in termination, termination
    assert "exited with code 1" in status["message"]
    # The backup was a real CSI snapshot, made before the update.
    [record] = status["snapshots"]
    content = snapshot_content(cluster, ns, record["snapshot"])
    assert content["spec"]["driver"] == "hostpath.csi.k8s.io"
    assert content["status"]["readyToUse"] is True
    assert content["status"].get("snapshotHandle"), content["status"]
    # The claim was recreated from it and holds the original bytes again, read by the
    # workload's own (new) pod running the recorded image.
    claim = core.read_namespaced_persistent_volume_claim("data-db-0", ns)
    assert claim.spec.data_source.name == record["snapshot"]
    after_pod = ready_pod(cluster, ns, "db-0")
    assert after_pod.metadata.uid != before_pod.metadata.uid
    assert after_pod.spec.containers[0].image == image
    assert checksum(cluster, ns, "db-0") == original
    # Nothing was lost: before the claim was replaced, it was snapshotted as the failed
    # update left it; that snapshot is real and holds the update's bytes.
    [kept] = status["restore"]["failedState"]
    assert kept["claim"] == "data-db-0" and kept["readyToUse"]
    assert snapshot_content(cluster, ns, kept["snapshot"])["status"]["readyToUse"] is True
    provisioned_claim(cluster, ns, "failed-state", "64Mi", snapshot=kept["snapshot"])
    assert read_payload(cluster, ns, "failed-state") == "corrupted\n"


def test_a_successful_update_really_runs_and_its_log_is_readable(
    node_cluster: Cluster, node_namespace: str, tmp_path: Path
) -> None:
    ns, cluster = node_namespace, node_cluster
    cluster.install_crds()
    apps = client.AppsV1Api(cluster.api)
    body = update_system(
        "web",
        "web",
        'echo "update: $PATCHWARDEN_CLASSES updates for $PATCHWARDEN_SYSTEM applied"; '
        "cat /data/payload | wc -l",
        claim="data-web-0",
    )
    apps.create_namespaced_stateful_set(ns, statefulset("web", busybox()))
    ready_pod(cluster, ns, "web-0")
    with running_operator(cluster, ns, tmp_path, **SLOWER) as op:
        create(cluster, ns, body)
        run = wait_run(cluster, ns, "web", ENDED, timeout=300)
        assert run["status"]["phase"] == "Succeeded", (run["status"], op.output()[-3000:])
    log = cluster.kubectl("logs", "-n", ns, f"job/{run['status']['job']['name']}")
    # The container saw the operator's variables and the system's data.
    assert "update: feature,security updates for web applied" in log, log
    assert "100000" in log, log
    ready_pod(cluster, ns, "web-0", timeout=30)
    sts = apps.read_namespaced_stateful_set("web", ns)
    assert sts.status.ready_replicas == 1

    # The snapshot the run took is real and restorable: a claim made from it is
    # provisioned by the CSI driver.
    [record] = run["status"]["snapshots"]
    provisioned_claim(cluster, ns, "copy", "64Mi", snapshot=record["snapshot"])


def test_exec_hooks_run_in_the_workloads_container(
    node_cluster: Cluster, node_namespace: str, tmp_path: Path
) -> None:
    """A pre-update exec hook really runs in the workload's container before the snapshot
    (its output recorded), a post-update one after the update; a failing one ends the run
    with nothing changed."""
    ns, cluster = node_namespace, node_cluster
    cluster.install_crds()
    apps = client.AppsV1Api(cluster.api)
    for name in ("good", "bad"):
        apps.create_namespaced_stateful_set(ns, statefulset(name, busybox()))
        ready_pod(cluster, ns, f"{name}-0")
    flush = ["sh", "-c", "echo checkpoint > /data/hooked && sync && cat /data/hooked"]
    good = update_system("good", "good", "echo updated", claim=None)
    good["spec"]["updates"]["hooks"] = {
        "pre": [{"name": "flush", "exec": {"container": "app", "command": flush}}],
        "post": [
            {"name": "check", "exec": {"container": "app", "command": ["cat", "/data/hooked"]}}
        ],
    }
    bad = update_system("bad", "bad", "echo updated", claim=None)
    refuse = ["sh", "-c", "echo cannot flush >&2; exit 3"]
    bad["spec"]["updates"]["hooks"] = {
        "pre": [{"name": "flush", "exec": {"container": "app", "command": refuse}}]
    }
    with running_operator(cluster, ns, tmp_path, **SLOWER) as op:
        create(cluster, ns, good)
        create(cluster, ns, bad)
        ran = wait_run(cluster, ns, "good", ENDED, timeout=420)
        refused = wait_run(cluster, ns, "bad", ENDED, timeout=240)
        assert ran["status"]["phase"] == "Succeeded", (ran["status"], op.output()[-3000:])
    hooks = {(h["stage"], h["name"]): h for h in ran["status"]["hooks"]}
    assert hooks[("pre", "flush")]["state"] == "Succeeded"
    assert hooks[("pre", "flush")]["output"] == "checkpoint\n"
    assert hooks[("post", "check")]["output"] == "checkpoint\n", "after the update, same data"
    assert (
        cluster.kubectl("exec", "-n", ns, "good-0", "-c", "app", "--", "cat", "/data/hooked")
        == "checkpoint\n"
    )
    status = refused["status"]
    assert status["phase"] == "Failed", status
    assert status["message"].startswith(
        "pre-update hook flush failed: exited with code 3 in pod bad-0"
    )
    assert status["message"].endswith("; nothing was changed")
    assert "cannot flush" in status["hooks"][0]["output"]
    assert not status.get("snapshots"), "stopped before the snapshots"


def test_restore_data_never_leaves_the_data_as_the_update_wrote_it(
    node_cluster: Cluster, node_namespace: str, tmp_path: Path
) -> None:
    """Issue 34, section 4, on real data: ``rollback.restoreData: Never`` rolls back the
    workload's spec only; the claim is the same volume, holding what the update wrote, and
    no failed-state snapshot was needed (nothing was replaced)."""
    ns, cluster = node_namespace, node_cluster
    cluster.install_crds()
    apps, core = client.AppsV1Api(cluster.api), client.CoreV1Api(cluster.api)
    apps.create_namespaced_stateful_set(ns, statefulset("kept", busybox()))
    before_pod = ready_pod(cluster, ns, "kept-0")
    claim_before = core.read_namespaced_persistent_volume_claim("data-kept-0", ns)
    script = "echo migrated > /data/payload && sync && exit 1"
    body = update_system("kept", "kept", script, claim="data-kept-0")
    body["spec"]["rollback"] = {"restoreData": "Never"}
    with running_operator(cluster, ns, tmp_path, **SLOWER) as op:
        create(cluster, ns, body)
        run = wait_run(cluster, ns, "kept", ENDED, timeout=420)
        assert run["status"]["phase"] == "RolledBack", (run["status"], op.output()[-3000:])
    status = run["status"]
    assert status["restore"]["data"] is False and not status["restore"].get("failedState")
    assert status["message"].endswith("its claims data-kept-0 keep what the update wrote")
    claim = core.read_namespaced_persistent_volume_claim("data-kept-0", ns)
    assert claim.metadata.uid == claim_before.metadata.uid and claim.spec.data_source is None
    after_pod = ready_pod(cluster, ns, "kept-0")
    assert after_pod.spec.containers[0].image == before_pod.spec.containers[0].image
    read = cluster.kubectl("exec", "-n", ns, "kept-0", "-c", "app", "--", "cat", "/data/payload")
    assert read == "migrated\n", read
    [record] = status["snapshots"]  # the pre-update copy is still there, to go back by hand
    assert snapshot_content(cluster, ns, record["snapshot"])["status"]["readyToUse"] is True
