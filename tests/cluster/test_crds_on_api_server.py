"""The generated CRDs on the real API server: examples accepted, bad objects rejected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.catalogue import CATALOGUE, Bad
from tests.conftest import REPO, Cluster

PLURALS = {
    "ManagedSystem": "managedsystems",
    "UpdateRequest": "updaterequests",
    "UpdateRun": "updateruns",
}


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> Iterator[None]:
    cluster.install_crds()
    yield


def create(cluster: Cluster, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    return client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(  # type: ignore[no-any-return]
        "patchwarden.io",
        "v1alpha1",
        namespace,
        PLURALS[obj["kind"]],
        obj,
        field_validation="Strict",
    )


EXAMPLES = sorted((REPO / "examples").glob("**/*.yaml"))


@pytest.mark.usefixtures("crds")
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_accepted(cluster: Cluster, namespace: str, path: Path) -> None:
    """Each patchwarden object of the examples, by the CRDs' schemas and rules (the
    namespaces and workloads beside them are applied in test_examples.py)."""
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or "kind" not in doc:  # Helm values (examples/guard-rails/values.yaml)
            continue
        if doc["kind"] == "ReleaseCatalog":  # cluster-scoped: validated, not stored
            stored = client.CustomObjectsApi(cluster.api).create_cluster_custom_object(
                "patchwarden.io", "v1alpha1", "releasecatalogs", doc, dry_run="All"
            )
            assert stored["spec"]["components"][0]["releases"]
            continue
        if doc["kind"] not in PLURALS:
            continue
        doc["metadata"]["namespace"] = namespace
        stored = create(cluster, namespace, doc)
        assert stored["spec"]["serviceModel" if doc["kind"] == "ManagedSystem" else "ticket"]


@pytest.mark.usefixtures("crds")
def test_defaults_are_applied_by_the_api_server(cluster: Cluster, namespace: str) -> None:
    obj = yaml.safe_load((REPO / "examples" / "iaas.yaml").read_text())
    obj["metadata"]["namespace"] = namespace
    obj["spec"]["backup"] = {}
    obj["spec"]["rollback"] = {}
    stored = create(cluster, namespace, obj)
    assert stored["spec"]["customerAdminAccess"] is False
    assert stored["spec"]["backup"] == {
        "retain": 3,
        "required": True,
        "consistency": "Crash",
        "maxFreeze": "1m",
    }
    assert stored["spec"]["rollback"] == {
        "enabled": True,
        "reserve": "15m",
        "keepFailedState": "168h",
        "restoreData": "Always",
    }


@pytest.mark.usefixtures("crds")
@pytest.mark.parametrize("bad", CATALOGUE, ids=lambda b: b.name)
def test_invalid_objects_are_rejected_naming_the_field(
    cluster: Cluster, namespace: str, bad: Bad
) -> None:
    with pytest.raises(ApiException) as caught:
        if bad.base["kind"] == "ReleaseCatalog":
            client.CustomObjectsApi(cluster.api).create_cluster_custom_object(
                "patchwarden.io", "v1alpha1", "releasecatalogs", bad.object(), dry_run="All"
            )
        else:
            create(cluster, namespace, bad.object())
    assert caught.value.status in (400, 422), caught.value.body  # 400: strict unknown field
    assert bad.field in caught.value.body, caught.value.body


@pytest.mark.usefixtures("crds")
def test_unknown_fields_are_refused_under_strict_validation(
    cluster: Cluster, namespace: str
) -> None:
    obj = yaml.safe_load((REPO / "examples" / "update-request.yaml").read_text())
    obj["spec"]["colour"] = "red"
    with pytest.raises(ApiException) as caught:
        create(cluster, namespace, obj)
    assert (
        'unknown field \\"spec.colour\\"' in caught.value.body or "spec.colour" in caught.value.body
    )


@pytest.mark.usefixtures("crds")
def test_printer_columns_and_short_names_work_in_kubectl(cluster: Cluster, namespace: str) -> None:
    obj = yaml.safe_load((REPO / "examples" / "paas-advanced.yaml").read_text())
    obj["metadata"]["namespace"] = namespace
    create(cluster, namespace, obj)
    out = cluster.kubectl("get", "msys", "-n", namespace)
    header = out.splitlines()[0].split()
    assert header[:4] == ["NAME", "CUSTOMER", "MODEL", "PACKAGE"]
    assert "acme-retail" in out and "PaaS" in out and "advanced" in out
    assert "shop-db" in cluster.kubectl("get", "patchwarden", "-n", namespace)


@pytest.mark.usefixtures("crds")
def test_an_update_runs_spec_cannot_be_edited_once_created(
    cluster: Cluster, namespace: str
) -> None:
    """Issue 35, part 4: a run's targets and window are what it was decided with; its
    labels, annotations and status may change, and it may be deleted."""
    from tests.unit.runs import RUN_SPEC

    custom = client.CustomObjectsApi(cluster.api)
    run = create(
        cluster,
        namespace,
        {
            "apiVersion": "patchwarden.io/v1alpha1",
            "kind": "UpdateRun",
            "metadata": {"name": "fixed"},
            "spec": RUN_SPEC,
        },
    )
    args = ("patchwarden.io", "v1alpha1", namespace, "updateruns", "fixed")
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object(*args, {"spec": {"ticket": "CHG-2"}})
    assert caught.value.status == 422, caught.value.body
    assert "an UpdateRun's spec is fixed when the run is created" in caught.value.body
    custom.patch_namespaced_custom_object(*args, {"metadata": {"labels": {"seen": "yes"}}})
    custom.patch_namespaced_custom_object_status(*args, {"status": {"message": "edited"}})
    custom.delete_namespaced_custom_object(*args)
    assert run["spec"]["window"] == RUN_SPEC["window"]


@pytest.mark.usefixtures("crds")
def test_an_update_requests_system_and_ticket_cannot_be_edited(
    cluster: Cluster, namespace: str
) -> None:
    """Issue 35, part 4: what a request is about stays; its classes, notBefore, reason and
    retries may change and count for the runs it starts after the edit."""
    obj = yaml.safe_load((REPO / "examples" / "update-request.yaml").read_text())
    obj["metadata"].pop("namespace", None)
    name = obj["metadata"]["name"]
    create(cluster, namespace, obj)
    custom = client.CustomObjectsApi(cluster.api)
    args = ("patchwarden.io", "v1alpha1", namespace, "updaterequests", name)
    for change in ({"systemRef": {"name": "another"}}, {"ticket": "HD-other"}):
        with pytest.raises(ApiException) as caught:
            custom.patch_namespaced_custom_object(*args, {"spec": change})
        assert caught.value.status == 422, caught.value.body
        assert "systemRef and ticket are fixed when it is created" in caught.value.body
    custom.patch_namespaced_custom_object(*args, {"spec": {"reason": "asked again", "retries": 2}})
