"""The real-node dev cluster: the same control plane as the kwok profile, and a
real node beside it.

``kwokctl --runtime binary`` runs etcd, kube-apiserver, kube-controller-manager
and kube-scheduler as in :class:`~patchwarden_dev.devcluster.cluster.DevCluster`,
with the kwok controller disabled; on the host, each in its own supervised
process group (restarted when it exits, as the CSI sidecars do whenever the
driver restarts):

- containerd 2.x with Debian's runc and the CNI bridge plugin (pods get
  addresses on the bridge ``pw-cni0``, with no default route and no
  masquerading: nothing leaves the machine);
- a kubelet registered as node ``localhost`` (the API server dials it by that
  name for ``logs`` and ``exec``), authenticating the API server by its client
  certificate and authorising by SubjectAccessReview;
- the CSI hostpath driver with node-driver-registrar, csi-provisioner,
  csi-snapshotter and snapshot-controller, the upstream VolumeSnapshot CRDs,
  the default StorageClass ``standard`` and VolumeSnapshotClass
  ``standard-snapshots``.

The images the node runs are made locally (:mod:`patchwarden_dev.devcluster.images`).
All state lives in ``state_dir``; :meth:`RealNodeCluster.down` removes what the
node did to the machine (processes, mounts, cgroups, the bridge,
``net.ipv4.ip_forward``, ``/var/log/containers`` links) and the directory.
The settings follow ``shared/notes/real-node.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from patchwarden_dev.devcluster import images, machine
from patchwarden_dev.devcluster.cluster import DevCluster, DevClusterError

NODE_NAME = "localhost"
DRIVER = "hostpath.csi.k8s.io"
BRIDGE = "pw-cni0"
POD_SUBNET = "10.244.0.0/24"
REAL_CLUSTER_NAME = "patchwarden-node"
MANIFESTS = resources.files("patchwarden_dev.devcluster") / "manifests"
SOCKET_PATH_MAX = 107  # sun_path, less the terminating NUL

SUPERVISE = r"""
echo $$ > "$PIDFILE"
while :; do
  "$@"
  echo "supervise: $1 exited with $?; restarting in 1s" >&2
  sleep 1
