"""What the systems need to know of their namespaces' workloads and claims, kept by watches.

A system's reconcile asks whether its workload and claims exist and which image each
container of the workload runs (the installed versions). Asking the API server per
reconcile (or listing per namespace every half minute) costs requests at every look; the
watches (``runtime/reflector.py``) of Deployments, StatefulSets and
PersistentVolumeClaims keep the answer here instead, and say which objects changed in a
way a system can see: created, deleted, or a container's image changed. A Deployment's
status changing (its pods coming and going) is no news to a system.

Only names and the containers' images are kept, not the bodies. Until a kind's watches
have listed, the inventory does not answer for it (None); the read model
(``runtime/view.py``) is not read before then.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from patchwarden.core.builders import LABEL_RUN, LABEL_STATE, LABEL_SYSTEM
from patchwarden.core.releases import containers

Ref = tuple[str, str, str]
"""(kind, namespace, name)."""
KINDS = ("Deployment", "StatefulSet", "PersistentVolumeClaim")


class Inventory:
    """The workloads and claims of the namespaces served, as the watches last saw them."""

    def __init__(self) -> None:
        self._objects: dict[Ref, dict[str, str]] = {}
        """A workload's container name → image (``core/releases.containers``); a claim's:
        nothing."""
        self._synced: dict[str, list[threading.Event]] = {}

    def watched_by(self, kind: str, synced: threading.Event) -> None:
        """A watch of ``kind`` sets ``synced`` once it has listed (one per namespace served)."""
        self._synced.setdefault(kind, []).append(synced)

    def answers(self, kind: str) -> bool:
        found = self._synced.get(kind) or []
        return bool(found) and all(e.is_set() for e in found)

    def observe(self, kind: str, events: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Ref]:
        """One batch of a watch of ``kind``: the objects whose change a system can see."""
        changed = []
        for event_type, body in events:
            meta = body.get("metadata") or {}
            ref = (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            if event_type == "DELETED":
                if self._objects.pop(ref, None) is not None:
                    changed.append(ref)
                continue
            now = containers(body) if kind != "PersistentVolumeClaim" else {}
            if self._objects.get(ref) != now:
                changed.append(ref)
                self._objects[ref] = now
        return changed

    def exists(self, kind: str, ns: str, name: str) -> bool | None:
        """Whether the object exists; None while the watches of ``kind`` have not listed."""
        if not self.answers(kind):
            return None
        return (kind, ns, name) in self._objects

    def workload(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        """The workload as far as a system reads it (its containers' images), or None when
        it does not exist. KeyError while the watches of ``kind`` have not listed."""
        if not self.answers(kind):
            raise KeyError(kind)
        found = self._objects.get((kind, ns, name))
        if found is None:
            return None
        pod = {"containers": [{"name": n, "image": i} for n, i in found.items()]}
        return {
            "kind": kind,
            "metadata": {"namespace": ns, "name": name},
            "spec": {"template": {"spec": pod}},
        }


class Bodies:
    """A few cluster-wide objects (ReleaseCatalogs, VolumeSnapshotClasses) by name, kept by
    their watch; every system that uses them reads them from here."""

    def __init__(self) -> None:
        self._bodies: dict[str, dict[str, Any]] = {}
        self.synced: threading.Event | None = None

    def observe(self, events: Iterable[tuple[str, Mapping[str, Any]]]) -> bool:
        """One batch of the watch; whether anything changed (its resourceVersion)."""
        changed = False
        for event_type, body in events:
            name = str((body.get("metadata") or {}).get("name") or "")
            if event_type == "DELETED":
                changed |= self._bodies.pop(name, None) is not None
                continue
            old = self._bodies.get(name)
            version = (body.get("metadata") or {}).get("resourceVersion")
            if old is None or old["metadata"].get("resourceVersion") != version:
                self._bodies[name] = {**body, "metadata": dict(body.get("metadata") or {})}
                changed = True
        return changed

    def generations(self) -> tuple[tuple[str, str], ...]:
        """(name, generation) of every object, sorted: what changes with their specs (a
        status write changes only the resourceVersion)."""
        return tuple(
            sorted(
                (name, str(b["metadata"].get("generation") or b["metadata"].get("resourceVersion")))
                for name, b in self._bodies.items()
            )
        )

    def listed(self) -> list[dict[str, Any]] | None:
        """Every object, or None while the watch has not listed."""
        if self.synced is None or not self.synced.is_set():
            return None
        return list(self._bodies.values())


class Snapshots:
    """The runs' VolumeSnapshots (label ``patchwarden.io/run``) by system, as their watches
    last saw them: what a system's retention (``backup.retain``) counts when no run of it is
    in progress. Names, labels and creation times only."""

    def __init__(self) -> None:
        self._by_system: dict[tuple[str, str], dict[str, tuple[str, str, str]]] = {}
        """(namespace, system label value) → snapshot name → (run, state, created)."""
        self._synced: list[threading.Event] = []

    def watched_by(self, synced: threading.Event) -> None:
        self._synced.append(synced)

    def observe(self, events: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        for event_type, body in events:
            meta = body.get("metadata") or {}
            labels = meta.get("labels") or {}
            key = (str(meta.get("namespace") or ""), str(labels.get(LABEL_SYSTEM) or ""))
            name = str(meta.get("name") or "")
            if event_type == "DELETED" or meta.get("deletionTimestamp"):
                known = self._by_system.get(key)
                if known is not None:
                    known.pop(name, None)
                    if not known:
                        del self._by_system[key]
                continue
            entry = (
                str(labels.get(LABEL_RUN) or ""),
                str(labels.get(LABEL_STATE) or ""),
                str(meta.get("creationTimestamp") or ""),
            )
            self._by_system.setdefault(key, {})[name] = entry

    def listed(self) -> bool:
        return bool(self._synced) and all(e.is_set() for e in self._synced)

    def of(self, ns: str, system_label: str) -> list[dict[str, Any]] | None:
        """The system's snapshots as ``core/history.prunable`` reads them; None while the
        watches have not listed."""
        if not self.listed():
            return None
        found = dict(self._by_system.get((ns, system_label)) or {})
        out = []
        for name, (run, state, created) in found.items():
            labels = {LABEL_RUN: run, **({LABEL_STATE: state} if state else {})}
            out.append({"metadata": {"name": name, "labels": labels, "creationTimestamp": created}})
        return out
