"""``patchwarden status``: the systems in the cluster, as a table or JSON."""

from __future__ import annotations

from typing import Any

from patchwarden.api.common import GROUP, VERSION

COLUMNS = [
    "namespace",
    "name",
    "model",
    "package",
    "eligible",
    "nextWindow",
    "lastRun",
    "result",
    "pending",
    "wave",
    "held",
    "ready",
    "stalled",
]


def rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per system, sorted by namespace and name."""
    out = []
    for item in items:
        spec, status = item.get("spec") or {}, item.get("status") or {}
        last = status.get("lastRun") or {}
        ready = next(
            (c["status"] for c in status.get("conditions", []) if c["type"] == "Ready"), "Unknown"
        )
        stalled = next(
            (
                c["reason"]
                for c in status.get("conditions", [])
                if c["type"] == "Stalled" and c["status"] == "True"
            ),
            "",
        )
        out.append(
            {
                "namespace": item["metadata"]["namespace"],
                "name": item["metadata"]["name"],
                "model": spec.get("serviceModel"),
                "package": spec.get("package"),
                "eligible": status.get("eligible"),
                "nextWindow": (status.get("nextWindow") or {}).get("start"),
                "lastRun": last.get("name"),
                "result": last.get("result"),
                "pending": status.get("pendingUpdates"),
                "wave": ", ".join(w["wave"] for w in status.get("waves") or []),
                "held": next(
                    (
                        c["reason"]
                        for c in status.get("conditions", [])
                        if c["type"] in ("ReleasesHeld", "UpdatesHalted") and c["status"] == "True"
                    ),
                    "",
                ),
                "ready": ready,
                "stalled": stalled,
            }
        )
    return sorted(out, key=lambda r: (r["namespace"], r["name"]))


def fetch(namespace: str | None, api: Any = None) -> list[dict[str, Any]]:
    """The ManagedSystems of ``namespace`` (None: every namespace), through ``api`` (a
    ``CustomObjectsApi``; default: one from the kubeconfig or the in-cluster account)."""
    from kubernetes import client, config

    if api is None:
        config.load_config()
        api = client.CustomObjectsApi()
    if namespace:
        result = api.list_namespaced_custom_object(GROUP, VERSION, namespace, "managedsystems")
    else:
        result = api.list_cluster_custom_object(GROUP, VERSION, "managedsystems")
    return list(result["items"])
