"""Pure checks of the real-node profile's configuration and teardown rules (no
node needed): what keeps it on loopback, inside the machine and undoable."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from patchwarden_dev.devcluster import images, machine
from patchwarden_dev.devcluster.realnode import DRIVER, NODE_NAME, RealNodeCluster
from tests.unit.dev.test_devcluster import go_mod_requirement


@pytest.fixture
def node(tmp_path: Path) -> RealNodeCluster:
    return RealNodeCluster(state_dir=tmp_path / "state", tools_dir=tmp_path / "tools")


def test_the_kwok_controller_is_off_and_the_api_server_authenticates_to_the_kubelet(
    node: RealNodeCluster,
) -> None:
    config = node.kwokctl_config()
    assert config["options"]["disable"] == ["kwok-controller"]
    assert "components" not in config  # no fake volume-provisioner: the CSI driver serves
    [apiserver] = [p for p in config["componentsPatches"] if p["name"] == "kube-apiserver"]
    args = {a["key"]: a["value"] for a in apiserver["extraArgs"]}
    assert args["kubelet-client-certificate"].endswith("/pki/admin.crt")
    assert config["options"]["bindAddress"] == "127.0.0.1"


def test_the_kubelet_listens_on_loopback_and_trusts_only_the_cluster(node: RealNodeCluster) -> None:
    config = node.kubelet_config()
    assert config["address"] == config["healthzBindAddress"] == "127.0.0.1"
    assert config["readOnlyPort"] == 0
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["authorization"]["mode"] == "Webhook"
    assert config["makeIPTablesUtilChains"] is False
    assert config["failCgroupV1"] is False
    for key in ("podLogsDir", "volumePluginDir"):
        assert config[key].startswith(str(node.state_dir))


def test_containerd_keeps_its_state_in_the_cluster_directory(node: RealNodeCluster) -> None:
    config = tomllib.loads(node.containerd_config())
    assert config["version"] == 3
    for key in ("root", "state"):
        assert config[key].startswith(str(node.state_dir))
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True  # root here lacks CAP_SYS_RESOURCE
    assert runtime["netns_mounts_under_state_dir"] is True
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["Root"].startswith(
        str(node.state_dir)
    )
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"].startswith("patchwarden.test/")


def test_pods_get_no_gateway_no_masquerading_and_no_routes(node: RealNodeCluster) -> None:
    bridge = node.cni_config()["plugins"][0]
    assert bridge["isGateway"] is False  # so ip_forward stays as it was
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["routes"] == []
    json.dumps(node.cni_config())  # what containerd reads


def test_the_csi_socket_lives_under_the_kubelet_root(node: RealNodeCluster) -> None:
    assert node.csi_socket == node.kubelet_root / "plugins" / DRIVER / "csi.sock"
    assert NODE_NAME == "localhost"  # the API server dials the kubelet by node name


def test_restore_removes_only_known_paths_that_were_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known, other = tmp_path / "known", tmp_path / "other"
    (known / "s").mkdir(parents=True)
    other.mkdir()
    monkeypatch.setattr(machine, "MACHINE_PATHS", (str(known),))
    monkeypatch.setattr(machine, "IP_FORWARD", tmp_path / "ip_forward")
    (tmp_path / "ip_forward").write_text("1\n")
    machine.restore_files(
        tmp_path / "state", {"absent": [str(known), str(other)], "ip_forward": "0"}
    )
    assert not known.exists()
    assert other.exists()  # not a path a node writes: never touched
    assert (tmp_path / "ip_forward").read_text() == "0"


def test_a_tools_new_traces_are_removed_and_what_was_there_stays(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "theirs").write_text("a user's file")
    new_dir = tmp_path / "new"
    paths = [new_dir / "cache.db", new_dir, kept / "cache.db", kept]
    with images.no_new_machine_paths(paths):
        new_dir.mkdir()
        (new_dir / "cache.db").write_text("x")
        (kept / "cache.db").write_text("x")
    assert not new_dir.exists()
    assert not (kept / "cache.db").exists()
    assert (kept / "theirs").read_text() == "a user's file"  # the directory was there


def test_a_new_directory_that_holds_something_else_is_left(tmp_path: Path) -> None:
    new_dir = tmp_path / "new"
    with images.no_new_machine_paths([new_dir / "cache.db", new_dir]):
        new_dir.mkdir()
        (new_dir / "cache.db").write_text("x")
        (new_dir / "other").write_text("not ours to judge")
    assert sorted(p.name for p in new_dir.iterdir()) == ["other"]


@pytest.mark.parametrize(
    ("tool", "module", "version"),
    [
        ("containerd", "github.com/containerd/containerd/v2", "v2.4.2"),
        ("csi-provisioner", "github.com/kubernetes-csi/external-provisioner/v6", "v6.4.0"),
        ("csi-snapshotter", "github.com/kubernetes-csi/external-snapshotter/v8", "v8.7.0"),
    ],
)
def test_node_wrapper_modules_pin_their_release(tool: str, module: str, version: str) -> None:
    assert go_mod_requirement(tool, module) == version