done
"""
"""A restart loop in a session of its own (``setsid -f``); its pid is the process
group that :meth:`RealNodeCluster._stop` signals."""

CSI_SIDECARS = ("csi-node-driver-registrar", "csi-provisioner", "csi-snapshotter")
PROCESSES = (
    "containerd",
    "kubelet",
    "hostpathplugin",
    *CSI_SIDECARS,
    "snapshot-controller",
)
"""Every supervised process, in start order (stopped in reverse)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RealNodeCluster(DevCluster):
    """A dev cluster with a real kubelet, containerd and CSI hostpath node."""

    name: str = REAL_CLUSTER_NAME
    repo: Path = field(default_factory=Path.cwd)
    cache_dir: Path = field(
        default_factory=lambda: (
            Path(
                os.environ.get("PATCHWARDEN_CACHE_DIR")
                or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "patchwarden"
            )
            / "images"
        )
    )

    # ---- where things are ----------------------------------------------------
    @property
    def containerd_dir(self) -> Path:
        return self.state_dir / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.state_dir / "kubelet"

    @property
    def csi_socket(self) -> Path:
        return self.kubelet_root / "plugins" / DRIVER / "csi.sock"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def pki(self) -> Path:
        return self.cluster_dir / "pki"

    # ---- the control plane -----------------------------------------------------
    def kwokctl_config(self) -> dict[str, Any]:
        config = super().kwokctl_config()
        options = config["options"]
        options["disable"] = ["kwok-controller"]
        options.pop("enableCRDs", None)
        options.pop("kwokControllerBinary", None)
        config.pop("components", None)  # no volume-provisioner: the CSI driver provisions
        config["componentsPatches"].append(
            {
                # The API server calls the kubelet (logs, exec) with the admin
                # certificate, which the kubelet checks against the cluster's CA.
                "name": "kube-apiserver",
                "extraArgs": [
                    {"key": "kubelet-client-certificate", "value": str(self.pki / "admin.crt")},
                    {"key": "kubelet-client-key", "value": str(self.pki / "admin.key")},
                ],
            }
        )
        return config

    def healthy(self) -> bool:
        """The API server answers, every node process runs and the node is Ready."""
        if not super().healthy() or not all(self.running(p) for p in PROCESSES):
            return False
        query = 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'
        return self.kubectl("get", "node", NODE_NAME, "-o", query, check=False) == "True"

    def up(self, timeout: float = 300.0) -> None:
        """Create the cluster unless a healthy one is already here (idempotent)."""
        if not self.healthy():
            self._create(timeout)
        self._install(timeout)

    def _create(self, timeout: float) -> None:
        self._check_host()
        if self.state_dir.exists():  # a stale or stopped cluster: start afresh
            self.down()
        self.state_dir.mkdir(parents=True)
        (self.state_dir / "baseline.json").write_text(json.dumps(machine.baseline()))
        for directory in (self.logs_dir, self.pids_dir, self.kubelet_root):
            directory.mkdir(parents=True, exist_ok=True)
        self._start_containerd(timeout)
        self._import_images()
        super()._create(timeout)
        self._start_kubelet()

    def _check_host(self) -> None:
        if os.geteuid() != 0:
            raise DevClusterError(
                "the real-node cluster runs a kubelet and containerd: run as root"
            )
        for tool in ("runc", "umoci", "setsid", "ip", "cc"):
            if shutil.which(tool) is None:
                raise DevClusterError(f"{tool} is missing: run hack/node/deps.sh (Debian packages)")
        if not Path("/usr/lib/cni/bridge").exists():
            raise DevClusterError(
                "the CNI plugins are missing (/usr/lib/cni/bridge): run hack/node/deps.sh"
            )
        longest = self.kubelet_root / "plugins_registry" / f"{DRIVER}-reg.sock"
        if len(str(longest)) > SOCKET_PATH_MAX:
            raise DevClusterError(
                f"{longest} is longer than a Unix socket path may be ({SOCKET_PATH_MAX}): "
                "give a shorter --state-dir"
            )

    # ---- supervised processes ----------------------------------------------------
    def _pidfile(self, name: str) -> Path:
        return self.pids_dir / f"{name}.pgid"

    def running(self, name: str) -> bool:
        """Whether the supervised process group ``name`` (one of PROCESSES) is alive."""
        try:
            os.killpg(int(self._pidfile(name).read_text()), 0)
        except (OSError, ValueError):
            return False
        return True

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Run ``argv`` in a restart loop of its own session, logging to logs/NAME.log."""
        if self.running(name):
            return
        pidfile = self._pidfile(name)
        pidfile.unlink(missing_ok=True)
        environment = dict(env or os.environ)
        environment["PIDFILE"] = str(pidfile)
        with open(self.logs_dir / f"{name}.log", "ab") as log:
            subprocess.run(
                ["setsid", "-f", "bash", "-c", SUPERVISE, name, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=environment,
                check=True,
            )
        self._until(pidfile.exists, 10, f"{name} did not start")

    def _stop(self, name: str, grace: float = 15.0) -> None:
        pidfile = self._pidfile(name)
        try:
            pgid = int(pidfile.read_text())
        except (OSError, ValueError):
            return
        machine.kill_group(pgid, grace)
        pidfile.unlink(missing_ok=True)

    # ---- containerd and images -------------------------------------------------------
    def containerd_config(self) -> str:
        d = self.containerd_dir
        return f"""version = 3
root = "{d / "root"}"
state = "{d / "state"}"
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = "{self.containerd_socket}.ttrpc"

[plugins.'io.containerd.internal.v1.opt']
  path = "{d / "opt"}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{images.PAUSE_IMAGE}"

