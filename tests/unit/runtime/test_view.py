"""The read model answers only once every watch has listed, and then from what they saw."""

from __future__ import annotations

import threading

import pytest

from patchwarden.runtime.inventory import KINDS
from patchwarden.runtime.view import NotListed, View

CATALOG = {
    "metadata": {"name": "c", "resourceVersion": "1"},
    "spec": {"components": [{"name": "app", "releases": [{"version": "1.0"}]}]},
}


def listed() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


def test_nothing_is_answered_before_every_watch_listed_then_everything_is() -> None:
    view = View()
    assert view.listing() == [*KINDS, "VolumeSnapshot", "ReleaseCatalog", "VolumeSnapshotClass"]
    with pytest.raises(NotListed):
        view.exists("Deployment", "ns", "web")
    with pytest.raises(NotListed):
        view.catalogs()
    for kind in KINDS:
        view.inventory.watched_by(kind, listed())
    view.snapshots.watched_by(listed())
    view.catalog_bodies.synced = listed()
    assert view.listing() == ["VolumeSnapshotClass"] and not view.synced()
    view.class_bodies.synced = listed()
    assert view.synced()
    view.inventory.observe(
        "Deployment", [("ADDED", {"metadata": {"namespace": "ns", "name": "web"}})]
    )
    assert view.exists("Deployment", "ns", "web") and not view.exists("Deployment", "ns", "db")
    assert view.snapshot_classes() == [] and view.snapshots_of("ns", "web") == []


def test_the_catalogs_are_indexed_again_only_when_one_changed() -> None:
    view = View()
    view.catalog_bodies.synced = listed()
    view.catalog_bodies.observe([("ADDED", CATALOG)])
    first = view.catalogs()
    assert view.catalogs() is first, "nothing changed: the same index"
    view.catalog_bodies.observe(
        [("MODIFIED", {**CATALOG, "metadata": {"name": "c", "resourceVersion": "2"}})]
    )
    assert view.catalogs() is not first
    second = view.catalogs()
    # The operator's own status write (the rollout's record): the same generation, no new
    # index, but the record is read as stored.
    meta = {"name": "c", "resourceVersion": "3", "generation": 1}
    record = [{"component": "pg", "version": "1", "waves": []}]
    view.catalog_bodies.observe([("MODIFIED", {**CATALOG, "metadata": meta})])
    third = view.catalogs()
    meta = {"name": "c", "resourceVersion": "4", "generation": 1}
    status = {"rollout": record}
    assert view.catalog_bodies.observe(
        [("MODIFIED", {**CATALOG, "metadata": meta, "status": status})]
    )
    assert view.catalogs() is third and third is not second
    assert view.catalog_records() == {"c": record}
