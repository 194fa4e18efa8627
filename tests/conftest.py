"""pytest fixtures shared by every test.

Cluster tests (marker ``cluster``) share one control plane for the session:
the local dev cluster in ``.cluster/`` (reused when ``make cluster-up`` already
started it, else brought up here and removed at the end). Real-node tests
(marker ``node``, under tests/node/) share the real-node cluster in
``.cluster-node/`` the same way; when they brought it up, its teardown must
leave the machine as it found it, or the session fails. With ``CI=true`` a
cluster that cannot be obtained fails the run; locally it skips those tests
with a message that says how to fix it.
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
from kubernetes.client.rest import ApiException

from patchwarden_dev.devcluster import DevCluster, DevClusterError, resolve_tools
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parent.parent
CLUSTER_TESTS = REPO / "tests" / "cluster"
NODE_TESTS = REPO / "tests" / "node"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/cluster/ carries the ``cluster`` marker, every test
    under tests/node/ the ``node`` marker."""
    for item in items:
        parents = Path(str(item.fspath)).parents
        if CLUSTER_TESTS in parents:
            item.add_marker(pytest.mark.cluster)
        if NODE_TESTS in parents:
            item.add_marker(pytest.mark.node)


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


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    if in_ci():
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
    yield from _fresh_namespace(cluster, "t")


def _fresh_namespace(cluster: Cluster, prefix: str) -> Iterator[str]:
    core = client.CoreV1Api(cluster.api)
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
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
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status not in (404, 409):  # the test deleted it itself
                raise


@pytest.fixture(scope="session")
def node_cluster() -> Iterator[Cluster]:
    """The real-node dev cluster (kubelet, containerd, CSI hostpath), shared by the
    session. When this session brought it up, it takes it down at the end and
    fails unless the machine is then as it was before (processes, mounts,
    cgroups, links, ip_forward, iptables, directories)."""
    from patchwarden_dev.devcluster import machine
    from patchwarden_dev.devcluster.realnode import RealNodeCluster

    state_dir = REPO / ".cluster-node"
    try:
        dev = RealNodeCluster(
            state_dir=state_dir, tools_dir=resolve_tools(REPO, node=True), repo=REPO
        )
        started_here = not dev.healthy()
        before = machine.snapshot(state_dir) if started_here else None
        dev.up()
    except (DevClusterError, OSError) as exc:
        if in_ci():
            pytest.fail(f"CI needs the real-node cluster, and it could not be obtained: {exc}")
        pytest.skip(
            f"no real-node cluster ({exc}); run `make cluster-up NODE=real` to see why "
            "(root and hack/node/deps.sh needed)"
        )
    api = config.new_client_from_config(str(dev.kubeconfig))
    try:
        yield Cluster(kubeconfig=dev.kubeconfig, api=api, tools=dev.tools_dir, dev=dev)
    finally:
        api.close()
        if started_here and not os.environ.get("PATCHWARDEN_KEEP_CLUSTER"):
            dev.down()
            after = machine.snapshot(state_dir)
            changed = {k: (before[k], after[k]) for k in after if before and before[k] != after[k]}
            assert not changed, f"the real node's teardown left the machine changed: {changed}"


@pytest.fixture
def node_namespace(node_cluster: Cluster) -> Iterator[str]:
    """A fresh namespace on the real-node cluster, deleted afterwards."""
    yield from _fresh_namespace(node_cluster, "n")
