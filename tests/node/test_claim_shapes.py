"""Every shape of workload and claims, rolled back on the real node (issue 31).

A ``backup.consistency: Stopped`` StatefulSet once took no snapshot and "restored 0
claims": its claims were counted from replicas the operator had just set to zero, and
Stopped had been tried on the fake node with a Deployment only. Here each shape —
Deployment and StatefulSet, 1 and 3 replicas, one and two claims (mounted claims, or
claim templates), ``Crash`` and ``Stopped``, and a StatefulSet scaled to zero whose
claims still hold data — gets an update Job that overwrites every claim and exits 1.
Each must end ``RolledBack`` with one pre-update snapshot per claim that exists, every
claim reading back its original bytes, and a failed-state snapshot per claim holding
what the Job wrote.

The shapes run side by side under one operator (one system per shape, one namespace):
what is awaited (pods, snapshots, Jobs, rollbacks) is awaited once for all of them,
and each shape is its own test case, reported on its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import Cluster, _fresh_namespace
from tests.helpers import wait_for
from tests.node.workloads import USER, busybox, reader_pod
from tests.operator_harness import ENDED, create, phase, running_operator, runs_of, system

TEMPLATES = ("data", "wal")
SIZE = "64Mi"
PAYLOAD = "payload"
# Each claim gets its own bytes on the workload's first start: the pod and claim names,
# then 20,000 numbered lines (about 110 KB), written once.
WRITE = (
    "trap 'exit 0' TERM; for d in /c/*; do [ -f $d/payload ] || "
    '{ echo "$HOSTNAME $(basename $d)"; seq 1 20000; } > $d/payload; done; '
    "sleep 36000 & wait"
)
OVERWRITE = (
    'for d in /c/*; do echo "update wrote $(basename $d)" > $d/payload; done; sync; '
    "echo 'update: overwrote every claim'; exit 1"
)
ENV = {
    "PATCHWARDEN_SNAPSHOT_TIMEOUT_SECONDS": "240",
    "PATCHWARDEN_ROLLBACK_TIMEOUT_SECONDS": "300",
    "PATCHWARDEN_RUN_POLL_SECONDS": "1",
    # Every shape at once, each a failure: no fleet limit may hold one back.
    "PATCHWARDEN_MAX_CONCURRENT_RUNS": "64",
    "PATCHWARDEN_MAX_RUNS_PER_CUSTOMER": "64",
    "PATCHWARDEN_MAX_ERRORS_PER_WINDOW": "64",
}


@dataclass(frozen=True)
class Shape:
    kind: str
    replicas: int
    """Replicas when the run starts."""
    claims: int
    """Claims the Deployment mounts, or claim templates of the StatefulSet."""
    consistency: str
    ordinals: int | None = None
    """Replicas the StatefulSet had while it wrote its data (then scaled to ``replicas``)."""

    @property
    def name(self) -> str:
        kind = "deploy" if self.kind == "Deployment" else "sts"
        return f"{kind}-r{self.replicas}-c{self.claims}-{self.consistency.lower()}"

    @property
    def written_by(self) -> int:
        return self.replicas if self.ordinals is None else self.ordinals

    def claim_names(self) -> list[str]:
        """The claims that exist for it, as the test made them (not as the operator finds them)."""
        if self.kind == "Deployment":
            return sorted(f"{self.name}-{t}" for t in TEMPLATES[: self.claims])
        return sorted(
            f"{t}-{self.name}-{i}" for t in TEMPLATES[: self.claims] for i in range(self.written_by)
        )


SHAPES = [
    Shape(kind, replicas, claims, consistency)
    for kind in ("Deployment", "StatefulSet")
    for replicas in (1, 3)
    for claims in (1, 2)
    for consistency in ("Crash", "Stopped")
] + [Shape("StatefulSet", 0, 2, c, ordinals=2) for c in ("Crash", "Stopped")]


def _mounts(names: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes = [
        {"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(names)
    ]
    mounts = [{"name": f"v{i}", "mountPath": f"/c/{c}"} for i, c in enumerate(names)]
    return volumes, mounts


def workload(shape: Shape) -> dict[str, Any]:
    labels = {"app": shape.name}
    container: dict[str, Any] = {
        "name": "app",
        "image": busybox(),
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", WRITE],
        "readinessProbe": {
            "exec": {
                "command": ["sh", "-c", "for d in /c/*; do test -s $d/payload || exit 1; done"]
            },
            "periodSeconds": 1,
        },
    }
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": 2,
        "securityContext": {**USER, "fsGroup": 1000},
        "containers": [container],
    }
    spec: dict[str, Any] = {
        "replicas": shape.written_by,
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    if shape.kind == "Deployment":
        pod["volumes"], container["volumeMounts"] = _mounts(shape.claim_names())
    else:
        spec["serviceName"] = shape.name
        spec["volumeClaimTemplates"] = [
            {
                "metadata": {"name": t},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": SIZE}},
                },
            }
            for t in TEMPLATES[: shape.claims]
        ]
        container["volumeMounts"] = [
            {"name": t, "mountPath": f"/c/{t}"} for t in TEMPLATES[: shape.claims]
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": shape.kind,
        "metadata": {"name": shape.name},
        "spec": spec,
    }


def managed_system(shape: Shape) -> dict[str, Any]:
    """SaaS, ``shape.consistency``, an update Job that mounts every claim of the shape,
    overwrites it and exits 1."""
    volumes, mounts = _mounts(shape.claim_names())
    update = {
        "name": "update",
        "image": busybox(),
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", OVERWRITE],
        "securityContext": dict(USER),
        "volumeMounts": mounts,
    }
    body = system(
        shape.name,
        "SaaS",
        update=update,
        customer=shape.name,
        workload={"kind": shape.kind, "name": shape.name},
        backup={"consistency": shape.consistency},
    )
    body["spec"]["updates"]["verifyTimeout"] = "3m"
    body["spec"]["maintenance"]["windows"][0]["duration"] = "2h"
    pod = body["spec"]["updates"]["template"]["spec"]
    pod["securityContext"] = {**USER, "fsGroup": 1000}
    pod["volumes"] = volumes
    return body


def _ready(apps: client.AppsV1Api, ns: str, shape: Shape, replicas: int) -> bool:
    read = (
        apps.read_namespaced_deployment
        if shape.kind == "Deployment"
        else apps.read_namespaced_stateful_set
    )
    st = read(shape.name, ns).status
    return (st.ready_replicas or 0) == replicas and (st.replicas or 0) == replicas


def read_claims(
    cluster: Cluster, ns: str, readers: dict[str, list[str]], tag: str
) -> dict[str, dict[str, str]]:
    """For each reader (name → claims), a pod that mounts its claims and prints, per claim,
    the sha256 and the first line of its payload; all at once. Reader → claim → (sum, line)."""
    core = client.CoreV1Api(cluster.api)
    script = (
        "cd /c; for c in *; do "
        'echo "$c $(sha256sum < $c/payload | cut -c1-64) $(head -n1 $c/payload)"; done'
    )
    for reader, names in readers.items():
        volumes, mounts = _mounts(names)
        core.create_namespaced_pod(ns, reader_pod(f"{tag}-{reader}"[:63], script, volumes, mounts))
    out: dict[str, dict[str, str]] = {}

    def ended(name: str) -> bool:
        return core.read_namespaced_pod(name, ns).status.phase in {"Succeeded", "Failed"}

    for reader in readers:
        name = f"{tag}-{reader}"[:63]
        wait_for(lambda: ended(name), timeout=300, what=f"pod {name} to read its claims")  # noqa: B023
        lines = cluster.kubectl("logs", "-n", ns, name).splitlines()
        out[reader] = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in lines if " " in ln}
        # Even ended, a pod keeps the claims it mounts in use (the claims' protection holds
        # their deletion until it is gone): a run would find it a user outside its workload.
        core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
    return out


@dataclass
class Outcome:
    shape: Shape
    before: dict[str, str]
    after: dict[str, str]
    failed_state: dict[str, str]
    run: dict[str, Any]


def write_data(cluster: Cluster, ns: str) -> None:
    """Every shape's workload, until each has written its claims (and the one scaled to
    zero afterwards has stopped)."""
    apps, core = client.AppsV1Api(cluster.api), client.CoreV1Api(cluster.api)
    for shape in SHAPES:
        if shape.kind == "Deployment":
            for claim in shape.claim_names():
                spec = {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": SIZE}},
                }
                core.create_namespaced_persistent_volume_claim(
                    ns, {"metadata": {"name": claim}, "spec": spec}
                )
            apps.create_namespaced_deployment(ns, workload(shape))
        else:
            apps.create_namespaced_stateful_set(ns, workload(shape))
    waiting = set(SHAPES)

    def written() -> bool:
        waiting.difference_update([s for s in waiting if _ready(apps, ns, s, s.written_by)])
        return not waiting

    wait_for(written, timeout=420, what="every workload to write its data", interval=1)
    scaled = [s for s in SHAPES if s.ordinals is not None]
    for shape in scaled:
        apps.patch_namespaced_stateful_set_scale(
            shape.name, ns, {"spec": {"replicas": shape.replicas}}
        )

    def stopped() -> bool:
        return not any(
            core.list_namespaced_pod(ns, label_selector=f"app={s.name}").items for s in scaled
        )

    wait_for(stopped, timeout=120, what="the pods of the StatefulSets scaled to zero to go")


def run_all(cluster: Cluster, ns: str, log_dir: Path) -> dict[str, dict[str, Any]]:
    """One operator, a system per shape: each shape's run once it has ended."""
    runs: dict[str, dict[str, Any]] = {}

    def ended() -> bool:
        for shape in SHAPES:
            found = [r for r in runs_of(cluster, ns, shape.name) if phase(r) in ENDED]
            if found:
                runs[shape.name] = found[0]
        return len(runs) == len(SHAPES)

    with running_operator(cluster, ns, log_dir, False, **ENV):
        for shape in SHAPES:
            create(cluster, ns, managed_system(shape))
        wait_for(ended, timeout=900, what="every shape's run to end", interval=2)
    return runs


