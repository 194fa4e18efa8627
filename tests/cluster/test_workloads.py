"""A system of two workloads on the real API server (issue 34, part 1): a PostgreSQL
StatefulSet ``db`` and the shop's Deployment ``app``, one ManagedSystem, one run: the claims
of both snapshotted, db's image set and rolled out before app's, and a failure in either
rolls back both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from patchwarden.api.common import GROUP, VERSION
from tests.conftest import Cluster
from tests.helpers import wait_for
from tests.operator_harness import (
    ENDED,
    Operator,
    create,
    get,
    phase,
    release_catalog,
    system,
    wait_run,
    workload,
)

pytestmark = pytest.mark.usefixtures("crds")

OLD_PG, NEW_PG = "example.com/pg:16.3", "example.com/pg:16.4"
OLD_SHOP, NEW_SHOP = "example.com/shop:1.0.0", "example.com/shop:1.1.0"
CLAIMS = ["data-db-0", "app-data-0"]
SNAPSHOTS = ("snapshot.storage.k8s.io", "v1")


def release(version: str, image: str, classes: list[str]) -> dict[str, Any]:
    return {
        "version": version,
        "image": image,
        "classes": classes,
        "released": "2026-01-05T00:00:00Z",
    }


@pytest.fixture
def catalog(cluster: Cluster, namespace: str) -> Iterator[str]:
    components = {
        "postgres": [release("16.3", OLD_PG, ["security"]), release("16.4", NEW_PG, ["security"])],
        "shop": [release("1.0.0", OLD_SHOP, ["feature"]), release("1.1.0", NEW_SHOP, ["feature"])],
    }
    with release_catalog(cluster, namespace, components) as name:
        yield name


@pytest.fixture
def shop(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> dict[str, dict[str, Any]]:
    """The StatefulSet ``db`` (a claim template) and the Deployment ``app`` (a claim), ready;
    returns their specs as they were."""
    apps.create_namespaced_stateful_set(
        namespace,
        {
            "metadata": {"name": "db"},
            "spec": {
                "replicas": 1,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "pg", "image": OLD_PG}]},
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    }
                ],
            },
        },
    )
    workload(core, apps, namespace, container={"name": "web", "image": OLD_SHOP})
    wait_for(
        lambda: (
            (apps.read_namespaced_stateful_set("db", namespace).status.ready_replicas or 0) == 1
        ),
        timeout=60,
        what="db ready",
    )
    return {
        "db": apps.read_namespaced_stateful_set("db", namespace).to_dict()["spec"],
        "app": apps.read_namespaced_deployment("app", namespace).to_dict()["spec"],
    }


def two_workloads(catalog: str, job: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body = system("shop", "SaaS", job=job, **spec)
    del body["spec"]["workload"]
    body["spec"]["workloads"] = [
        {"kind": "StatefulSet", "name": "db", "role": "database"},
        {"kind": "Deployment", "name": "app", "role": "app"},
    ]
    body["spec"]["updates"]["catalogs"] = [catalog]
    body["spec"]["updates"]["runJob"] = "WhenNewer"
    by_provider = {"installedBy": "provider", "source": "standard-repository"}
    body["spec"]["components"] = [
        {"name": "postgres", "container": "pg", "workload": "db", **by_provider},
        {"name": "shop", "container": "web", "workload": "app", **by_provider},
    ]
    return body


def images(apps: client.AppsV1Api, ns: str) -> tuple[str, str]:
    db = apps.read_namespaced_stateful_set("db", ns).spec.template.spec.containers[0].image
    app = apps.read_namespaced_deployment("app", ns).spec.template.spec.containers[0].image
    return str(db), str(app)


def workloads_of(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    """The running run's ``status.workloads`` (empty before one exists)."""
    runs = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
        GROUP, VERSION, ns, "updateruns"
    )["items"]
    return [w for r in runs for w in (r.get("status") or {}).get("workloads") or []]


