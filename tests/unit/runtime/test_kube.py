"""The Kubernetes wrapper's request accounting."""

from __future__ import annotations

import pytest

from patchwarden.runtime.kube import resource_of


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
