"""Pure checks of the dev cluster's configuration (no cluster needed)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from patchwarden_dev.devcluster.cluster import MANIFESTS, DevCluster
from patchwarden_dev.devcluster.provisioner import (
    PROVISIONED_LABEL,
    PROVISIONER,
    Provisioner,
    volume_for_claim,
)

REPO = Path(__file__).resolve().parents[3]


def manifests(name: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((MANIFESTS / name).read_text()))


def go_mod_requirement(tool: str, module: str) -> str:
    text = (REPO / "hack" / "tools" / tool / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)$", text, re.MULTILINE)
    assert match, f"{module} is not required in hack/tools/{tool}/go.mod"
    return match.group(1)


@pytest.mark.parametrize(
    ("tool", "module", "series"),
    [
        ("kubernetes", "k8s.io/kubernetes", "v1.34."),
        ("etcd", "go.etcd.io/etcd/server/v3", "v3.6."),
        ("helm", "helm.sh/helm/v3", "v3."),
        ("kwok", "sigs.k8s.io/kwok", "v0."),
    ],
)
def test_wrapper_modules_pin_the_agreed_release_series(tool: str, module: str, series: str) -> None:
    assert go_mod_requirement(tool, module).startswith(series)


def test_every_kubernetes_staging_module_is_replaced_by_the_same_release() -> None:
    text = (REPO / "hack" / "tools" / "kubernetes" / "go.mod").read_text()
    minor = go_mod_requirement("kubernetes", "k8s.io/kubernetes").removeprefix("v1.")
    replaced = dict(
        re.findall(r"^\s*(k8s\.io/[\w-]+) => k8s\.io/[\w-]+ (v\S+)$", text, re.MULTILINE)
    )
    assert len(replaced) == 31
    assert set(replaced.values()) == {f"v0.{minor}"}


def test_kwokctl_config_is_loopback_rbac_and_uses_only_given_binaries(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    conf = DevCluster(state_dir=tmp_path / "state", tools_dir=tools).kwokctl_config()
    options = conf["options"]
    assert options["bindAddress"] == "127.0.0.1"
    assert options["kubeAuthorization"] is True
    assert options["runtime"] == "binary"
    binaries = {k: v for k, v in options.items() if k.endswith("Binary")}
    assert set(binaries) == {
        "kubeApiserverBinary",
        "kubeControllerManagerBinary",
        "kubeSchedulerBinary",
        "kubectlBinary",
        "kwokControllerBinary",
        "etcdBinary",
    }
    assert all(Path(v).parent == tools for v in binaries.values())
    patches = {p["name"]: p["extraArgs"] for p in conf["componentsPatches"]}
    args = {name: {a["key"]: a["value"] for a in extra} for name, extra in patches.items()}
    assert args == {
        "kube-controller-manager": {
            "leader-elect": "false",
            "kube-api-qps": "100",
            "kube-api-burst": "200",
        },
        "kube-scheduler": {"leader-elect": "false"},
    }


def test_pod_complete_and_pod_fail_stages_are_mutually_exclusive() -> None:
    """kwok picks a random stage among matches, so the outcome selectors must not overlap."""
    stages = {s["metadata"]["name"]: s for s in manifests("stages.yaml")}
    key = '.metadata.annotations["devcluster.patchwarden.io/outcome"]'

    def outcome_rule(stage: str) -> dict[str, Any]:
        rules = stages[stage]["spec"]["selector"]["matchExpressions"]
        return next(r for r in rules if r["key"] == key)

    assert outcome_rule("pod-complete") == {"key": key, "operator": "NotIn", "values": ["fail"]}
    assert outcome_rule("pod-fail") == {"key": key, "operator": "In", "values": ["fail"]}
    assert outcome_rule("volumesnapshot-ready")["operator"] == "NotIn"
    assert outcome_rule("volumesnapshot-fail")["operator"] == "In"


def test_stages_cover_the_whole_pod_and_node_lifecycle() -> None:
    kinds: dict[str, set[str]] = {}
    for stage in manifests("stages.yaml"):
        kinds.setdefault(stage["spec"]["resourceRef"]["kind"], set()).add(stage["metadata"]["name"])
    assert {"pod-ready", "pod-complete", "pod-fail", "pod-delete"} <= kinds["Pod"]
    assert {"node-initialize", "node-heartbeat"} <= kinds["Node"]
    assert "volumesnapshot-ready" in kinds["VolumeSnapshot"]


def test_snapshot_crds_carry_the_api_approval_annotation_and_status_subresource() -> None:
    crds = {c["spec"]["names"]["kind"]: c for c in manifests("snapshot-crds.yaml")}
    assert set(crds) == {"VolumeSnapshot", "VolumeSnapshotContent", "VolumeSnapshotClass"}
    for crd in crds.values():
        assert crd["spec"]["group"] == "snapshot.storage.k8s.io"
        assert "api-approved.kubernetes.io" in crd["metadata"]["annotations"]
    for kind in ("VolumeSnapshot", "VolumeSnapshotContent"):
        assert crds[kind]["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_volume_for_claim_is_pre_bound_to_the_claim() -> None:
    claim = {
        "metadata": {"namespace": "shop", "name": "data", "uid": "1234"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "5Gi"}},
            "storageClassName": "standard",
        },
    }
    pv = volume_for_claim(claim, "standard")
    assert pv["metadata"]["name"] == "pvc-1234"
    assert pv["metadata"]["labels"] == {PROVISIONED_LABEL: "true"}
    assert pv["spec"]["claimRef"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "shop",
        "name": "data",
        "uid": "1234",
    }
    assert pv["spec"]["capacity"] == {"storage": "5Gi"}
    assert pv["spec"]["storageClassName"] == "standard"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"


class _Api:
    """What the provisioner calls, recorded; snapshots named in ``ready`` are ready."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.ready: set[str] = set()

    def list_storage_class(self) -> Any:
        self.calls.append("list storageclasses")
        item = SimpleNamespace(metadata=SimpleNamespace(name="standard"), provisioner=PROVISIONER)
        return SimpleNamespace(items=[item])

    def create_persistent_volume(self, body: dict[str, Any]) -> None:
        self.calls.append(f"create {body['metadata']['name']}")

    def delete_persistent_volume(self, name: str) -> None:
        self.calls.append(f"delete {name}")

    def get_namespaced_custom_object(self, *args: str) -> dict[str, Any]:
        self.calls.append(f"get snapshot {args[-1]}")
        return {"status": {"readyToUse": args[-1] in self.ready}}


