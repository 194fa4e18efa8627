"""pytest fixtures shared by every test.

Cluster tests (marker ``cluster``) share one control plane for the session:
the local dev cluster in ``.cluster/`` (reused when ``make cluster-up`` already
started it, else brought up here and removed at the end). With ``CI=true`` a
control plane that cannot be obtained fails the run; locally it skips the
cluster tests with a message that says how to fix it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from patchwarden.devcluster import DevCluster, DevClusterError, resolve_tools
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parent.parent
CLUSTER_TESTS = REPO / "tests" / "cluster"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/cluster/ carries the ``cluster`` marker."""
    for item in items:
        if CLUSTER_TESTS in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@dataclass(frozen=True)
class Cluster:
    """What a cluster test gets: the kubeconfig, an API client and the tools."""

    kubeconfig: Path
    api: client.ApiClient
    tools: Path
    dev: DevCluster

    def kubectl(self, *args: str, check: bool = True) -> str:
        return self.dev.kubectl(*args, check=check)

    def install_crds(self, directory: Path = REPO / "crds") -> None:
        """Apply every CRD in ``directory`` and wait until each is Established."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(directory))
        for path in sorted(directory.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    self.dev.await_condition(f"crd/{doc['metadata']['name']}", "Established", 60)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI needs the local control plane, and it could not be obtained: {reason}")
    pytest.skip(
        f"no control plane ({reason}); run `make cluster-up` to see why, "
        "and see the README's prerequisites"
    )


@pytest.fixture(scope="session")
def tools() -> Path:
    """The directory of the upstream binaries (helm, promtool, kubectl …)."""
    try:
        return resolve_tools(REPO)
    except DevClusterError as exc:
        _unavailable(str(exc))
        raise


@pytest.fixture(scope="session")
def cluster(tools: Path) -> Iterator[Cluster]:
    try:
        dev = DevCluster(state_dir=REPO / ".cluster", tools_dir=tools)
        started_here = not dev.healthy()
        dev.up()
    except DevClusterError as exc:
        _unavailable(str(exc))
        raise  # unreachable: _unavailable fails or skips
    api = config.new_client_from_config(str(dev.kubeconfig))
    try:
        yield Cluster(kubeconfig=dev.kubeconfig, api=api, tools=tools, dev=dev)
    finally:
        api.close()
        if started_here and not os.environ.get("PATCHWARDEN_KEEP_CLUSTER"):
            dev.down()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    core = client.CoreV1Api(cluster.api)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"patchwarden.io/test": "true"}}})
    wait_for(
        lambda: (
            core.list_namespaced_service_account(name, field_selector="metadata.name=default").items
        ),
        timeout=30,
        what=f"the default ServiceAccount of namespace {name}",
    )
    try:
        yield name
    finally:
        core.delete_namespace(name)
