"""The read model: one view of the cluster that the systems' reconciles read, kept by watches.

Every answer a reconcile needs from the cluster is here, kept current by the watches
(``runtime/reflector.py``) and kopf's event handlers: the ManagedSystems (the work
queue's cache), the namespaces' workloads and claims (``Inventory``), the runs'
snapshots (``Snapshots``), the ReleaseCatalogs and VolumeSnapshotClasses (``Bodies``);
the runs and requests are the fleet registry's (``runtime/fleet.py``). Nothing here
asks the API server. The workers start only once every watch has listed once (as
controller-runtime's ``WaitForCacheSync``: ``listing()`` says what has not); a read
before that is a bug and raises :class:`NotListed`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from patchwarden.core.releases import Catalogs
from patchwarden.runtime.inventory import KINDS, Bodies, Inventory, Snapshots

log = logging.getLogger(__name__)
Key = tuple[str, str]


class ReadModel(Protocol):
    """What the systems controller reads of the cluster (:class:`View` in the operator)."""

    def exists(self, kind: str, ns: str, name: str) -> bool: ...

    def workload(self, kind: str, ns: str, name: str) -> dict[str, Any] | None: ...

    def catalogs(self) -> Catalogs: ...

    def catalog_records(self) -> dict[str, list[dict[str, Any]]]: ...

    def snapshot_classes(self) -> list[dict[str, Any]]: ...

    def snapshots_of(self, ns: str, system_label: str) -> list[dict[str, Any]]: ...

    def all_systems(self) -> Iterable[Mapping[str, Any]]: ...


def rollout_records(bodies: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each ReleaseCatalog's rollout record as stored (``status.rollout``), by name."""
    return {
        b["metadata"]["name"]: list((b.get("status") or {}).get("rollout") or []) for b in bodies
    }


class NotListed(RuntimeError):
    """A read before the watches listed: the workers wait for :meth:`View.synced`."""


class View:
    """What the watches last saw; see the module."""

    def __init__(self, systems: Mapping[Key, Mapping[str, Any]] | None = None) -> None:
        self.systems: Mapping[Key, Mapping[str, Any]] = systems if systems is not None else {}
        """The ManagedSystems (the work queue's cache, ``runtime/controller.py``)."""
        self.inventory = Inventory()
        self.snapshots = Snapshots()
        self.catalog_bodies = Bodies()
        self.class_bodies = Bodies()
        self._catalogs: tuple[tuple[tuple[str, str], ...], Catalogs] = ((), Catalogs({}))

    def listing(self) -> list[str]:
        """What has not been listed yet (empty: every watch has)."""
        waiting = [kind for kind in KINDS if not self.inventory.answers(kind)]
        if not self.snapshots.listed():
            waiting.append("VolumeSnapshot")
        if self.catalog_bodies.listed() is None:
            waiting.append("ReleaseCatalog")
        if self.class_bodies.listed() is None:
            waiting.append("VolumeSnapshotClass")
        return waiting

    def synced(self) -> bool:
        return not self.listing()

    def exists(self, kind: str, ns: str, name: str) -> bool:
        """Whether a workload or claim exists."""
        found = self.inventory.exists(kind, ns, name)
        if found is None:
            raise NotListed(kind)
        return found

    def workload(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        """The workload's containers and their images; None when it does not exist."""
        try:
            return self.inventory.workload(kind, ns, name)
        except KeyError:
            raise NotListed(kind) from None

    def catalogs(self) -> Catalogs:
        """The ReleaseCatalogs, indexed again only when the spec of one of them changed (the
        operator's own status writes, the rollout's record, do not index them again)."""
        bodies = self.catalog_bodies.listed()
        if bodies is None:
            raise NotListed("ReleaseCatalog")
        versions = self.catalog_bodies.generations()
        known, catalogs = self._catalogs
        if versions != known or not versions:
            catalogs = Catalogs.of(bodies)
            for name, why in catalogs.invalid.items():
                log.warning("ReleaseCatalog %s is ignored: %s", name, why)
            self._catalogs = (versions, catalogs)
        return catalogs

    def catalog_records(self) -> dict[str, list[dict[str, Any]]]:
        """Each catalog's rollout record as stored (``status.rollout``)."""
        bodies = self.catalog_bodies.listed()
        if bodies is None:
            raise NotListed("ReleaseCatalog")
        return rollout_records(bodies)

    def snapshot_classes(self) -> list[dict[str, Any]]:
        classes = self.class_bodies.listed()
        if classes is None:
            raise NotListed("VolumeSnapshotClass")
        return classes

    def snapshots_of(self, ns: str, system_label: str) -> list[dict[str, Any]]:
        """The system's runs' snapshots (``core/history.py`` reads them)."""
        found = self.snapshots.of(ns, system_label)
        if found is None:
            raise NotListed("VolumeSnapshot")
        return found

    def all_systems(self) -> Iterable[Mapping[str, Any]]:
        return list(self.systems.values())
