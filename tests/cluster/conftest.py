"""Fixtures the operator's cluster tests share: the CRDs, typed clients, an operator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import Cluster
from tests.operator_harness import Operator, running_operator


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    cluster.install_crds()


@pytest.fixture
def core(cluster: Cluster) -> client.CoreV1Api:
    return client.CoreV1Api(cluster.api)


@pytest.fixture
def apps(cluster: Cluster) -> client.AppsV1Api:
    return client.AppsV1Api(cluster.api)


@pytest.fixture
def operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    """The operator serving the test's namespace, for the test's length."""
    with running_operator(cluster, namespace, tmp_path) as op:
        yield op
