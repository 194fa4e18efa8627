"""Waves on the real API server: a catalog's release reaches the canary wave first and the
rest only after the canaries ran it; a failed canary run halts the release for everyone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from patchwarden.api.common import GROUP, VERSION
from tests.conftest import Cluster
from tests.helpers import holds_for
from tests.operator_harness import (
    ENDED,
    condition,
    create,
    get,
    phase,
    running_operator,
    runs_of,
    system,
    wait_condition,
    wait_run,
    workload,
)

pytestmark = pytest.mark.usefixtures("crds")
FAIL = {"devcluster.patchwarden.io/outcome": "fail"}


@pytest.fixture
def catalog(cluster: Cluster, namespace: str) -> Iterator[str]:
    """postgres 15.8 → 15.10, released to the canary wave (label ring=canary) first."""
    api = client.CustomObjectsApi(cluster.api)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ReleaseCatalog",
        "metadata": {"name": namespace},
        "spec": {
            "rollout": {
                "waves": [{"name": "canary", "selector": {"matchLabels": {"ring": "canary"}}}]
            },
            "components": [
                {
                    "name": "postgres",
                    "releases": [
                        {
                            "version": v,
                            "image": f"example.com/pg:{v}",
                            "classes": ["security"],
                            "released": "2026-01-05T00:00:00Z",
                        }
                        for v in ("15.8", "15.10")
                    ],
                }
            ],
        },
    }
    api.create_cluster_custom_object(GROUP, VERSION, "releasecatalogs", body)
    yield namespace
    api.delete_cluster_custom_object(GROUP, VERSION, "releasecatalogs", namespace)


def member(
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    ns: str,
    name: str,
    catalog: str,
    ring: str | None,
    job: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A SaaS system on its own Deployment running postgres 15.8 (bound to container db)."""
    workload(
        core,
        apps,
        ns,
        name=name,
        claims=0,
        container={"name": "db", "image": "example.com/pg:15.8"},
    )
    body = system(name, "SaaS", workload_name=name, job=job)
    if job is None:
        del body["spec"]["updates"]["template"]
    body["spec"]["updates"]["catalogs"] = [catalog]
    body["spec"]["components"] = [
        {
            "name": "postgres",
            "container": "db",
            "installedBy": "provider",
            "source": "standard-repository",
        }
    ]
    body["spec"]["backup"] = {"required": False}
    if ring:
        body["metadata"]["labels"] = {"ring": ring}
    return body


def held(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return condition(get(cluster, ns, "ManagedSystem", name), "ReleasesHeld") or {}


def test_the_rest_takes_a_release_only_after_the_canary_ran_it(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    catalog: str,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    with running_operator(cluster, namespace, tmp_path):
        slow = {"devcluster.patchwarden.io/duration": "8s"}  # the canary's run takes a while
        create(cluster, namespace, member(core, apps, namespace, "canary", catalog, "canary", slow))
        wait_run(cluster, namespace, "canary", {"Snapshotting", "Recording", "Updating"})
        create(cluster, namespace, member(core, apps, namespace, "rest", catalog, None))
        waiting = wait_condition(cluster, namespace, "rest", "ReleasesHeld", "WaitingForWave")
        assert waiting["status"] == "True"
        assert waiting["message"].startswith(
            "postgres 15.10 waits for wave canary (this system: wave rest): "
        ), waiting
        stored = get(cluster, namespace, "ManagedSystem", "rest")
        assert stored["status"]["waves"] == [{"catalog": catalog, "wave": "rest"}]
        canary = wait_run(cluster, namespace, "canary", ENDED, timeout=90)
        assert phase(canary) == "Succeeded", canary["status"]
        # Then the rest: its run starts after the canary's ended, and installs 15.10.
        rest = wait_run(cluster, namespace, "rest", ENDED, timeout=90)
        assert phase(rest) == "Succeeded", rest["status"]
        assert rest["status"]["startTime"] >= canary["status"]["completionTime"]
        assert [t["to"] for t in rest["spec"]["targets"]] == ["15.10"]
        assert held(cluster, namespace, "rest")["status"] == "False"


def test_a_failed_canary_run_halts_the_release_for_everyone(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    catalog: str,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    with running_operator(cluster, namespace, tmp_path):
        create(cluster, namespace, member(core, apps, namespace, "canary", catalog, "canary", FAIL))
        create(cluster, namespace, member(core, apps, namespace, "rest", catalog, None))
        canary = wait_run(cluster, namespace, "canary", ENDED, timeout=90)
        assert phase(canary) == "RolledBack", canary["status"]
        halted = wait_condition(cluster, namespace, "rest", "ReleasesHeld", "ReleaseHalted")
        assert halted["status"] == "True"
        assert halted["message"].startswith("postgres 15.10 is halted: run ")
        assert "ended RolledBack in wave canary; publish a fixed release" in halted["message"]
        holds_for(
            lambda: runs_of(cluster, namespace, "rest") == [],
            duration=6,
            what="no run of the halted release for the rest",
        )
        events = (
            client.CoreV1Api(cluster.api)
            .list_namespaced_event(namespace, field_selector="involvedObject.name=rest")
            .items
        )
        assert any(e.reason == "ReleaseHalted" and e.type == "Warning" for e in events), [
            (e.reason, e.type) for e in events
        ]
