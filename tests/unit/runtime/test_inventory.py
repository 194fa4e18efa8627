"""The watches' inventory of workloads and claims, and the cluster-wide bodies (pure)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from patchwarden.runtime.inventory import Bodies, Inventory, Snapshots


def deployment(name: str, image: str, replicas: int = 1, ns: str = "ns") -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name, "resourceVersion": str(replicas)},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
        "status": {"readyReplicas": replicas},
    }


def test_only_what_a_system_can_see_is_news() -> None:
    inventory = Inventory()
    listed = threading.Event()
    inventory.watched_by("Deployment", listed)
    assert inventory.exists("Deployment", "ns", "db") is None, "not listed yet: ask the API"
    with pytest.raises(KeyError):
        inventory.workload("Deployment", "ns", "db")
    ref = ("Deployment", "ns", "db")
    assert inventory.observe("Deployment", [("ADDED", deployment("db", "pg:16.3"))]) == [ref]
    listed.set()
    assert inventory.exists("Deployment", "ns", "db") is True
    assert inventory.exists("Deployment", "ns", "other") is False
    assert inventory.exists("StatefulSet", "ns", "db") is None, "no watch of that kind"
    rolled = deployment("db", "pg:16.3", replicas=3)
    assert inventory.observe("Deployment", [("MODIFIED", rolled)]) == [], "status only"
    updated = deployment("db", "pg:16.4", replicas=3)
    assert inventory.observe("Deployment", [("MODIFIED", updated)]) == [ref]
    body = inventory.workload("Deployment", "ns", "db")
    assert body is not None
    assert body["spec"]["template"]["spec"]["containers"] == [{"name": "app", "image": "pg:16.4"}]
    assert inventory.observe("Deployment", [("DELETED", {"metadata": updated["metadata"]})]) == [
        ref
    ]
    assert inventory.workload("Deployment", "ns", "db") is None
    assert inventory.observe("Deployment", [("DELETED", {"metadata": updated["metadata"]})]) == []


def test_claims_are_known_by_name_and_every_namespace_watch_must_have_listed() -> None:
    inventory = Inventory()
    first, second = threading.Event(), threading.Event()
    inventory.watched_by("PersistentVolumeClaim", first)
    inventory.watched_by("PersistentVolumeClaim", second)
    claim = {"metadata": {"namespace": "a", "name": "data"}, "status": {"phase": "Pending"}}
    inventory.observe("PersistentVolumeClaim", [("ADDED", claim)])
    first.set()
    assert inventory.exists("PersistentVolumeClaim", "a", "data") is None
    second.set()
    assert inventory.exists("PersistentVolumeClaim", "a", "data") is True
    bound = {**claim, "status": {"phase": "Bound"}}
    assert inventory.observe("PersistentVolumeClaim", [("MODIFIED", bound)]) == []


def test_bodies_say_when_something_changed() -> None:
    bodies = Bodies()
    assert bodies.listed() is None
    bodies.synced = threading.Event()
    one = {"metadata": {"name": "std", "resourceVersion": "1"}, "driver": "x"}
    assert bodies.observe([("ADDED", one)])
    bodies.synced.set()
    assert bodies.listed() == [one]
    assert not bodies.observe([("MODIFIED", one)]), "the same version again (a relist)"
    assert bodies.observe(
        [("MODIFIED", {**one, "metadata": {"name": "std", "resourceVersion": "2"}})]
    )
    assert bodies.observe([("DELETED", {"metadata": {"name": "std"}})])
    assert bodies.listed() == []


def snapshot(name: str, run: str, created: str, system: str = "a", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "creationTimestamp": created,
            "labels": {"patchwarden.io/system": system, "patchwarden.io/run": run, **labels},
        }
    }


def test_snapshots_are_kept_by_system_with_what_retention_reads() -> None:
    index = Snapshots()
    listed = threading.Event()
    index.watched_by(listed)
    index.observe([("ADDED", snapshot("a1", "r1", "2027-01-01T00:00:00Z"))])
    assert index.of("ns", "a") is None, "not listed yet: retention waits"
    listed.set()
    failed = {"patchwarden.io/state": "failed"}
    index.observe(
        [
            ("ADDED", snapshot("a1-failed", "r1", "2027-01-01T01:00:00Z", **failed)),
            ("ADDED", snapshot("b1", "r9", "2027-01-01T00:00:00Z", system="b")),
        ]
    )
    assert sorted(s["metadata"]["name"] for s in index.of("ns", "a") or []) == ["a1", "a1-failed"]
    [failed_state] = [s for s in index.of("ns", "a") or [] if s["metadata"]["name"] == "a1-failed"]
    assert failed_state["metadata"] == {
        "name": "a1-failed",
        "creationTimestamp": "2027-01-01T01:00:00Z",
        "labels": {"patchwarden.io/run": "r1", "patchwarden.io/state": "failed"},
    }
    going = snapshot("a1", "r1", "2027-01-01T00:00:00Z")
    going["metadata"]["deletionTimestamp"] = "2027-01-02T00:00:00Z"
    index.observe([("MODIFIED", going), ("DELETED", snapshot("b1", "r9", "x", system="b"))])
    assert [s["metadata"]["name"] for s in index.of("ns", "a") or []] == ["a1-failed"]
    assert index.of("ns", "b") == [] and index.of("other", "a") == []