def failed_state_copies(
    cluster: Cluster, ns: str, runs: dict[str, dict[str, Any]]
) -> dict[str, list[str]]:
    """Each failed-state snapshot made into a claim of its own (``fs-<claim>``)."""
    core = client.CoreV1Api(cluster.api)
    copies: dict[str, list[str]] = {}
    for shape in SHAPES:
        restore = (runs[shape.name].get("status") or {}).get("restore") or {}
        for record in restore.get("failedState") or []:
            name = f"fs-{record['claim']}"
            source = {
                "apiGroup": "snapshot.storage.k8s.io",
                "kind": "VolumeSnapshot",
                "name": record["snapshot"],
            }
            spec = {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": SIZE}},
                "dataSource": source,
            }
            core.create_namespaced_persistent_volume_claim(
                ns, {"metadata": {"name": name}, "spec": spec}
            )
            copies.setdefault(shape.name, []).append(name)
    return copies


@pytest.fixture(scope="module")
def outcomes(
    node_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Outcome]]:
    cluster = node_cluster
    cluster.install_crds()
    namespace = _fresh_namespace(cluster, "shapes")
    ns = next(namespace)
    try:
        started = time.monotonic()
        write_data(cluster, ns)
        everything = {s.name: s.claim_names() for s in SHAPES}
        before = read_claims(cluster, ns, everything, "before")
        wrote = time.monotonic() - started
        runs = run_all(cluster, ns, tmp_path_factory.mktemp("shapes"))
        ran = time.monotonic() - started - wrote
        after = read_claims(cluster, ns, everything, "after")
        failed_state = read_claims(cluster, ns, failed_state_copies(cluster, ns, runs), "failed")
        print(
            f"shapes: {len(SHAPES)} shapes, {sum(len(c) for c in everything.values())} claims: "
            f"data written and read in {wrote:.0f}s, runs ended in {ran:.0f}s, "
            f"{time.monotonic() - started:.0f}s in all"
        )
        yield {
            s.name: Outcome(
                s,
                before.get(s.name, {}),
                after.get(s.name, {}),
                {k.removeprefix("fs-"): v for k, v in failed_state.get(s.name, {}).items()},
                runs[s.name],
            )
            for s in SHAPES
        }
    finally:
        next(namespace, None)  # its end deletes the namespace


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_a_failed_update_gives_back_every_claim_of_every_shape(
    shape: Shape, outcomes: dict[str, Outcome]
) -> None:
    got = outcomes[shape.name]
    status = got.run["status"]
    claims = shape.claim_names()
    assert status["phase"] == "RolledBack", status
    assert sorted(r["claim"] for r in status["snapshots"]) == claims
    assert all(r["readyToUse"] for r in status["snapshots"])
    assert sorted(status["restore"]["claims"]) == claims
    assert f"; restored {len(claims)} claims and the workload in " in status["message"]
    assert "exited with code 1" in status["job"]["termination"]
    if shape.consistency == "Stopped":
        assert status["workloads"][0]["stoppedReplicas"] == 0, "scaled back after the snapshots"
    # Every claim reads back the bytes it held before the update, its own.
    assert sorted(got.before) == claims and got.after == got.before
    for claim, line in got.before.items():
        assert not line.split(" ", 1)[1].startswith("update wrote"), (claim, line)
    # Nothing the update wrote is lost: each claim's failed-state snapshot holds it.
    kept = status["restore"]["failedState"]
    assert sorted(r["claim"] for r in kept) == claims and all(r["readyToUse"] for r in kept)
    assert {c: v.split(" ", 1)[1] for c, v in got.failed_state.items()} == {
        c: f"update wrote {c}" for c in claims
    }
    assert status["claims"] == claims, "decided at the start, every ordinal found"
