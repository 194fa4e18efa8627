"""The ManagedSystem watch (reflector.py) against the real API server."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes import client

from patchwarden.api.common import GROUP, VERSION
from patchwarden.runtime.kube import Kube
from patchwarden.runtime.reflector import Gone, Reflector, lister
from tests.conftest import Cluster
from tests.helpers import wait_for
from tests.operator_harness import system


@pytest.fixture(scope="module", autouse=True)
def crds(cluster: Cluster) -> None:
    cluster.install_crds()


class Seen:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        with self.lock:
            self.events += [(kind, body["metadata"]["name"]) for kind, body in batch]

    def has(self, kind: str, name: str) -> bool:
        with self.lock:
            return (kind, name) in self.events


def test_list_then_watch_reports_every_change(cluster: Cluster, namespace: str) -> None:
    custom = client.CustomObjectsApi(cluster.api)
    create = lambda name: custom.create_namespaced_custom_object(  # noqa: E731
        GROUP, VERSION, namespace, "managedsystems", system(name)
    )
    create("before")
    seen = Seen()
    reflector = Reflector(lister(Kube(cluster.api), "managedsystems", namespace), namespace, seen)
    reflector.start()
    try:
        wait_for(lambda: seen.has("ADDED", "before"), timeout=30, what="the listed system")
        create("after")
        wait_for(lambda: seen.has("ADDED", "after"), timeout=30, what="the watched system")
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "managedsystems", "before", {"status": {"eligible": True}}
        )
        wait_for(lambda: seen.has("MODIFIED", "before"), timeout=30, what="the status change")
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "managedsystems", "after")
        wait_for(lambda: seen.has("DELETED", "after"), timeout=30, what="the deletion")
    finally:
        reflector.stop()
    reflector.thread.join(10)
    assert not reflector.thread.is_alive(), "stop() ends the watch thread"


def test_a_version_too_old_is_gone_and_a_new_list_finds_what_was_deleted(
    cluster: Cluster, namespace: str
) -> None:
    custom = client.CustomObjectsApi(cluster.api)
    for name in ("kept", "dropped"):
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "managedsystems", system(name)
        )
    seen = Seen()
    reflector = Reflector(lister(Kube(cluster.api), "managedsystems", namespace), namespace, seen)
    reflector._list()
    assert {name for _, name in seen.events} == {"kept", "dropped"}
    # The API server's watch cache no longer holds version 1: a watch from it is refused.
    reflector.known.version = "1"
    with pytest.raises(Gone):
        reflector._watch()
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "managedsystems", "dropped")
    reflector._list()
    assert seen.events[-2:] == [("MODIFIED", "kept"), ("DELETED", "dropped")]
