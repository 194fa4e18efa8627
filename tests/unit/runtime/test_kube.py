"""The Kubernetes wrapper's request accounting."""

from __future__ import annotations

from typing import Any

import pytest

from patchwarden.runtime.kube import pages, resource_of


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/apis/patchwarden.io/v1alpha1/namespaces/n/managedsystems/s/status", "managedsystems"),
        ("/apis/apps/v1/namespaces/n/deployments/web", "deployments"),
        ("/api/v1/namespaces/n/persistentvolumeclaims/data", "persistentvolumeclaims"),
        ("/api/v1/namespaces/n/pods?labelSelector=app%3Dweb", "pods"),
        ("/apis/kopf.dev/v1/clusterkopfpeerings/patchwarden", "clusterkopfpeerings"),
        ("/api/v1/namespaces/n", "namespaces"),
    ],
)
def test_the_request_counter_names_the_resource(path: str, resource: str) -> None:
    assert resource_of(path) == resource


def test_a_paged_list_follows_the_continue_token_to_the_last_page() -> None:
    served = {None: ("a", "t1"), "t1": ("b", "t2"), "t2": ("c", "")}
    asked: list[dict[str, Any]] = []

    def call(**kwargs: Any) -> dict[str, Any]:
        asked.append(kwargs)
        item, token = served[kwargs.get("_continue")]
        return {"metadata": {"continue": token}, "items": [item]}

    assert [p["items"] for p in pages(call, 2)] == [["a"], ["b"], ["c"]]
    assert asked == [{"limit": 2}, {"limit": 2, "_continue": "t1"}, {"limit": 2, "_continue": "t2"}]