def _claim(name: str, phase: str = "Pending", snapshot: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"storageClassName": "standard"}
    if snapshot:
        spec["dataSource"] = {"kind": "VolumeSnapshot", "name": snapshot}
    meta = {"namespace": "shop", "name": name, "uid": f"u-{name}"}
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


def test_the_provisioner_acts_on_what_its_watches_report_and_lists_no_claim() -> None:
    from kubernetes import client

    prov = Provisioner(client.ApiClient())
    api = _Api()
    prov.core = prov.storage = prov.custom = api  # type: ignore[assignment]
    prov.claims([("ADDED", _claim("a")), ("ADDED", _claim("b", "Bound"))])
    prov.claims([("ADDED", _claim("r", snapshot="snap"))])
    assert prov.wake.is_set()
    assert prov.sync() is True, "a claim waits for its snapshot: look again soon"
    assert api.calls == ["list storageclasses", "create pvc-u-a", "get snapshot snap"]
    api.calls.clear()
    assert prov.sync() is True
    assert api.calls == ["get snapshot snap"], "a provisioned claim is not made again"
    api.ready.add("snap")
    assert prov.sync() is False
    assert api.calls[-1] == "create pvc-u-r"
    prov.claims([("MODIFIED", _claim("a", "Bound")), ("DELETED", _claim("r"))])
    assert prov.pending == {}
    released = {"spec": {"persistentVolumeReclaimPolicy": "Delete"}, "status": {}}
    prov.volumes([("MODIFIED", {**released, "metadata": {"name": "pvc-u-a"}})])
    assert prov.released == set(), "bound: kept"
    released["status"] = {"phase": "Released"}
    prov.volumes([("MODIFIED", {**released, "metadata": {"name": "pvc-u-a"}})])
    api.calls.clear()
    assert prov.sync() is False
    assert api.calls == ["delete pvc-u-a"] and prov.released == set()
