"""Bring the local dev cluster up and down.

The cluster is real upstream Kubernetes (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) orchestrated by ``kwokctl`` with its
binary runtime, on loopback only, with RBAC on; kwok fakes one node, the pods
on it, and the CSI snapshotter (see ``manifests/stages.yaml``); the
volume-provisioner component plays the CSI provisioner (see
``provisioner.py``). All state lives in one directory (``.cluster/`` of the
repository by default), which :func:`down` removes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

CLUSTER_NAME = "patchwarden"
MANIFESTS = resources.files("patchwarden_dev.devcluster") / "manifests"


class DevClusterError(RuntimeError):
    """The dev cluster could not be brought up; the message says what to do."""


@dataclass(frozen=True)
class DevCluster:
    """A local dev cluster whose state lives in ``state_dir``."""

    state_dir: Path
    tools_dir: Path
    name: str = CLUSTER_NAME

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def kwok_workdir(self) -> Path:
        return self.state_dir / "kwok"

    @property
    def cluster_dir(self) -> Path:
        """kwokctl's directory of this cluster: pki/, logs/, its kubeconfig."""
        return self.kwok_workdir / "clusters" / self.name

    @property
    def provisioner_launcher(self) -> Path:
        """The executable kwokctl runs as the volume-provisioner component.

        kwokctl names a component's log after its binary, so the provisioner
        gets a launcher of its own name rather than being run as ``python``.
        """
        return self.state_dir / "bin" / "volume-provisioner"

    def _write_launcher(self) -> None:
        path = self.provisioner_launcher
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'#!/bin/sh\nexec "{sys.executable}" -m patchwarden_dev.devcluster.provisioner "$@"\n'
        )
        path.chmod(0o755)

    def _tool(self, name: str) -> str:
        path = self.tools_dir / name
        if not os.access(path, os.X_OK):
            raise DevClusterError(f"{path} is missing: run hack/tools.sh (make tools-path)")
        return str(path)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KWOK_WORKDIR"] = str(self.kwok_workdir)
        env["KWOK_KUBECTL_BINARY"] = str(self.tools_dir / "kubectl")
        env["PATH"] = f"{self.tools_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def _run(self, *args: str, check: bool = True, quiet: bool = False) -> str:
        proc = subprocess.run(
            list(args), env=self._env(), capture_output=True, text=True, check=False
        )
        if check and proc.returncode != 0:
            raise DevClusterError(
                f"{' '.join(args[:4])} … failed ({proc.returncode}):\n{proc.stderr or proc.stdout}"
            )
        if not quiet and proc.stderr.strip() and proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
        return proc.stdout

    def kubectl(self, *args: str, check: bool = True) -> str:
        return self._run(
            self._tool("kubectl"), "--kubeconfig", str(self.kubeconfig), *args, check=check
        )

    def healthy(self) -> bool:
        """True when the API server answers ``/readyz`` with this kubeconfig."""
        if not self.kubeconfig.exists():
            return False
        proc = subprocess.run(
            [
                self._tool("kubectl"),
                "--kubeconfig",
                str(self.kubeconfig),
                "--request-timeout=5s",
                "get",
                "--raw",
                "/readyz",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return proc.returncode == 0 and proc.stdout.strip() == "ok"

    def kwokctl_config(self) -> dict[str, Any]:
        """The KwokctlConfiguration this cluster is created from."""
        tools = self.tools_dir
        return {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": {
                "runtime": "binary",
                "bindAddress": "127.0.0.1",
                "kubeAuthorization": True,
                "enableCRDs": ["Stage"],
                "cacheDir": str(self.state_dir / "kwok-cache"),
                "kubeApiserverBinary": str(tools / "kube-apiserver"),
                "kubeControllerManagerBinary": str(tools / "kube-controller-manager"),
                "kubeSchedulerBinary": str(tools / "kube-scheduler"),
                "kubectlBinary": str(tools / "kubectl"),
                "kwokControllerBinary": str(tools / "kwok"),
                "etcdBinary": str(tools / "etcd"),
            },
            # A single instance of each: without leader election they survive an API
            # server outage (with it, a lost lease makes them exit for good). The controller
            # manager's client may send 100 requests/s (its default is 20): at 20 the
            # ReplicaSets of a 10,000-Deployment benchmark fleet took some 20 minutes, each
            # a Deployment status change that the operator's watches saw during the
            # measurement (docs/scale.md).
            "componentsPatches": [
                {
                    "name": "kube-controller-manager",
                    "extraArgs": [
                        {"key": "leader-elect", "value": "false"},
                        {"key": "kube-api-qps", "value": "100"},
                        {"key": "kube-api-burst", "value": "200"},
                    ],
                },
                {
                    "name": "kube-scheduler",
                    "extraArgs": [{"key": "leader-elect", "value": "false"}],
                },
            ],
            "components": [
                {
                    "name": "volume-provisioner",
                    "binary": str(self.provisioner_launcher),
                    "args": ["--kubeconfig", str(self.kubeconfig)],
                    "workDir": str(self.cluster_dir),
                    "links": ["kube-apiserver"],
                }
            ],
        }

    def up(self, timeout: float = 180.0) -> None:
        """Create the cluster unless a healthy one is already here (idempotent)."""
        if not self.healthy():
            self._create(timeout)
        self._install(timeout)

    def _create(self, timeout: float) -> None:
        kwokctl = self._tool("kwokctl")
        if self.kwok_workdir.exists():  # a stale or stopped cluster: start afresh
            self._run(kwokctl, "delete", "cluster", "--name", self.name, check=False)
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._write_launcher()
        config_path = self.state_dir / "kwokctl.yaml"
        config_path.write_text(yaml.safe_dump(self.kwokctl_config(), sort_keys=False))
        self._run(
            kwokctl,
            "create",
            "cluster",
            "--name",
            self.name,
            "--config",
            str(config_path),
            "--kubeconfig",
            str(self.kubeconfig),
            "--wait",
            f"{int(timeout)}s",
        )

    def _install(self, timeout: float) -> None:
        self.kubectl("apply", "-f", str(MANIFESTS / "snapshot-crds.yaml"))
        for crd in (
            "volumesnapshots.snapshot.storage.k8s.io",
            "volumesnapshotclasses.snapshot.storage.k8s.io",
            "volumesnapshotcontents.snapshot.storage.k8s.io",
            "stages.kwok.x-k8s.io",
        ):
            self.await_condition(f"crd/{crd}", "Established", timeout)
        # kwok builds a Stage's controller from the OpenAPI document of the kind it plays,
        # once, when the Stage appears: a Stage applied before the API server publishes it
        # (a moment after Established) leaves snapshots never ready for the cluster's life.
        self.await_openapi("apis/snapshot.storage.k8s.io/v1", timeout)
        self.kubectl("apply", "-f", str(MANIFESTS / "stages.yaml"))
        self.kubectl("apply", "-f", str(MANIFESTS / "cluster.yaml"))
        self.await_condition("node/kwok-node-0", "Ready", timeout)
        self.await_default_service_account(timeout)

    def await_openapi(self, path: str, timeout: float) -> None:
        """Wait until the API server's OpenAPI v3 index lists ``path`` (a group version)."""

        def published() -> bool:
            text = self.kubectl("get", "--raw", "/openapi/v3", check=False)
            try:
                return path in (json.loads(text).get("paths") or {})
            except ValueError:
                return False

        self._until(published, timeout, f"the API server never published OpenAPI for {path}")

    def await_default_service_account(self, timeout: float) -> None:
        """Pods need the namespace's default ServiceAccount, which
        kube-controller-manager creates shortly after start."""
        self._until(
            lambda: bool(
                self.kubectl(
                    "get", "serviceaccount", "default", "-o", "name", "--ignore-not-found"
                ).strip()
            ),
            timeout,
            "the default ServiceAccount never appeared: is kube-controller-manager running?",
        )

    def logs_hint(self) -> str:
        """Where the components' logs are, for an error message."""
        return f"{self.cluster_dir}/logs"

    def await_condition(self, resource: str, condition: str, timeout: float) -> None:
        """Wait until ``resource`` has ``condition`` True. (``kubectl wait`` gives up at
        once, instead of waiting, while an object has no conditions at all.)"""
        query = f'jsonpath={{.status.conditions[?(@.type=="{condition}")].status}}'
        self._until(
            lambda: self.kubectl("get", resource, "-o", query, check=False) == "True",
            timeout,
            f"{resource} never became {condition}",
        )

    def _until(self, probe: Callable[[], bool], timeout: float, failure: str) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            if time.monotonic() > deadline:
                raise DevClusterError(f"{failure} (after {timeout:.0f}s); see {self.logs_hint()}")
            time.sleep(0.3)

    def down(self) -> None:
        """Stop every component and remove all state (idempotent)."""
        kwokctl = self.tools_dir / "kwokctl"
        if self.kwok_workdir.exists() and os.access(kwokctl, os.X_OK):
            self._run(str(kwokctl), "delete", "cluster", "--name", self.name, check=False)
        shutil.rmtree(self.state_dir, ignore_errors=True)
