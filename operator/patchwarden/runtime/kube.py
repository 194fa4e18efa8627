"""The Kubernetes calls patchwarden makes, in one place (synchronous client).

Everything returns plain dicts as the API serves them (camelCase keys). A
missing object is ``None``; creating one that exists is not an error (every
name patchwarden creates is deterministic, so a retry finds its own object).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from patchwarden.api.common import GROUP, VERSION

SNAPSHOTS = ("snapshot.storage.k8s.io", "v1")
GROUP_SNAPSHOTS = ("groupsnapshot.storage.k8s.io", "v1")
FIELD_MANAGER = "patchwarden"
"""The server-side-apply field manager of the images the operator sets (docs/gitops.md)."""
LIST_PAGE = 500
"""Objects per page of :meth:`Kube.list_objects`."""
ROLLBACK_MANAGER = "patchwarden-rollback"
"""The field manager of a rollback's write of the workload's recorded spec."""
FINALIZER_ATTEMPTS = 5
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def pages(call: Callable[..., dict[str, Any]], limit: int) -> Iterator[dict[str, Any]]:
    """A paged LIST: each parsed page of at most ``limit`` items, as ``call(limit=...,
    _continue=...)`` returns it, until the server says there is no more."""
    token = None
    while True:
        page = call(limit=limit, **({"_continue": token} if token else {}))
        yield page
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


class KubeApi(Protocol):
    """What the controllers call: :class:`Kube` against the API server, and the in-memory
    fake the unit tests use (``patchwarden_dev/fakekube.py``); mypy checks that both fit."""

    def get(self, plural: str, ns: str, name: str) -> dict[str, Any] | None: ...
    def create(self, plural: str, ns: str, body: dict[str, Any]) -> bool: ...
    def patch_status(
        self,
        plural: str,
        ns: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> str | None: ...
    def set_finalizer(
        self, plural: str, ns: str, name: str, finalizer: str, present: bool
    ) -> None: ...
    def delete(self, plural: str, ns: str, name: str) -> None: ...
    def annotate(self, plural: str, ns: str, name: str, annotations: dict[str, str]) -> None: ...
    def snapshot_classes(self) -> list[dict[str, Any]]: ...
    def get_snapshot(self, ns: str, name: str) -> dict[str, Any] | None: ...
    def create_snapshot(self, ns: str, body: dict[str, Any]) -> None: ...
    def list_snapshots(self, ns: str, selector: str) -> list[dict[str, Any]]: ...
    def delete_snapshot(self, ns: str, name: str) -> None: ...
    def group_snapshot_classes(self) -> list[dict[str, Any]]: ...
    def get_group_snapshot(self, ns: str, name: str) -> dict[str, Any] | None: ...
    def create_group_snapshot(self, ns: str, body: dict[str, Any]) -> None: ...
    def group_members(self, ns: str, group: str) -> dict[str, str]: ...
    def list_group_snapshots(self, ns: str, selector: str) -> list[dict[str, Any]]: ...
    def delete_group_snapshot(self, ns: str, name: str) -> None: ...
    def label_claim(self, ns: str, name: str, key: str, value: str) -> None: ...
    def get_workload(self, kind: str, ns: str, name: str) -> dict[str, Any] | None: ...
    def secret(self, ns: str, name: str) -> dict[str, Any] | None: ...
    def names(self, kind: str, ns: str) -> list[str]: ...
    def replace_workload(self, kind: str, ns: str, body: dict[str, Any]) -> None: ...
    def scale(self, kind: str, ns: str, name: str, replicas: int) -> None: ...
    def pods(self, ns: str, match_labels: dict[str, str]) -> list[dict[str, Any]]: ...
    def delete_pod(self, ns: str, name: str, uid: str | None = None) -> None: ...
    def exec(
        self, ns: str, pod: str, container: str, command: list[str], timeout: float
    ) -> tuple[int | None, str]: ...
    def get_claim(self, ns: str, name: str) -> dict[str, Any] | None: ...
    def delete_claim(self, ns: str, name: str, uid: str | None = None) -> None: ...
    def create_claim(self, ns: str, body: dict[str, Any]) -> None: ...
    def get_job(self, ns: str, name: str) -> dict[str, Any] | None: ...
    def create_job(self, ns: str, body: dict[str, Any]) -> None: ...
    def suspend_job(self, ns: str, name: str) -> None: ...
    def apply_images(
        self, kind: str, ns: str, name: str, images: dict[str, str], version: str | None = None
    ) -> None: ...


REQUEST_TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds of every request that names no timeout of its own (the watches
name theirs). The client's default is to wait for ever: a connection cut without a reset
(the API server's node gone, a network partition) held a worker thread, or a run's step,
for as long as TCP kept retrying (about 15 minutes); the API server ends a request that is
not a watch within 60 s itself."""


