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

The volumes are ``hostPath`` volumes that nothing mounts: kwok's nodes never
run containers. This module is dev tooling, not part of the operator.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

PROVISIONER = "devcluster.patchwarden.io/hostpath"
PROVISIONED_LABEL = "devcluster.patchwarden.io/provisioned"
SNAPSHOT_GROUP = "snapshot.storage.k8s.io"

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
    """One pass of :meth:`sync` provisions what is pending and deletes what is released."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def _our_classes(self) -> set[str]:
        return {
            sc.metadata.name
            for sc in self.storage.list_storage_class().items
            if sc.provisioner == PROVISIONER
        }

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

    def sync(self) -> None:
        classes = self._our_classes()
        api = self.core.api_client
        for item in self.core.list_persistent_volume_claim_for_all_namespaces().items:
            claim: dict[str, Any] = api.sanitize_for_serialization(item)
            spec = claim["spec"]
            if claim.get("status", {}).get("phase") != "Pending" or spec.get("volumeName"):
                continue
            if spec.get("storageClassName") not in classes:
                continue
            source = spec.get("dataSource") or {}
            ns, name = claim["metadata"]["namespace"], claim["metadata"]["name"]
            if source.get("kind") == "VolumeSnapshot" and not self._snapshot_ready(
                ns, source["name"]
            ):
                continue
            try:
                self.core.create_persistent_volume(
                    volume_for_claim(claim, spec["storageClassName"])
                )
                log.info("provisioned a volume for claim %s/%s", ns, name)
            except ApiException as exc:
                if exc.status != 409:
                    raise
        released = self.core.list_persistent_volume(label_selector=f"{PROVISIONED_LABEL}=true")
        for pv in released.items:
            if (
                pv.status.phase == "Released"
                and pv.spec.persistent_volume_reclaim_policy == "Delete"
            ):
                try:
                    self.core.delete_persistent_volume(pv.metadata.name)
                    log.info("deleted released volume %s", pv.metadata.name)
                except ApiException as exc:
                    if exc.status != 404:
                        raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between passes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    provisioner: Provisioner | None = None
    while True:
        try:
            if provisioner is None:
                provisioner = Provisioner(config.new_client_from_config(args.kubeconfig))
            provisioner.sync()
        except Exception as exc:  # keep serving: the API server may be starting or restarting
            log.warning("pass failed, retrying: %s", exc)
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