[plugins.'io.containerd.cri.v1.runtime']
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    BinaryName = "{shutil.which("runc") or "runc"}"
    Root = "{d / "runc"}"
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{self.state_dir / "cni" / "net.d"}"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""

    def cni_config(self) -> dict[str, Any]:
        """A bridge on this machine only: no gateway, no masquerading, no routes."""
        return {
            "cniVersion": "1.0.0",
            "name": "patchwarden",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "routes": [],
                        "dataDir": str(self.state_dir / "cni" / "ipam"),
                    },
                },
                {"type": "loopback"},
            ],
        }

    def ctr(self, *args: str) -> str:
        return images.run(
            self.tools_dir / "ctr", "--address", self.containerd_socket, "-n", "k8s.io", *args
        )

    def _start_containerd(self, timeout: float) -> None:
        self.containerd_dir.mkdir(parents=True, exist_ok=True)
        config = self.containerd_dir / "config.toml"
        config.write_text(self.containerd_config())
        net = self.state_dir / "cni" / "net.d"
        net.mkdir(parents=True, exist_ok=True)
        (net / "10-patchwarden.conflist").write_text(json.dumps(self.cni_config(), indent=2))
        env = dict(os.environ)
        env["PATH"] = f"{self.tools_dir}{os.pathsep}{env.get('PATH', '/usr/sbin:/usr/bin')}"
        self._start("containerd", [self._tool("containerd"), "--config", str(config)], env)

        def answers() -> bool:
            try:
                self.ctr("version")
            except DevClusterError:
                return False
            return True

        self._until(answers, timeout, "containerd does not answer on its socket")

    def _import_images(self) -> None:
        cache = self.cache_dir
        for image in (images.pause_image(cache, self.repo), images.busybox_image(cache)):
            self.import_image(image)

    def import_image(self, image: images.Image) -> None:
        """Import an OCI or docker archive into the node's containerd (as ``image.name``)."""
        if image.self_named:
            self.ctr("images", "import", str(image.archive))
        else:
            repository = image.name.rsplit(":", 1)[0]
            self.ctr("images", "import", "--base-name", repository, str(image.archive))

    # ---- kubelet ------------------------------------------------------------------
    def kubelet_config(self) -> dict[str, Any]:
        root = self.kubelet_root
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "makeIPTablesUtilChains": False,
            "podLogsDir": str(root / "pod-logs"),
            "volumePluginDir": str(root / "volume-plugins"),
            "resolvConf": "",
            "serializeImagePulls": False,
            "registerNode": True,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            # A dev machine's disk and memory are shared: never evict test pods.
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
        }

    def _start_kubelet(self) -> None:
        config = self.kubelet_root / "config.yaml"
        config.write_text(yaml.safe_dump(self.kubelet_config(), sort_keys=False))
        self._start(
            "kubelet",
            [
                self._tool("kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                f"--root-dir={self.kubelet_root}",
                f"--cert-dir={self.kubelet_root / 'pki'}",
                "--v=1",
            ],
        )

    # ---- storage ------------------------------------------------------------------
    def _start_csi(self) -> None:
        address = f"unix://{self.csi_socket}"
        kubeconfig = f"--kubeconfig={self.kubeconfig}"
        self.csi_socket.parent.mkdir(parents=True, exist_ok=True)
        self._start(
            "hostpathplugin",
            [
                self._tool("hostpathplugin"),
                f"--drivername={DRIVER}",
                f"--endpoint={address}",
                f"--nodeid={NODE_NAME}",
                f"--statedir={self.state_dir / 'csi-data'}",
                "--v=2",
            ],
        )
        self._start(
            "csi-node-driver-registrar",
            [
                self._tool("csi-node-driver-registrar"),
                f"--csi-address={self.csi_socket}",
                f"--kubelet-registration-path={self.csi_socket}",
                f"--plugin-registration-path={self.kubelet_root / 'plugins_registry'}",
            ],
        )
        for sidecar in ("csi-provisioner", "csi-snapshotter"):
            self._start(
                sidecar,
                [
                    self._tool(sidecar),
                    f"--csi-address={self.csi_socket}",
                    kubeconfig,
                    "--leader-election=false",
                    "--timeout=60s",
                ],
            )
        self._start(
            "snapshot-controller",
            [self._tool("snapshot-controller"), kubeconfig, "--leader-election=false"],
        )

    def _install(self, timeout: float) -> None:
        crds = (self.tools_dir / "snapshot-crds").resolve()  # kubectl follows no link
        if not crds.is_dir():
            raise DevClusterError(f"{crds} is missing: run hack/tools.sh node")
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
        for kind in ("volumesnapshots", "volumesnapshotclasses", "volumesnapshotcontents"):
            self.await_condition(f"crd/{kind}.snapshot.storage.k8s.io", "Established", timeout)
        # Before the sidecars start: they look for the group API once (backup.consistency: Group).
        for kind in (
            "volumegroupsnapshots",
            "volumegroupsnapshotclasses",
            "volumegroupsnapshotcontents",
        ):
            self.await_condition(f"crd/{kind}.groupsnapshot.storage.k8s.io", "Established", timeout)
        self._start_csi()
        self.kubectl("apply", "-f", str(MANIFESTS / "realnode.yaml"))
        self.await_condition(f"node/{NODE_NAME}", "Ready", timeout)
        self._until(
            lambda: (
                DRIVER
                in self.kubectl(
                    "get",
                    "csinode",
                    NODE_NAME,
                    "-o",
                    "jsonpath={.spec.drivers[*].name}",
                    check=False,
                )
            ),
            timeout,
            f"the kubelet never registered the CSI driver {DRIVER}; see {self.logs_dir}",
        )
        self.await_default_service_account(timeout)

    def logs_hint(self) -> str:
        return f"{self.logs_dir} and {super().logs_hint()}"

    # ---- teardown -------------------------------------------------------------------
    def down(self) -> None:
        """Stop the node and the control plane and undo what they did to the machine."""
        if not self.state_dir.exists():
            return
        baseline_file = self.state_dir / "baseline.json"
        baseline = json.loads(baseline_file.read_text()) if baseline_file.exists() else {}
        if super().healthy() and self.running("kubelet"):
            self._drain()
        for name in reversed(PROCESSES[1:]):  # all but containerd
            self._stop(name)
        kwokctl = self.tools_dir / "kwokctl"
        if self.kwok_workdir.exists() and os.access(kwokctl, os.X_OK):
            self._run(str(kwokctl), "delete", "cluster", "--name", self.name, check=False)
        if self.running("containerd"):
            self._kill_tasks()
        self._stop("containerd")
        machine.restore(self.state_dir, BRIDGE, baseline)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _drain(self, timeout: float = 90.0) -> None:
        """Delete every pod so the kubelet tears down its volumes and sandboxes."""
        for kind in ("deployments", "statefulsets", "daemonsets", "jobs", "replicasets"):
            self.kubectl("delete", kind, "--all", "-A", "--wait=false", check=False)
        self.kubectl(
            "delete", "pods", "--all", "-A", "--grace-period=1", "--wait=false", check=False
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.kubectl("get", "pods", "-A", "-o", "name", check=False).strip():
                break
            time.sleep(0.5)
        # The kubelet finishes unmounting after the pod object is gone.
        pods = self.kubelet_root / "pods"
        while time.monotonic() < deadline and pods.exists() and any(pods.iterdir()):
            time.sleep(0.5)

    def _kill_tasks(self) -> None:
        try:
            for task in self.ctr("tasks", "ls", "-q").split():
                subprocess.run(
                    [
                        str(self.tools_dir / "ctr"),
                        "--address",
                        str(self.containerd_socket),
                        "-n",
                        "k8s.io",
                        "tasks",
                        "kill",
                        "-s",
                        "SIGKILL",
                        task,
                    ],
                    capture_output=True,
                    check=False,
                )
        except DevClusterError:
            pass  # containerd went away: the sweep below still finds the processes
