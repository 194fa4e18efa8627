"""An in-memory :class:`~patchwarden.runtime.kube.KubeApi` for unit tests of the controllers.

Objects live in one map by (plural, namespace, name), as the API server would
return them; every call is recorded in ``calls`` ("verb plural/name"). It is typed
against the same Protocol as the real wrapper (the assignment at the bottom makes
mypy check it), so a method the controllers start calling must appear in both.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.rest import ApiException

from patchwarden.core.builders import LABEL_SYSTEM
from patchwarden.core.releases import Catalogs
from patchwarden.core.times import utc_text
from patchwarden.runtime.kube import KubeApi
from patchwarden.runtime.view import ReadModel, rollout_records

WORKLOADS = {"Deployment": "deployments", "StatefulSet": "statefulsets"}
Key = tuple[str, str, str]


def merge(old: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386): maps merge, anything else replaces, None deletes."""
    out = copy.deepcopy(old)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.snapshots_ready = True
        """A snapshot created here is ready at once (False: it stays not ready)."""
        self.conflicts = 0
        self.versions = 0
        """The last resourceVersion given (objects a test puts have none until written)."""
        """The next this many workload replacements fail with 409, as a concurrent writer's."""
        self.exec_answers: dict[tuple[str, ...], tuple[int | None, str]] = {}
        self.executed: list[tuple[str, str, list[str]]] = []

    # ---- helpers for tests -----------------------------------------------------------
    def put(self, plural: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(body)
        stored.setdefault("metadata", {}).setdefault("namespace", ns)
        self.objects[(plural, ns, stored["metadata"]["name"])] = stored
        return stored

    def stored(self, plural: str, ns: str, name: str) -> dict[str, Any]:
        """The object itself (not a copy), for a test to change or inspect."""
        return self.objects[(plural, ns, name)]

    def created(self) -> list[str]:
        return [c for c in self.calls if c.startswith("create ")]

    def _call(self, verb: str, plural: str, name: str = "") -> None:
        self.calls.append(f"{verb} {plural}/{name}" if name else f"{verb} {plural}")

    def _get(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        self._call("get", plural, name)
        found = self.objects.get((plural, ns, name))
        return copy.deepcopy(found) if found is not None else None

    def _create(self, plural: str, ns: str, body: dict[str, Any]) -> bool:
        self._call("create", plural, body["metadata"]["name"])
        if (plural, ns, body["metadata"]["name"]) in self.objects:
            return False
        stored = self.put(plural, ns, body)
        # As the API server does: creation order is visible in creationTimestamp.
        created = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(seconds=len(self.calls))
        stored["metadata"].setdefault("creationTimestamp", utc_text(created))
        return True

    def _delete(self, plural: str, ns: str, name: str) -> None:
        self._call("delete", plural, name)
        self.objects.pop((plural, ns, name), None)

    def _list(self, plural: str, ns: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (p, n, _), o in self.objects.items() if (p, n) == (plural, ns)]

    # ---- KubeApi -----------------------------------------------------------------------
    def get(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        return self._get(plural, ns, name)

    def create(self, plural: str, ns: str, body: dict[str, Any]) -> bool:
        return self._create(plural, ns, body)

    def patch_status(
        self,
        plural: str,
        ns: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> str | None:
        """As the API server: with ``resource_version``, only onto that version (else 409);
        each write gives the object a new version."""
        self._call("patch", f"{plural}/status", name)
        key = (plural, ns, name)
        if key not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        current = self.objects[key]["metadata"].get("resourceVersion")
        if resource_version and resource_version != current:
            raise ApiException(status=409, reason="Conflict")
        self.objects[key] = merge(self.objects[key], {"status": status})
        return self.bump(key)

    def bump(self, key: Key) -> str:
        """A new resourceVersion for the object at ``key`` (a write changed it)."""
        self.versions += 1
        self.objects[key]["metadata"]["resourceVersion"] = str(self.versions)
        return str(self.versions)

    def set_finalizer(self, plural: str, ns: str, name: str, finalizer: str, present: bool) -> None:
        stored = self.objects.get((plural, ns, name))
        if stored is None:
            return
        meta = stored["metadata"]
        finalizers = [f for f in meta.get("finalizers") or [] if f != finalizer]
        if present:
            finalizers.append(finalizer)
        if finalizers != (meta.get("finalizers") or []):
            self._call("patch", plural, name)
            meta["finalizers"] = finalizers
            self.bump((plural, ns, name))
        if not finalizers and meta.get("deletionTimestamp"):
            del self.objects[(plural, ns, name)]  # the last finalizer gone: deleted

    def annotate(self, plural: str, ns: str, name: str, annotations: dict[str, str]) -> None:
        stored = self.objects.get((plural, ns, name))
        if stored is None:
            return
        self._call("patch", plural, name)
        stored["metadata"].setdefault("annotations", {}).update(annotations)
        self.bump((plural, ns, name))

    def delete(self, plural: str, ns: str, name: str) -> None:
        self._delete(plural, ns, name)

    def snapshot_classes(self) -> list[dict[str, Any]]:
        self._call("list", "volumesnapshotclasses")
        return self._list("volumesnapshotclasses", "")

    def get_snapshot(self, ns: str, name: str) -> dict[str, Any] | None:
        return self._get("volumesnapshots", ns, name)

    def create_snapshot(self, ns: str, body: dict[str, Any]) -> None:
        ready = {"status": {"readyToUse": True}} if self.snapshots_ready else {}
        self._create("volumesnapshots", ns, {**body, **ready})

    def list_snapshots(self, ns: str, selector: str) -> list[dict[str, Any]]:
        self._call("list", "volumesnapshots")
        key, _, value = selector.partition("=")
        return [
            s
            for s in self._list("volumesnapshots", ns)
            if (s["metadata"].get("labels") or {}).get(key) == value
        ]

    def delete_snapshot(self, ns: str, name: str) -> None:
        self._delete("volumesnapshots", ns, name)

    def group_snapshot_classes(self) -> list[dict[str, Any]]:
        self._call("list", "volumegroupsnapshotclasses")
        return self._list("volumegroupsnapshotclasses", "")

    def get_group_snapshot(self, ns: str, name: str) -> dict[str, Any] | None:
        return self._get("volumegroupsnapshots", ns, name)

    def create_group_snapshot(self, ns: str, body: dict[str, Any]) -> None:
        """As the snapshot controller does: a member snapshot of each claim the selector
        selects, owned by the group (no labels, a generated name); ready at once unless
        ``snapshots_ready`` is False."""
        if not self._create("volumegroupsnapshots", ns, body) or not self.snapshots_ready:
            return
        name = body["metadata"]["name"]
        wanted = body["spec"]["source"]["selector"]["matchLabels"]
        for claim in self._list("persistentvolumeclaims", ns):
            labels = claim["metadata"].get("labels") or {}
            if all(labels.get(k) == v for k, v in wanted.items()):
                member = f"snapshot-{name}-{claim['metadata']['name']}"
                owner = {"kind": "VolumeGroupSnapshot", "name": name}
                self.put(
                    "volumesnapshots",
                    ns,
                    {
                        "metadata": {"name": member, "ownerReferences": [owner]},
                        "spec": {
                            "source": {"persistentVolumeClaimName": claim["metadata"]["name"]}
                        },
                        "status": {"readyToUse": True},
                    },
                )
        stored = self.stored("volumegroupsnapshots", ns, name)
        stored["status"] = {"readyToUse": True, "creationTime": "2000-01-01T00:00:00Z"}

    def group_members(self, ns: str, group: str) -> dict[str, str]:
        self._call("list", "volumesnapshots")
        return {
            s["spec"]["source"]["persistentVolumeClaimName"]: s["metadata"]["name"]
            for s in self._list("volumesnapshots", ns)
            if any(o.get("name") == group for o in s["metadata"].get("ownerReferences") or [])
        }

    def list_group_snapshots(self, ns: str, selector: str) -> list[dict[str, Any]]:
        self._call("list", "volumegroupsnapshots")
        key, _, value = selector.partition("=")
        return [
            s
            for s in self._list("volumegroupsnapshots", ns)
            if (s["metadata"].get("labels") or {}).get(key) == value
        ]

    def delete_group_snapshot(self, ns: str, name: str) -> None:
        self._delete("volumegroupsnapshots", ns, name)
        for (plural, n, member), body in list(self.objects.items()):
            owners = body["metadata"].get("ownerReferences") or []
            if (plural, n) == ("volumesnapshots", ns) and any(
                o.get("name") == name for o in owners
            ):
                del self.objects[(plural, n, member)]

    def label_claim(self, ns: str, name: str, key: str, value: str) -> None:
        self._call("patch", "persistentvolumeclaims", name)
        claim = self.objects.get(("persistentvolumeclaims", ns, name))
        if claim is None:
            raise ApiException(status=404, reason="Not Found")
        claim["metadata"].setdefault("labels", {})[key] = value

    def secret(self, ns: str, name: str) -> dict[str, Any] | None:
        self._call("get", "secrets", name)
        return self.objects.get(("secrets", ns, name))

    def get_workload(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        return self._get(WORKLOADS[kind], ns, name)

    def names(self, kind: str, ns: str) -> list[str]:
        plural = WORKLOADS.get(kind, "persistentvolumeclaims")
        self._call("list", plural)
        return [o["metadata"]["name"] for o in self._list(plural, ns)]

    def replace_workload(self, kind: str, ns: str, body: dict[str, Any]) -> None:
        self._call("replace", WORKLOADS[kind], body["metadata"]["name"])
        if self.conflicts:
            self.conflicts -= 1
            raise ApiException(status=409, reason="Conflict")
        stored = self.stored(WORKLOADS[kind], ns, body["metadata"]["name"])
        stored["spec"] = copy.deepcopy(body["spec"])

    def apply_images(
        self, kind: str, ns: str, name: str, images: dict[str, str], version: str | None = None
    ) -> None:
        self._call("apply", WORKLOADS[kind], name)
        stored = self.stored(WORKLOADS[kind], ns, name)
        if version and version != stored["metadata"].get("resourceVersion"):
            raise ApiException(status=409, reason="Conflict")
        pod = stored["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            if container["name"] in images:
                container["image"] = images[container["name"]]
        meta = stored["metadata"]
        meta["generation"] = meta.get("generation", 1) + 1
        self.bump((WORKLOADS[kind], ns, name))

    def scale(self, kind: str, ns: str, name: str, replicas: int) -> None:
        self._call("scale", WORKLOADS[kind], name)
        self.stored(WORKLOADS[kind], ns, name)["spec"]["replicas"] = replicas

    def pods(self, ns: str, match_labels: dict[str, str]) -> list[dict[str, Any]]:
        self._call("list", "pods")
        return [
            p
            for p in self._list("pods", ns)
            if match_labels.items() <= (p["metadata"].get("labels") or {}).items()
        ]

    def delete_pod(self, ns: str, name: str, uid: str | None = None) -> None:
        self._precondition("pods", ns, name, uid)
        self._delete("pods", ns, name)

    def exec(
        self, ns: str, pod: str, container: str, command: list[str], timeout: float
    ) -> tuple[int | None, str]:
        """Answered from ``exec_answers`` (command → (exit code, output)); else exit 0."""
        self._call("exec", "pods", pod)
        self.executed.append((pod, container, list(command)))
        return self.exec_answers.get(tuple(command), (0, ""))

    def get_claim(self, ns: str, name: str) -> dict[str, Any] | None:
        return self._get("persistentvolumeclaims", ns, name)

    def delete_claim(self, ns: str, name: str, uid: str | None = None) -> None:
        self._precondition("persistentvolumeclaims", ns, name, uid)
        self._delete("persistentvolumeclaims", ns, name)

    def _precondition(self, plural: str, ns: str, name: str, uid: str | None) -> None:
        """As the API server: a delete for ``uid`` of an object of another uid is refused."""
        found = self.objects.get((plural, ns, name))
        if uid and found is not None and found["metadata"].get("uid", uid) != uid:
            raise ApiException(status=409, reason="Conflict")

    def create_claim(self, ns: str, body: dict[str, Any]) -> None:
        self._create("persistentvolumeclaims", ns, body)

    def get_job(self, ns: str, name: str) -> dict[str, Any] | None:
        return self._get("jobs", ns, name)

    def create_job(self, ns: str, body: dict[str, Any]) -> None:
        self._create("jobs", ns, body)

    def suspend_job(self, ns: str, name: str) -> None:
        self._call("patch", "jobs", name)
        job = self.objects.get(("jobs", ns, name))
        if job is not None:
            job.setdefault("spec", {})["suspend"] = True


_checked: KubeApi = FakeKube()
"""mypy: the fake satisfies the same Protocol as :class:`patchwarden.runtime.kube.Kube`."""


class FakeView:
    """The read model (``runtime/view.py: ReadModel``) over a :class:`FakeKube`'s objects,
    as if every watch had listed them: reading it records no call (a watch-fed view asks
    the API server nothing)."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube

    def _all(self, plural: str, ns: str | None = None) -> list[dict[str, Any]]:
        return [o for (p, n, _), o in self.kube.objects.items() if p == plural and ns in (None, n)]

    def exists(self, kind: str, ns: str, name: str) -> bool:
        return (WORKLOADS.get(kind, "persistentvolumeclaims"), ns, name) in self.kube.objects

    def workload(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        found = self.kube.objects.get((WORKLOADS[kind], ns, name))
        return copy.deepcopy(found) if found is not None else None

    def catalogs(self) -> Catalogs:
        return Catalogs.of(self._all("releasecatalogs"))

    def catalog_records(self) -> dict[str, list[dict[str, Any]]]:
        return rollout_records(self._all("releasecatalogs"))

    def snapshot_classes(self) -> list[dict[str, Any]]:
        return self._all("volumesnapshotclasses")

    def snapshots_of(self, ns: str, system_label: str) -> list[dict[str, Any]]:
        return [
            s
            for s in self._all("volumesnapshots", ns)
            if (s["metadata"].get("labels") or {}).get(LABEL_SYSTEM) == system_label
        ]

    def all_systems(self) -> Iterable[Mapping[str, Any]]:
        return self._all("managedsystems")


_view: ReadModel = FakeView(FakeKube())