def test_both_workloads_are_snapshotted_and_updated_in_order(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    catalog: str,
    apps: client.AppsV1Api,
    shop: dict[str, dict[str, Any]],
) -> None:
    create(cluster, namespace, two_workloads(catalog))
    # The database first: its image is set and rolled out while app still runs the old one.
    first = wait_for(
        lambda: (
            [w.get("imagesSet") for w in found] == [True, None] and found
            if len(found := workloads_of(cluster, namespace)) == 2
            else None
        ),
        timeout=60,
        interval=0.05,
        what="db's images set before app's",
    )
    assert [w["role"] for w in first] == ["database", "app"]
    assert images(apps, namespace)[1] == OLD_SHOP, "app is changed only once db is ready"
    run = wait_run(cluster, namespace, "shop", ENDED, timeout=120)
    status = run["status"]
    assert phase(run) == "Succeeded", status
    assert images(apps, namespace) == (NEW_PG, NEW_SHOP)
    assert status["claims"] == CLAIMS
    assert [s["claim"] for s in status["snapshots"]] == CLAIMS
    assert [(c["workload"], c["from"], c["to"]) for c in status["changes"]] == [
        ("db", "16.3", "16.4"),
        ("app", "1.0.0", "1.1.0"),
    ]
    assert [w["recorded"]["kind"] for w in status["workloads"]] == ["StatefulSet", "Deployment"]
    msys = wait_for(
        lambda: (
            (m := get(cluster, namespace, "ManagedSystem", "shop"))["status"].get("lastRun") and m
        ),
        timeout=30,
        what="lastRun",
    )
    assert {c["name"]: c.get("workload") for c in msys["status"]["components"]} == {
        "postgres": "db",
        "shop": "app",
    }


def test_a_rollout_failing_in_the_second_workload_rolls_back_both(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    catalog: str,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    shop: dict[str, dict[str, Any]],
) -> None:
    body = two_workloads(catalog)
    body["spec"]["updates"]["verifyTimeout"] = "8s"
    create(cluster, namespace, body)
    wait_for(
        lambda: [w.get("imagesSet") for w in workloads_of(cluster, namespace)] == [True, True],
        timeout=60,
        interval=0.05,
        what="app's image set",
    )
    # app's new release never becomes ready (its pods cannot be scheduled).
    apps.patch_namespaced_deployment(
        "app",
        namespace,
        {"spec": {"template": {"spec": {"nodeSelector": {"patchwarden.io/test": "nowhere"}}}}},
    )
    run = wait_run(cluster, namespace, "shop", ENDED, timeout=120)
    status = run["status"]
    assert phase(run) == "RolledBack", status
    assert "the rollout of Deployment app with the new images did not complete" in status["failure"]
    assert sorted(status["restore"]["claims"]) == sorted(CLAIMS)
    assert sorted(r["claim"] for r in status["restore"]["failedState"]) == sorted(CLAIMS)
    for record in status["snapshots"]:
        claim = core.read_namespaced_persistent_volume_claim(record["claim"], namespace)
        assert claim.spec.data_source.name == record["snapshot"], record
    assert images(apps, namespace) == (OLD_PG, OLD_SHOP), "the database rolled back too"
    assert apps.read_namespaced_stateful_set("db", namespace).to_dict()["spec"] == shop["db"]
    assert apps.read_namespaced_deployment("app", namespace).to_dict()["spec"] == shop["app"]
    assert (
        "restored 2 claims and the workloads (StatefulSet db, Deployment app)"
        in (status["message"])
    )


def test_deleting_a_two_workload_system_mid_update_rolls_both_back_first(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    catalog: str,
    apps: client.AppsV1Api,
    shop: dict[str, dict[str, Any]],
) -> None:
    create(
        cluster,
        namespace,
        two_workloads(catalog, job={"devcluster.patchwarden.io/duration": "60s"}),
    )
    wait_for(
        lambda: client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items,
        timeout=90,
        what="the update Job (both workloads' images set)",
    )
    assert images(apps, namespace) == (NEW_PG, NEW_SHOP)
    run = wait_run(cluster, namespace, "shop", {"Updating"})["metadata"]["name"]
    client.CustomObjectsApi(cluster.api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "managedsystems", "shop"
    )

    def system_gone() -> bool:
        try:
            get(cluster, namespace, "ManagedSystem", "shop")
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(system_gone, timeout=120, what="the system to go once its run has ended")
    assert images(apps, namespace) == (OLD_PG, OLD_SHOP), "both rolled back before it went"
    snaps = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
        *SNAPSHOTS, namespace, "volumesnapshots"
    )["items"]
    names = {s["metadata"]["name"] for s in snaps}
    for claim in CLAIMS:
        assert {f"{run}-{claim}", f"{run}-{claim}-failed"} <= names, (claim, sorted(names))
