"""Release what a stopped operator leaves behind, so that a namespace can be deleted."""

from __future__ import annotations

from kubernetes import client
from kubernetes.client.rest import ApiException

from patchwarden.api.common import GROUP, VERSION

PLURALS = ("managedsystems", "updaterequests", "updateruns")


def release_finalizers(custom: client.CustomObjectsApi, namespace: str) -> int:
    """Drop kopf's finalizer from every patchwarden object in ``namespace`` (no operator
    serves it any more); returns how many were released."""
    released = 0
    for plural in PLURALS:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        for obj in items.get("items", []):
            if not obj["metadata"].get("finalizers"):
                continue
            try:
                custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    plural,
                    obj["metadata"]["name"],
                    {"metadata": {"finalizers": None}},
                )
                released += 1
            except ApiException as exc:
                if exc.status != 404:  # gone meanwhile: nothing to release
                    raise
    return released
