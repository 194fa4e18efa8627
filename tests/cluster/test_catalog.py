"""Release catalogs on the real API server: targets read from the workload, applied by the
operator as images, recorded in the run; an up-to-date system starts no run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from patchwarden.api.common import GROUP, VERSION
from tests.conftest import Cluster
from tests.helpers import holds_for, wait_for
from tests.operator_harness import (
    ENDED,
    Operator,
    condition,
    create,
    get,
    now_plus,
    phase,
    release_catalog,
    running_operator,
    runs_of,
    system,
    update_request,
    wait_run,
    workload,
)

pytestmark = pytest.mark.usefixtures("crds")
LONG_AGO = "2026-01-05T00:00:00Z"


def release(
    version: str, classes: list[str], released: str = LONG_AGO, **more: Any
) -> dict[str, Any]:
    return {
        "version": version,
        "image": f"example.com/pg:{version}",
        "classes": classes,
        "released": released,
        **more,
    }


@pytest.fixture
def catalog(cluster: Cluster, namespace: str) -> Iterator[str]:
    """A ReleaseCatalog of postgres (cluster-scoped: named after the test's namespace, which
    the systems of the test name in updates.catalogs)."""
    releases = [
        release("16.3", ["security"]),
        release("16.4", ["security"], advisories=["CVE-2024-10979"]),
        release("16.5", ["feature"]),
        # Released now: younger than the systems' approval delay.
        release("16.6", ["security"], released=now_plus(-60)),
        release("17.0", ["security", "feature"]),
    ]
    with release_catalog(cluster, namespace, {"postgres": releases}) as name:
        yield name


def bound_system(
    name: str, model: str, catalog: str, job: bool = False, **spec: Any
) -> dict[str, Any]:
    body = system(name, model, "basic" if model == "PaaS" else None, **spec)
    updates = body["spec"]["updates"]
    if not job:
        del updates["template"]
    updates["catalogs"] = [catalog]
    updates["approveAfter"] = "24h"
    body["spec"]["components"] = [
        {
            "name": "postgres",
            "container": "db",
            "installedBy": "provider",
            "source": "standard-repository",
            "layer": "middleware",
        }
    ]
    body["spec"]["backup"] = {"required": False}
    return body


def database(core: client.CoreV1Api, apps: client.AppsV1Api, ns: str, image: str) -> None:
    """Deployment ``app``: postgres in container db, an exporter beside it."""
    workload(core, apps, ns, claims=0, container={"name": "db", "image": image})
    apps.patch_namespaced_deployment(
        "app",
        ns,
        [
            {
                "op": "add",
                "path": "/spec/template/spec/containers/-",
                "value": {"name": "exporter", "image": "example.com/exporter:0.15"},
            }
        ],
    )


def status_with(cluster: Cluster, ns: str, name: str, key: str) -> dict[str, Any]:
    """The system once its status has ``key``."""
    return wait_for(
        lambda: (m := get(cluster, ns, "ManagedSystem", name)).get("status", {}).get(key) and m,
        timeout=30,
        what=f"status.{key} of {name}",
    )


def images(apps: client.AppsV1Api, ns: str) -> dict[str, str]:
    dep = apps.read_namespaced_deployment("app", ns)
    return {c.name: c.image for c in dep.spec.template.spec.containers}


def test_a_paas_system_behind_on_security_is_updated_on_request_to_exactly_that_image(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    catalog: str,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    database(core, apps, namespace, "example.com/pg:16.3")
    create(cluster, namespace, bound_system("db", "PaaS", catalog))
    msys = status_with(cluster, namespace, "db", "components")
    (pg,) = msys["status"]["components"]
    # 16.5 is a feature release, 16.6 younger than approveAfter, 17.0 another major version.
    assert (pg["installed"], pg["security"], pg["feature"]) == ("16.3", "16.4", "16.5")
    assert msys["status"]["pendingUpdates"] == "security 1"
    up = condition(msys, "UpToDate")
    assert up is not None and (up["status"], up["reason"]) == ("False", "UpdatesPending")
    assert runs_of(cluster, namespace, "db") == [], "PaaS basic: nothing without a request"

    create(cluster, namespace, update_request("cve", "db", "HD-4711"))
    run = wait_run(cluster, namespace, "db", ENDED)
    assert phase(run) == "Succeeded", run["status"]
    (target,) = run["spec"]["targets"]
    assert (target["from"], target["to"], target["image"]) == (
        "16.3",
        "16.4",
        "example.com/pg:16.4",
    )
    (change,) = run["status"]["changes"]
    assert (
        change["fromImage"] == "example.com/pg:16.3" and change["toImage"] == "example.com/pg:16.4"
    )
    assert change["advisories"] == ["CVE-2024-10979"] and change["classes"] == ["security"]
    assert run["status"]["summary"] == "postgres 16.3→16.4"
    assert "job" not in run["status"], "no Job template: the image is the update"
    assert images(apps, namespace) == {
        "db": "example.com/pg:16.4",
        "exporter": "example.com/exporter:0.15",  # no other container changes
    }
    # GitOps: the image field belongs to the operator's own server-side-apply manager.
    dep = apps.read_namespaced_deployment("app", namespace)
    owners = {
        m.manager: m.operation
        for m in dep.metadata.managed_fields
        if "f:image"
        in (m.fields_v1 or {})
        .get("f:spec", {})
        .get("f:template", {})
        .get("f:spec", {})
        .get("f:containers", {})
        .get('k:{"name":"db"}', {})
    }
    assert owners == {"patchwarden": "Apply"}, dep.metadata.managed_fields
    out = cluster.kubectl("get", "urun", "-n", namespace)
    assert "postgres 16.3→16.4" in out
    after = wait_for(
        lambda: (
            (m := get(cluster, namespace, "ManagedSystem", "db"))["status"]["components"][0].get(
                "installed"
            )
            == "16.4"
            and m
        ),
        timeout=90,
        what="the system to read 16.4 from its container",
    )
    assert condition(after, "UpToDate")["status"] == "True"  # type: ignore[index]
    request = get(cluster, namespace, "UpdateRequest", "cve")
    assert request["status"]["state"] == "Succeeded"


def test_a_saas_system_gets_security_and_feature_targets_and_its_job_receives_them(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    catalog: str,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    database(core, apps, namespace, "example.com/pg:16.3")
    create(cluster, namespace, bound_system("shop", "SaaS", catalog, job=True))
    run = wait_run(cluster, namespace, "shop", ENDED)
    assert phase(run) == "Succeeded", run["status"]
    (target,) = run["spec"]["targets"]
    assert target["to"] == "16.5" and target["classes"] == ["feature", "security"]
    assert images(apps, namespace)["db"] == "example.com/pg:16.5"
    job = client.BatchV1Api(cluster.api).read_namespaced_job(
        run["status"]["job"]["name"], namespace
    )
    env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
    assert '"from": "16.3"' in env["PATCHWARDEN_TARGETS"]
    assert '"to": "16.5"' in env["PATCHWARDEN_TARGETS"]
    assert '"container": "db"' in env["PATCHWARDEN_TARGETS"]


def test_a_system_already_up_to_date_starts_no_run_in_its_window(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    catalog: str,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    database(core, apps, namespace, "example.com/pg:16.5")
    create(cluster, namespace, bound_system("current", "SaaS", catalog))
    msys = status_with(cluster, namespace, "current", "skippedWindow")
    assert msys["status"]["skippedWindow"]["name"] == "now"
    assert condition(msys, "UpToDate")["reason"] == "NothingPending"  # type: ignore[index]
    holds_for(lambda: runs_of(cluster, namespace, "current") == [], duration=5, what="no run")
    reasons = [
        e.reason
        for e in core.list_namespaced_event(namespace).items
        if e.involved_object.name == "current"
    ]
    assert reasons.count("NothingToInstall") == 1
    assert images(apps, namespace)["db"] == "example.com/pg:16.5"


def test_a_new_release_reaches_the_systems_at_once_not_at_their_resync(
    cluster: Cluster,
    namespace: str,
    catalog: str,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    tmp_path: Path,
) -> None:
    database(core, apps, namespace, "example.com/pg:16.5")
    body = bound_system("later", "SaaS", catalog, window_start=now_plus(86400))
    with running_operator(cluster, namespace, tmp_path, PATCHWARDEN_RESYNC_SECONDS="600"):
        create(cluster, namespace, body)
        wait_for(
            lambda: condition(get(cluster, namespace, "ManagedSystem", "later"), "UpToDate"),
            timeout=30,
            what="the first status",
        )
        api = client.CustomObjectsApi(cluster.api)
        current = api.get_cluster_custom_object(GROUP, VERSION, "releasecatalogs", catalog)
        current["spec"]["components"][0]["releases"].append(
            release("16.7", ["security"], advisories=["CVE-2026-0001"])
        )
        api.replace_cluster_custom_object(GROUP, VERSION, "releasecatalogs", catalog, current)
        started = time.monotonic()
        msys = wait_for(
            lambda: (
                (m := get(cluster, namespace, "ManagedSystem", "later"))["status"]["components"][
                    0
                ].get("security")
                == "16.7"
                and m
            ),
            timeout=20,
            what="the new release in the system's status",
        )
    print(f"catalog change → system status: {time.monotonic() - started:.1f}s")
    assert condition(msys, "UpToDate")["reason"] == "UpdatesPending"  # type: ignore[index]
    assert runs_of(cluster, namespace, "later") == [], "its window is tomorrow"


def test_a_workload_and_claim_created_or_changed_wake_their_system_not_a_timer(
    cluster: Cluster,
    namespace: str,
    catalog: str,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    tmp_path: Path,
) -> None:
    """With an hour's safety resync, the watches of Deployments and claims wake the system
    that names them: created, and given another image."""
    body = bound_system("late", "SaaS", catalog, window_start=now_plus(86400), volumes=["extra"])

    def stalled(reason: str | None) -> Any:
        found = condition(get(cluster, namespace, "ManagedSystem", "late"), "Stalled")
        if reason is None:
            return found and found["status"] == "False" and found
        return found and found["status"] == "True" and reason in found["reason"] and found

    def installed(version: str) -> Any:
        found = get(cluster, namespace, "ManagedSystem", "late").get("status", {})
        return [c.get("installed") for c in found.get("components") or []] == [version]

    with running_operator(cluster, namespace, tmp_path, PATCHWARDEN_RESYNC_SECONDS="3600"):
        create(cluster, namespace, body)
        wait_for(lambda: stalled("WorkloadNotFound"), timeout=30, what="stalled: no workload")
        started = time.monotonic()
        database(core, apps, namespace, "example.com/pg:16.3")
        wait_for(lambda: stalled("ClaimNotFound"), timeout=20, what="the workload seen")
        workload_seen = time.monotonic() - started
        assert installed("16.3")
        started = time.monotonic()
        core.create_namespaced_persistent_volume_claim(
            namespace,
            {
                "metadata": {"name": "extra"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        wait_for(lambda: stalled(None), timeout=20, what="the claim seen: no longer stalled")
        claim_seen = time.monotonic() - started
        started = time.monotonic()
        apps.patch_namespaced_deployment(
            "app",
            namespace,
            {
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "db", "image": "example.com/pg:16.5"}]}
                    }
                }
            },
        )
        wait_for(lambda: installed("16.5"), timeout=20, what="the new image read")
        image_seen = time.monotonic() - started
    print(
        f"workload created → status {workload_seen:.1f}s; claim created → status "
        f"{claim_seen:.1f}s; image changed → status {image_seen:.1f}s"
    )
