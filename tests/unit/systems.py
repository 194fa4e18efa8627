"""What the systems' unit tests share: a release catalog and a component bound to it."""

from __future__ import annotations

from typing import Any

CATALOG: dict[str, Any] = {
    "apiVersion": "patchwarden.io/v1alpha1",
    "kind": "ReleaseCatalog",
    "metadata": {"name": "tested", "resourceVersion": "1"},
    "spec": {
        "components": [
            {
                "name": "postgres",
                "releases": [
                    {
                        "version": v,
                        "image": f"pg:{v}",
                        "classes": c,
                        "released": "2027-01-01T00:00:00Z",
                    }
                    for v, c in (
                        ("16.3", ["security"]),
                        ("16.4", ["security"]),
                        ("16.5", ["feature"]),
                    )
                ],
            }
        ]
    },
}
"""postgres 16.3 and 16.4 (security) and 16.5 (feature), released on 2027-01-01."""
POSTGRES: dict[str, Any] = {
    "name": "postgres",
    "container": "db",
    "installedBy": "provider",
    "source": "standard-repository",
    "layer": "middleware",
}
"""The postgres component, run by container ``db`` of its workload."""
