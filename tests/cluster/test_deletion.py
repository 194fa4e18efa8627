"""Deleting a system (or a run) while its update is in progress (issue 18, part 6).

The promise holds through a GitOps prune or an offboarding: the deletion waits
for the run; a run that may have changed the workload is rolled back first, one
that has not is cancelled, and only then does the system go.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from patchwarden.api.common import GROUP, VERSION
from tests.conftest import Cluster
from tests.helpers import wait_for
from tests.operator_harness import (
    Operator,
    create,
    get,
    items,
    running_operator,
    system,
    wait_run,
    workload,
)

BROKEN = "example.com/app:2.0-broken"


pytestmark = pytest.mark.usefixtures("crds")


def gone(cluster: Cluster, ns: str, kind: str, name: str) -> bool:
    try:
        get(cluster, ns, kind, name)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def reasons(core: client.CoreV1Api, ns: str, name: str) -> list[str]:
    return [
        e.reason for e in core.list_namespaced_event(ns).items if e.involved_object.name == name
    ]


def image(apps: client.AppsV1Api, ns: str) -> str:
    return str(apps.read_namespaced_deployment("app", ns).spec.template.spec.containers[0].image)


def start_update(cluster: Cluster, ns: str, apps: client.AppsV1Api) -> str:
    """A system whose update Job runs for a minute; once it runs, the "update" changes the
    workload's image. Returns the run's name."""
    create(cluster, ns, system("db", "SaaS", job={"devcluster.patchwarden.io/duration": "60s"}))
    run = wait_run(cluster, ns, "db", {"Updating"})
    # Its Job exists (entering Updating comes a step before the Job is created: a run
    # deleted in between is cancelled, not rolled back — nothing changed yet).
    wait_for(
        lambda: client.BatchV1Api(cluster.api).list_namespaced_job(ns).items,
        timeout=30,
        what="the update Job",
    )
    apps.patch_namespaced_deployment(
        "app",
        ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": BROKEN}]}}}},
    )
    msys = get(cluster, ns, "ManagedSystem", "db")
    assert msys["metadata"]["finalizers"] == ["patchwarden.io/active-run"]
    return str(run["metadata"]["name"])


@pytest.mark.parametrize("propagation", ["Background", "Foreground"])
def test_deleting_a_system_mid_update_rolls_it_back_before_the_system_goes(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    propagation: str,
) -> None:
    """kubectl's default (Background) and Argo CD's prune default (Foreground): in the
    second the garbage collector deletes the run first, and the run's own finalizer holds
    it until the rollback has ended."""
    workload(core, apps, namespace)
    run = start_update(cluster, namespace, apps)
    client.CustomObjectsApi(cluster.api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "managedsystems", "db", propagation_policy=propagation
    )
    wait_for(
        lambda: gone(cluster, namespace, "ManagedSystem", "db"),
        timeout=90,
        what="the system to go once its run has ended",
    )
    assert image(apps, namespace) == "example.com/app:1.0", "rolled back before it went"
    assert "RolledBack" in reasons(core, namespace, run)
    wait_for(
        lambda: gone(cluster, namespace, "UpdateRun", run),
        timeout=30,
        what="the run to go with its system",
    )
    # The pre-update and failed-state snapshots stay: they are not owned by the system.
    snaps = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", namespace, "volumesnapshots"
    )["items"]
    names = {s["metadata"]["name"] for s in snaps}
    assert f"{run}-app-data-0" in names and f"{run}-app-data-0-failed" in names


def test_deleting_the_run_mid_update_rolls_back_then_lets_it_go(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    workload(core, apps, namespace)
    run = start_update(cluster, namespace, apps)
    client.CustomObjectsApi(cluster.api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "updateruns", run
    )
    wait_for(
        lambda: gone(cluster, namespace, "UpdateRun", run),
        timeout=90,
        what="the run to go once rolled back",
    )
    assert image(apps, namespace) == "example.com/app:1.0", operator.output()[-6000:]
    assert "RolledBack" in reasons(core, namespace, run)
    job = client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items
    assert all(j.spec.suspend for j in job), "the running Job was stopped, not left running"
    # The system stays, without a finalizer now that no run is in progress.
    wait_for(
        lambda: not get(cluster, namespace, "ManagedSystem", "db")["metadata"].get("finalizers"),
        timeout=30,
        what="the system's finalizer to go with its run",
    )


def test_deleting_a_system_before_its_update_cancels_the_run_and_changes_nothing(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    """Its snapshots never become ready (a broken class): the run waits in Snapshotting
    when the system is deleted, and stops there."""
    workload(core, apps, namespace)
    before = apps.read_namespaced_deployment("app", namespace).metadata.generation
    with running_operator(cluster, namespace, tmp_path):
        create(
            cluster,
            namespace,
            system("db", "SaaS", backup={"volumeSnapshotClassName": "broken-snapshots"}),
        )
        run = wait_run(cluster, namespace, "db", {"Snapshotting"})["metadata"]["name"]
        client.CustomObjectsApi(cluster.api).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "managedsystems", "db"
        )
        wait_for(
            lambda: gone(cluster, namespace, "ManagedSystem", "db"),
            timeout=60,
            what="the system to go",
        )
    assert "Cancelled" in reasons(core, namespace, run)
    assert client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items == []
    assert apps.read_namespaced_deployment("app", namespace).metadata.generation == before


def test_deleting_the_namespace_mid_update_is_not_held_up(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    """Kubernetes deletes the workload, its claims and its snapshots with the namespace:
    there is nothing left to roll back into, and no object may be created there any more.
    The run ends (Failed, saying why) and lets the namespace go. The operator serves every
    namespace here, as the chart installs it: one serving named namespaces only stops
    serving a namespace once it is terminating (kopf's namespace observer), and the
    finalizers of a run in progress there then stay (docs/operations.md)."""
    workload(core, apps, namespace)
    with running_operator(cluster, namespace, tmp_path, clusterwide=True) as operator:
        run = start_update(cluster, namespace, apps)
        core.delete_namespace(namespace)
        _wait_gone(core, cluster, namespace)
        log = operator.output()
    # How it ends depends on what the namespace controller deleted first (the workload, a
    # snapshot, or the right to create one): it ends, Failed, and holds nothing.
    assert f"run {namespace}/{run}: Failed: " in log, log[-4000:]


def _wait_gone(core: client.CoreV1Api, cluster: Cluster, namespace: str) -> None:
    def namespace_gone() -> bool:
        try:
            core.read_namespace(namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    try:
        wait_for(namespace_gone, timeout=120, what="the namespace to go")
    except AssertionError:
        left = core.read_namespace(namespace).status.conditions or []
        objs = [
            (
                o["metadata"]["name"],
                o["metadata"].get("deletionTimestamp"),
                o["metadata"].get("finalizers"),
                o["metadata"].get("annotations"),
                (o.get("status") or {}).get("phase"),
            )
            for kind in ("ManagedSystem", "UpdateRun")
            for o in items(cluster, namespace, kind)
        ]
        raise AssertionError([(c.type, c.message) for c in left], objs) from None
