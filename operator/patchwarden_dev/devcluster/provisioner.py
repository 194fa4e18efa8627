"""The dev cluster's volume provisioner.

It plays a CSI external-provisioner for the storage class ``standard`` of the
local dev cluster, following the same contract so that kube-controller-manager's
volume binder does the binding the normal way:

* for each pending claim of a class whose provisioner is ours, it creates a
  PersistentVolume pre-bound to that claim (``spec.claimRef`` with its UID);
  the binder then sets ``spec.volumeName`` and the ``bind-completed``
  annotation, which the scheduler requires;
* a claim whose ``dataSource`` is a VolumeSnapshot is provisioned only once the
  snapshot is ``readyToUse`` (and never when it is not, as with a real driver);
* a released volume it provisioned with reclaim policy ``Delete`` is deleted.

Like a real external-provisioner it is driven by watches of the claims and of its
volumes (the operator's reflector: one LIST, then events), not by listing them: a
pass that listed every claim twice a second cost a fifth of this 2-core machine
with 500 claims, and would be most of a core with 10,000, skewing every benchmark.

The volumes are ``hostPath`` volumes that nothing mounts: kwok's nodes never
run containers. This module is dev tooling, not part of the operator.
"""

from __future__ import annotations

import argparse
import functools
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from patchwarden.runtime.reflector import Reflector

PROVISIONER = "devcluster.patchwarden.io/hostpath"
PROVISIONED_LABEL = "devcluster.patchwarden.io/provisioned"
SNAPSHOT_GROUP = "snapshot.storage.k8s.io"

CLASSES_TTL = 5.0
SNAPSHOT_RETRY = 0.5
"""How often a claim restored from a snapshot that is not ready yet is looked at again."""

log = logging.getLogger("patchwarden_dev.devcluster.provisioner")


def volume_for_claim(claim: dict[str, Any], storage_class: str) -> dict[str, Any]:
    """The PersistentVolume manifest pre-bound to ``claim`` (a dict as the API returns it)."""
    meta = claim["metadata"]
    spec = claim["spec"]
    size = (spec.get("resources") or {}).get("requests", {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": f"pvc-{meta['uid']}",
            "labels": {PROVISIONED_LABEL: "true"},
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "storageClassName": storage_class,
            "persistentVolumeReclaimPolicy": "Delete",
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "hostPath": {"path": f"/var/lib/patchwarden-devcluster/{meta['uid']}"},
        },
    }


class Provisioner:
    """What the watches report is kept here; :meth:`sync` provisions the pending claims
    and deletes the released volumes, and :func:`main` calls it whenever they report."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.lock = threading.Lock()
        self.pending: dict[tuple[str, str], dict[str, Any]] = {}
        """Claims with no volume yet, by (namespace, name)."""
        self.released: set[str] = set()
        """Volumes we provisioned that were released and are to be deleted."""
        self.wake = threading.Event()
        self._classes: tuple[float, set[str]] = (0.0, set())

    # ---- fed by the watches (their threads) --------------------------------------------
    def claims(self, events: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        with self.lock:
            for kind, claim in events:
                meta = claim["metadata"]
                key = (meta.get("namespace") or "", meta["name"])
                spec, status = claim.get("spec") or {}, claim.get("status") or {}
                if (
                    kind != "DELETED"
                    and status.get("phase") == "Pending"
                    and not spec.get("volumeName")
                ):
                    self.pending[key] = dict(claim)
                else:
                    self.pending.pop(key, None)
        self.wake.set()

    def volumes(self, events: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        with self.lock:
            for kind, volume in events:
                name = volume["metadata"]["name"]
                spec, status = volume.get("spec") or {}, volume.get("status") or {}
                if (
                    kind != "DELETED"
                    and status.get("phase") == "Released"
                    and spec.get("persistentVolumeReclaimPolicy") == "Delete"
                ):
                    self.released.add(name)
                else:
                    self.released.discard(name)
        self.wake.set()

    # ---- acting ------------------------------------------------------------------------
    def _our_classes(self) -> set[str]:
        listed_at, classes = self._classes
        if time.monotonic() - listed_at > CLASSES_TTL:
            classes = {
                sc.metadata.name
                for sc in self.storage.list_storage_class().items
                if sc.provisioner == PROVISIONER
            }
            self._classes = (time.monotonic(), classes)
        return classes

    def _snapshot_ready(self, namespace: str, name: str) -> bool:
        try:
            snap = self.custom.get_namespaced_custom_object(
                SNAPSHOT_GROUP, "v1", namespace, "volumesnapshots", name
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return bool((snap.get("status") or {}).get("readyToUse"))

    def sync(self) -> bool:
        """One pass; whether a claim still waits for its snapshot (look again soon)."""
        with self.lock:
            pending, released = list(self.pending.items()), sorted(self.released)
        waiting = False
        classes = self._our_classes() if pending else set()
        for key, claim in pending:
            spec = claim["spec"]
            if spec.get("storageClassName") not in classes:
                continue
            source = spec.get("dataSource") or {}
            if source.get("kind") == "VolumeSnapshot" and not self._snapshot_ready(
                key[0], source["name"]
            ):
                waiting = True
                continue
            try:
                self.core.create_persistent_volume(
                    volume_for_claim(claim, spec["storageClassName"])
                )
                log.info("provisioned a volume for claim %s/%s", *key)
            except ApiException as exc:
                if exc.status != 409:
                    raise
            with self.lock:  # done (an event of it still Pending adds it back: then 409)
                if self.pending.get(key) is claim:
                    del self.pending[key]
        for name in released:
            try:
                self.core.delete_persistent_volume(name)
                log.info("deleted released volume %s", name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
            with self.lock:
                self.released.discard(name)
        return waiting

    def watches(self) -> list[Reflector]:
        raw: dict[str, Any] = {"_preload_content": False}
        return [
            Reflector(
                functools.partial(self.core.list_persistent_volume_claim_for_all_namespaces, **raw),
                "PersistentVolumeClaims",
                self.claims,
            ),
            Reflector(
                functools.partial(
                    self.core.list_persistent_volume,
                    label_selector=f"{PROVISIONED_LABEL}=true",
                    **raw,
                ),
                "our PersistentVolumes",
                self.volumes,
            ),
        ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument(
        "--interval", type=float, default=30.0, help="seconds between passes with no event"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    provisioner: Provisioner | None = None
    while provisioner is None:
        try:
            provisioner = Provisioner(config.new_client_from_config(args.kubeconfig))
        except Exception as exc:  # the kubeconfig may not be written yet
            log.warning("no client yet, retrying: %s", exc)
            time.sleep(1.0)
    for watch in provisioner.watches():
        watch.start()  # each retries on its own when the API server is starting or restarting
    waiting = False
    while True:
        provisioner.wake.wait(SNAPSHOT_RETRY if waiting else args.interval)
        provisioner.wake.clear()
        try:
            waiting = provisioner.sync()
        except Exception as exc:  # keep serving: the API server may be starting or restarting
            log.warning("pass failed, retrying: %s", exc)
            waiting = True


if __name__ == "__main__":
    main()