def api_client(connections: int) -> client.ApiClient:
    """A client of the cluster the operator runs in (else the kubeconfig's), with a pool of
    ``connections`` (one per thread that calls it) and :data:`REQUEST_TIMEOUT`."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    api = client.ApiClient(configuration)
    with_deadline(api.rest_client)
    return api


def with_deadline(rest: Any, timeout: tuple[float, float] = REQUEST_TIMEOUT) -> None:
    """Give every request of ``rest`` (the client's ``RESTClientObject``) that names no
    ``_request_timeout`` this one."""
    plain = rest.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("_request_timeout"):
            kwargs["_request_timeout"] = timeout
        return plain(method, url, *args, **kwargs)

    rest.request = request


def _missing(exc: ApiException) -> bool:
    return bool(exc.status == 404)


def _delete(delete: Callable[..., Any], ns: str, name: str, uid: str | None = None) -> None:
    """Delete ``name`` in ``ns``; one already gone is fine. With ``uid``, only that object
    (another of the same name made since: 409 Conflict)."""
    try:
        if uid:
            delete(
                name, ns, body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
            )
        else:
            delete(name, ns)
    except ApiException as exc:
        if not _missing(exc):
            raise


def resource_of(path: str) -> str:
    """The resource an API path names: ``/apis/g/v/namespaces/ns/plural/name/status`` → plural."""
    segments = [s for s in path.split("?")[0].split("/") if s]
    segments = segments[2:] if segments[:1] == ["api"] else segments[3:]
    if segments[:1] == ["namespaces"] and len(segments) > 2:
        segments = segments[2:]
    return segments[0] if segments else ""


class Kube:
    def __init__(
        self, api: client.ApiClient, count: Callable[[str, str], None] | None = None
    ) -> None:
        """``count(verb, resource)`` is called once per request (the operator's own
        ``patchwarden_kube_requests_total``)."""
        self.api = api
        if count is not None:
            send = api.rest_client.request

            def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
                count(method, resource_of(url.split("://", 1)[-1].partition("/")[2]))
                return send(method, url, *args, **kwargs)

            api.rest_client.request = counted
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)

    @staticmethod
    def _raw(read: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a typed client method but parse the JSON ourselves: the client's model
        classes cost more CPU than the request itself (measured by the benchmark)."""
        return json.loads(read(*args, _preload_content=False, **kwargs).data)

    def _read(self, read: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
        try:
            return self._raw(read, *args)  # type: ignore[no-any-return]
        except ApiException as exc:
            if _missing(exc):
                return None
            raise

    # ---- patchwarden's own kinds -------------------------------------------------
    def get(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        return self._read(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, ns, plural, name
        )

    def list_objects(
        self, plural: str, ns: str | None = None, selector: str | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """The objects, a page of LIST_PAGE at a time: a year of runs is never one response
        (nor one parsed list) in memory."""
        kwargs: dict[str, Any] = {"label_selector": selector} if selector else {}
        if ns is None:
            call = functools.partial(
                self._raw, self.custom.list_cluster_custom_object, GROUP, VERSION, plural, **kwargs
            )
        else:
            call = functools.partial(
                self._raw,
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                ns,
                plural,
                **kwargs,
            )
        for page in pages(call, LIST_PAGE):
            yield list(page.get("items") or [])

    def create(self, plural: str, ns: str, body: dict[str, Any]) -> bool:
        """Create; False when it already exists."""
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, plural, body)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def patch_status(
        self,
        plural: str,
        ns: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> str | None:
        """Merge-patch the status (``ns`` empty: a cluster-scoped object). With
        ``resource_version``, only onto that version of the object (else 409 Conflict) and
        the new version is returned; without, the answer is read but not parsed."""
        patch: dict[str, Any] = {"status": status}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        if ns:
            response = self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, plural, name, patch, _preload_content=False
            )
        else:
            response = self.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, plural, name, patch, _preload_content=False
            )
        answer = response.read()  # for the connection; parsed only for the new version
        if not resource_version:
            return None
        return str(json.loads(answer)["metadata"]["resourceVersion"])

    def set_finalizer(self, plural: str, ns: str, name: str, finalizer: str, present: bool) -> None:
        """Add (``present``) or remove ``finalizer``, keeping every other one: the list is
        read and written back at the same resourceVersion, again on a conflict."""
        for _ in range(FINALIZER_ATTEMPTS):
            body = self.get(plural, ns, name)
            if body is None:
                return
            meta = body["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            if (finalizer in finalizers) == present:
                return
            finalizers = (
                [*finalizers, finalizer] if present else [f for f in finalizers if f != finalizer]
            )
            patch = {
                "metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}
            }
            try:
                self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, ns, plural, name, patch, _preload_content=False
                ).read()
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
        raise RuntimeError(f"{plural}/{name}: finalizers changed {FINALIZER_ATTEMPTS} times")

    def annotate(self, plural: str, ns: str, name: str, annotations: dict[str, str]) -> None:
        """Merge ``annotations`` into the object's (a gone object is no error)."""
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                plural,
                name,
                {"metadata": {"annotations": annotations}},
                _preload_content=False,
            ).read()
        except ApiException as exc:
            if not _missing(exc):
                raise

    def delete(self, plural: str, ns: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
        except ApiException as exc:
            if not _missing(exc):
                raise

    def post_event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about ``body`` (any object with apiVersion, kind, metadata)."""
        meta = body["metadata"]
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        self.core.create_namespaced_event(
            meta["namespace"],
            {
                "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {
                    "apiVersion": body.get("apiVersion"),
                    "kind": body.get("kind"),
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta.get("uid"),
                },
                "type": type_,
                "reason": reason,
                "message": message[:1000],
                "source": {"component": "patchwarden"},
                "reportingComponent": "patchwarden",
                "reportingInstance": "patchwarden",
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
        )

    # ---- snapshots -----------------------------------------------------------------
    def snapshot_classes(self) -> list[dict[str, Any]]:
        try:
            return list(
                self.custom.list_cluster_custom_object(*SNAPSHOTS, "volumesnapshotclasses")["items"]
            )
        except ApiException as exc:
            if _missing(exc):  # the VolumeSnapshot API is not installed
                return []
            raise

    def get_snapshot(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(*SNAPSHOTS, ns, "volumesnapshots", name)  # type: ignore[no-any-return]
        except ApiException as exc:
            if _missing(exc):
                return None
            raise

    def create_snapshot(self, ns: str, body: dict[str, Any]) -> None:
        try:
            self.custom.create_namespaced_custom_object(*SNAPSHOTS, ns, "volumesnapshots", body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def list_snapshots(self, ns: str, selector: str) -> list[dict[str, Any]]:
        result = self.custom.list_namespaced_custom_object(
            *SNAPSHOTS, ns, "volumesnapshots", label_selector=selector
        )
        return list(result["items"])

    def delete_snapshot(self, ns: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(*SNAPSHOTS, ns, "volumesnapshots", name)
        except ApiException as exc:
            if not _missing(exc):
                raise

    # ---- group snapshots (backup.consistency: Group) -------------------------------------
    def group_snapshot_classes(self) -> list[dict[str, Any]]:
        try:
            found = self.custom.list_cluster_custom_object(
                *GROUP_SNAPSHOTS, "volumegroupsnapshotclasses"
            )
        except ApiException as exc:
            if _missing(exc):  # the VolumeGroupSnapshot API is not installed
                return []
            raise
        return list(found["items"])

    def get_group_snapshot(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
                *GROUP_SNAPSHOTS, ns, "volumegroupsnapshots", name
            )
        except ApiException as exc:
            if _missing(exc):
                return None
            raise

    def create_group_snapshot(self, ns: str, body: dict[str, Any]) -> None:
        try:
            self.custom.create_namespaced_custom_object(
                *GROUP_SNAPSHOTS, ns, "volumegroupsnapshots", body
            )
        except ApiException as exc:
            if exc.status != 409:
                raise

    def group_members(self, ns: str, group: str) -> dict[str, str]:
        """Claim → the VolumeSnapshot of ``group`` that holds it: the snapshot controller
        names the members itself and owns them by the group (they carry no label)."""
        listed = self.custom.list_namespaced_custom_object(*SNAPSHOTS, ns, "volumesnapshots")
        found = {}
        for snapshot in listed["items"]:
            owners = snapshot["metadata"].get("ownerReferences") or []
            if any(
                o.get("kind") == "VolumeGroupSnapshot" and o.get("name") == group for o in owners
            ):
                claim = (
                    (snapshot.get("spec") or {}).get("source", {}).get("persistentVolumeClaimName")
                )
                if claim:
                    found[str(claim)] = str(snapshot["metadata"]["name"])
        return found

    def list_group_snapshots(self, ns: str, selector: str) -> list[dict[str, Any]]:
        try:
            result = self.custom.list_namespaced_custom_object(
                *GROUP_SNAPSHOTS, ns, "volumegroupsnapshots", label_selector=selector
            )
        except ApiException as exc:
            if _missing(exc):
                return []
            raise
        return list(result["items"])

    def delete_group_snapshot(self, ns: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                *GROUP_SNAPSHOTS, ns, "volumegroupsnapshots", name
            )
        except ApiException as exc:
            if not _missing(exc):
                raise

    def label_claim(self, ns: str, name: str, key: str, value: str) -> None:
        self.core.patch_namespaced_persistent_volume_claim(
            name, ns, {"metadata": {"labels": {key: value}}}
        )

    # ---- workloads, pods, claims, jobs -------------------------------------------------
    def apply_images(
        self, kind: str, ns: str, name: str, images: dict[str, str], version: str | None = None
    ) -> None:
        """Set the containers' images by server-side apply as :data:`FIELD_MANAGER` (taking
        the fields over from whoever owned them, such as a GitOps controller); with
        ``version``, onto that resourceVersion only (else 409 Conflict)."""
        meta = {"name": name, "namespace": ns}
        if version:
            meta["resourceVersion"] = version
        body = {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": meta,
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": c, "image": i} for c, i in sorted(images.items())]
                    }
                }
            },
        }
        patch = (
            self.apps.patch_namespaced_deployment
            if kind == "Deployment"
            else self.apps.patch_namespaced_stateful_set
        )
        patch(
            name,
            ns,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    def secret(self, ns: str, name: str) -> dict[str, Any] | None:
        """One Secret (the chart grants ``get`` on the notification Secret's name only)."""
        return self._read(self.core.read_namespaced_secret, name, ns)

    def get_workload(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        read = (
            self.apps.read_namespaced_deployment
            if kind == "Deployment"
            else self.apps.read_namespaced_stateful_set
        )
        body = self._read(read, name, ns)
        if body is not None:
            body["kind"] = kind
        return body

    def names(self, kind: str, ns: str) -> list[str]:
        """Names of the Deployments, StatefulSets or PersistentVolumeClaims in ``ns``."""
        list_ = {
            "Deployment": self.apps.list_namespaced_deployment,
            "StatefulSet": self.apps.list_namespaced_stateful_set,
            "PersistentVolumeClaim": self.core.list_namespaced_persistent_volume_claim,
        }[kind]
        # Metadata only: the server encodes and we parse a fraction of each object.
        items = self._raw(list_, ns, _headers={"Accept": METADATA_LIST}).get("items") or []
        return [item["metadata"]["name"] for item in items]

    def exec(
        self, ns: str, pod: str, container: str, command: list[str], timeout: float
    ) -> tuple[int | None, str]:
        """Run ``command`` in a container (pods/exec, as ``kubectl exec``): its exit code
        (None when it did not end within ``timeout`` seconds) and its output (stdout, then
        stderr)."""
        from kubernetes.stream import stream  # websockets: only for exec hooks

        # ``stream`` swaps the client's ``call_api`` for a websocket one while it connects:
        # on the shared client, every other thread's request in that moment would go out
        # as a websocket, and two execs at once could leave it swapped for good. So each
        # exec has a client of its own.
        with client.ApiClient(self.api.configuration) as own:
            return self._exec(
                stream(
                    client.CoreV1Api(own).connect_get_namespaced_pod_exec,
                    pod,
                    ns,
                    container=container,
                    command=command,
                    stderr=True,
                    stdout=True,
                    stdin=False,
                    tty=False,
                    _preload_content=False,
                ),
                timeout,
            )

    @staticmethod
    def _exec(response: Any, timeout: float) -> tuple[int | None, str]:
        """Read an exec's output until it ends or ``timeout`` seconds pass, then close it."""
        out, err = [], []
        deadline = time.monotonic() + timeout
        try:
            while response.is_open() and time.monotonic() < deadline:
                response.update(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                if response.peek_stdout():
                    out.append(response.read_stdout())
                if response.peek_stderr():
                    err.append(response.read_stderr())
            ended = not response.is_open()
            code = response.returncode if ended else None
        finally:
            response.close()
        return code, "".join(out) + "".join(err)

    def replace_workload(self, kind: str, ns: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        if kind == "Deployment":
            self.apps.replace_namespaced_deployment(name, ns, body, field_manager=ROLLBACK_MANAGER)
        else:
            self.apps.replace_namespaced_stateful_set(
                name, ns, body, field_manager=ROLLBACK_MANAGER
            )

    def scale(self, kind: str, ns: str, name: str, replicas: int) -> None:
        patch = {"spec": {"replicas": replicas}}
        if kind == "Deployment":
            self.apps.patch_namespaced_deployment_scale(name, ns, patch)
        else:
            self.apps.patch_namespaced_stateful_set_scale(name, ns, patch)

    def pods(self, ns: str, match_labels: dict[str, str]) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))
        return list(self._raw(self.core.list_namespaced_pod, ns, label_selector=selector)["items"])

    def delete_pod(self, ns: str, name: str, uid: str | None = None) -> None:
        _delete(self.core.delete_namespaced_pod, ns, name, uid)

    def get_claim(self, ns: str, name: str) -> dict[str, Any] | None:
        return self._read(self.core.read_namespaced_persistent_volume_claim, name, ns)

    def delete_claim(self, ns: str, name: str, uid: str | None = None) -> None:
        _delete(self.core.delete_namespaced_persistent_volume_claim, ns, name, uid)

    def create_claim(self, ns: str, body: dict[str, Any]) -> None:
        try:
            self.core.create_namespaced_persistent_volume_claim(ns, body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def get_job(self, ns: str, name: str) -> dict[str, Any] | None:
        return self._read(self.batch.read_namespaced_job, name, ns)

    def create_job(self, ns: str, body: dict[str, Any]) -> None:
        try:
            self.batch.create_namespaced_job(ns, body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def suspend_job(self, ns: str, name: str) -> None:
        """Suspend the Job (its controller deletes its running pods); one gone is fine."""
        try:
            self.batch.patch_namespaced_job(name, ns, {"spec": {"suspend": True}})
        except ApiException as exc:
            if not _missing(exc):
                raise


def _satisfies(kube: Kube) -> KubeApi:
    return kube  # mypy: the real wrapper satisfies the Protocol the controllers are typed with
