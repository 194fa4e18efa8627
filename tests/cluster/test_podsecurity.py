"""The operator's Pod Security check agrees with the API server's own Pod Security admission,
case by case, at both levels (a pod created with a dry run in a namespace that enforces it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from patchwarden.core.podsecurity import Level, violations
from tests.conftest import Cluster
from tests.podsecurity_cases import CASES


@pytest.fixture(scope="module")
def enforcing(cluster: Cluster) -> Iterator[dict[Level, str]]:
    """A namespace per level whose Pod Security admission enforces it."""
    core = client.CoreV1Api(cluster.api)
    names = {}
    for level in Level:
        name = f"psa-{level.value}-{uuid.uuid4().hex[:6]}"
        labels = {
            "pod-security.kubernetes.io/enforce": level.value,
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
        core.create_namespace({"metadata": {"name": name, "labels": labels}})
        names[level] = name
    yield names
    for name in names.values():
        core.delete_namespace(name)


def admitted(core: client.CoreV1Api, namespace: str, spec: dict[str, Any]) -> tuple[bool, str]:
    body = {"metadata": {"name": "probe"}, "spec": spec}
    try:
        core.create_namespaced_pod(namespace, body, dry_run="All")
    except ApiException as exc:
        assert exc.status == 403 and "violates PodSecurity" in exc.body, exc.body
        return False, str(exc.body)
    return True, ""


@pytest.mark.parametrize("level", list(Level), ids=lambda lv: lv.value)
def test_every_case_gets_the_api_servers_verdict(
    cluster: Cluster, enforcing: dict[Level, str], level: Level
) -> None:
    core = client.CoreV1Api(cluster.api)
    disagree = []
    for name, spec, *_ in CASES:
        ours = violations(spec, level)
        theirs, why = admitted(core, enforcing[level], spec)
        if (ours == []) != theirs:
            theirs_text = why or "allowed"
            disagree.append(f"{name}: ours {ours or 'allowed'}, the API server's {theirs_text}")
    print(f"{len(CASES)} pods at {level.value}: {len(CASES) - len(disagree)} verdicts agree")
    assert disagree == []
