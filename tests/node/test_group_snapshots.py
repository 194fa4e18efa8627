"""One system of two workloads on a real node, backed up by one VolumeGroupSnapshot
(``backup.consistency: Group``) with both workloads frozen around it: a failed update
rolls back both, each claim restored from its member of the group, byte for byte
(issue 34, part 2)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import Cluster
from tests.node.test_runs_on_a_real_node import SLOWER
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

FROZEN = "/data/.frozen"


def freeze_hook(workload: str) -> dict[str, Any]:
    """Quiesce by a marker the snapshot must hold (it is cut between freeze and thaw)."""
    return {
        "name": workload,
        "workload": workload,
        "container": "app",
        "freeze": ["sh", "-c", f"date +%s > {FROZEN} && sync"],
        "thaw": ["sh", "-c", f"rm -f {FROZEN}"],
        "timeout": "20s",
    }


def test_a_group_snapshot_of_two_workloads_frozen_around_it_restores_both_byte_for_byte(
    node_cluster: Cluster, node_namespace: str, tmp_path: Path
) -> None:
    ns, cluster = node_namespace, node_cluster
    cluster.install_crds()
    apps = client.AppsV1Api(cluster.api)
    core = client.CoreV1Api(cluster.api)
    for name in ("db", "app"):
        apps.create_namespaced_stateful_set(ns, statefulset(name, busybox()))
    originals = {}
    for name in ("db", "app"):
        ready_pod(cluster, ns, f"{name}-0")
        originals[name] = checksum(cluster, ns, f"{name}-0")

    # The update overwrites the database's data and fails: both workloads roll back.
    script = "echo corrupted > /data/payload && sync && exit 1"
    body = update_system("pair", "db", script, claim="data-db-0")
    del body["spec"]["workload"]
    body["spec"]["workloads"] = [
        {"kind": "StatefulSet", "name": "db", "role": "database"},
        {"kind": "StatefulSet", "name": "app", "role": "app"},
    ]
    body["spec"]["backup"] = {
        "consistency": "Group",
        "freeze": [freeze_hook("db"), freeze_hook("app")],
        "maxFreeze": "90s",
    }
    with running_operator(cluster, ns, tmp_path, **SLOWER) as op:
        create(cluster, ns, body)
        run = wait_run(cluster, ns, "pair", ENDED, timeout=480)
        assert run["status"]["phase"] == "RolledBack", (run["status"], op.output()[-3000:])
    status = run["status"]

    # One group snapshot over both claims, its members recorded claim by claim.
    group = status["groupSnapshot"]
    assert group["readyToUse"] and group["cutTime"], group
    members = {r["claim"]: r["snapshot"] for r in status["snapshots"]}
    assert sorted(members) == ["data-app-0", "data-db-0"]
    custom = client.CustomObjectsApi(cluster.api)
    vgs = custom.get_namespaced_custom_object(
        "groupsnapshot.storage.k8s.io", "v1", ns, "volumegroupsnapshots", group["name"]
    )
    assert vgs["status"]["readyToUse"] is True
    for claim, snapshot in members.items():
        snap = custom.get_namespaced_custom_object(
            "snapshot.storage.k8s.io", "v1", ns, "volumesnapshots", snapshot
        )
        owners = [o["name"] for o in snap["metadata"].get("ownerReferences") or []]
        assert owners == [group["name"]] and snap["spec"]["source"] == {
            "persistentVolumeClaimName": claim
        }

    # Both frozen first (in order), thawed after the cut (in reverse order); how long.
    freeze = status["freeze"]
    assert [(h["stage"], h["name"], h["state"]) for h in freeze["hooks"]] == [
        ("freeze", "db", "Succeeded"),
        ("freeze", "app", "Succeeded"),
        ("thaw", "app", "Succeeded"),
        ("thaw", "db", "Succeeded"),
    ]
    assert 0 < freeze["frozenSeconds"] < 90
    print(f"\nGroup snapshot of 2 claims: the workloads frozen {freeze['frozenSeconds']:.1f} s")

    # Each claim recreated from its member, read by the workload's own new pod: the
    # original bytes again, for both (the app's data was not touched by the update, but a
    # system rolls back as a whole).
    for name in ("db", "app"):
        claim = core.read_namespaced_persistent_volume_claim(f"data-{name}-0", ns)
        assert claim.spec.data_source.name == members[f"data-{name}-0"]
        ready_pod(cluster, ns, f"{name}-0")
        assert checksum(cluster, ns, f"{name}-0") == originals[name], name
    # The snapshot was cut while both were frozen: the freeze's marker is in the backups
    # (the live claims lost it at the thaw).
    for name in ("db", "app"):
        marker = cluster.kubectl(
            "exec", "-n", ns, f"{name}-0", "-c", "app", "--", "cat", FROZEN
        ).strip()
        assert float(marker) > 0, (name, marker)
    # The failed update's bytes are kept in the failed-state snapshot of db's claim.
    kept = {r["claim"]: r["snapshot"] for r in status["restore"]["failedState"]}
    assert sorted(kept) == ["data-app-0", "data-db-0"]
    provisioned_claim(cluster, ns, "failed-db", "64Mi", snapshot=kept["data-db-0"])
    assert read_payload(cluster, ns, "failed-db") == "corrupted\n"
    assert (
        "restored 2 claims and the workloads (StatefulSet db, StatefulSet app)"
        in (status["message"])
    )


@pytest.mark.parametrize("consistency", ["Crash", "Stopped", "Group"])
def test_what_each_consistency_costs_in_downtime(
    node_cluster: Cluster, node_namespace: str, tmp_path: Path, consistency: str
) -> None:
    """One successful update of a StatefulSet in each mode, its pod's readiness sampled
    every 0.1 s while the run lasts: ``Crash`` and ``Group`` never take it down (``Group``
    freezes it instead, for the time the run records), ``Stopped`` does. Prints the
    figures docs/workloads.md quotes."""
    ns, cluster = node_namespace, node_cluster
    cluster.install_crds()
    apps = client.AppsV1Api(cluster.api)
    apps.create_namespaced_stateful_set(ns, statefulset("db", busybox()))
    ready_pod(cluster, ns, "db-0")
    body = update_system("db", "db", "echo updated", claim=None)
    body["spec"]["backup"] = {"consistency": consistency}
    if consistency == "Group":
        body["spec"]["backup"]["freeze"] = [freeze_hook("db")]
    down, samples = 0.0, 0
    with running_operator(cluster, ns, tmp_path, **SLOWER) as op:
        create(cluster, ns, body)
        started = time.monotonic()
        last = started
        while True:
            runs = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
                "patchwarden.io", "v1alpha1", ns, "updateruns"
            )["items"]
            phase = (runs[0].get("status") or {}).get("phase") if runs else None
            if phase in ENDED:
                break
            assert time.monotonic() - started < 300, op.output()[-3000:]
            now = time.monotonic()
            if not (apps.read_namespaced_stateful_set("db", ns).status.ready_replicas or 0):
                down += now - last
            last, samples = now, samples + 1
            time.sleep(0.1)
        run = wait_run(cluster, ns, "db", ENDED, timeout=30)
    status = run["status"]
    assert status["phase"] == "Succeeded", (status, op.output()[-3000:])
    frozen = (status.get("freeze") or {}).get("frozenSeconds")
    print(
        f"\n{consistency}: the workload unavailable {down:.1f} s, frozen "
        f"{frozen if frozen is not None else 0:.1f} s, the run {time.monotonic() - started:.1f} s "
        f"({samples} samples)"
    )
    if consistency == "Stopped":
        assert down > 1, "stopped for its snapshots"
    else:
        assert down < 0.5, f"{consistency} never takes the workload down"
    assert (frozen is not None) == (consistency == "Group")
