"""Run the real operator (``patchwarden run``) as a process against the test cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from patchwarden.api.run import TERMINAL
from patchwarden_dev.devcluster import release_finalizers
from tests.conftest import Cluster
from tests.helpers import wait_for

GROUP, VERSION = "patchwarden.io", "v1alpha1"
ENDED = frozenset(p.value for p in TERMINAL)
"""The phases a run ends in (a test waiting for a run to end stops at any of them)."""
PLURALS = {
    "ManagedSystem": "managedsystems",
    "UpdateRequest": "updaterequests",
    "UpdateRun": "updateruns",
}
FAST = {
    "PATCHWARDEN_RUN_POLL_SECONDS": "0.3",
    # Never within a test: what a test waits for must wake the system by itself (its
    # events, its workload's, a run's end, the clock), as in production.
    "PATCHWARDEN_RESYNC_SECONDS": "3600",
    "PATCHWARDEN_SNAPSHOT_TIMEOUT_SECONDS": "20",
    "PATCHWARDEN_ROLLBACK_TIMEOUT_SECONDS": "60",
    "PATCHWARDEN_METRICS_PORT": "0",
}


_GIVEN: set[int] = set()
"""The ports :func:`free_port` gave out in this process: never twice."""


def free_port() -> int:
    """A port free now, for a server a test starts (an operator's metrics): below the
    kernel's ephemeral range, so that no outgoing connection takes it before the server
    binds it (the crash matrix's operators and proxies open many: a metrics port the
    kernel had just given out as ephemeral was taken by one, and the operator's start
    failed with "address already in use")."""
    import random
    import socket

    for _ in range(200):
        port = random.randrange(20000, 32000)
        if port in _GIVEN:  # free now, but another server of this test may be about to bind
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _GIVEN.add(port)
            return port
    raise AssertionError("no free port between 20000 and 32000 after 200 tries")


@dataclass
class Operator:
    """One operator process serving one namespace; kill and start it at will."""

    cluster: Cluster
    namespace: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    clusterwide: bool = False
    """Serve every namespace (as the chart does), not only ``namespace``."""
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        # Each start outranks the last: a restarted operator takes over at once instead
        # of pausing until the dead one's peering record expires (kopf: 60 s).
        self.starts += 1
        env = {
            **os.environ,
            **FAST,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "PATCHWARDEN_PRIORITY": str(1000 + self.starts),
            # The replicas of one test meet in a peering object of their own: one for the
            # cluster (operator.py), which another test's operator must not share.
            "PATCHWARDEN_PEERING_NAME": f"pw-{self.namespace}",
            **self.env,
        }
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "patchwarden",
                "run",
                *([] if self.clusterwide else ["-n", self.namespace]),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def running_operator(
    cluster: Cluster, namespace: str, tmp_path: Path, clusterwide: bool = False, **env: str
) -> Iterator[Operator]:
    op = Operator(cluster, namespace, tmp_path / "operator.log", env, clusterwide)
    op.start()
    failed = False
    try:
        yield op
    except BaseException:
        failed = True  # the operator's log is what explains a test that failed while it ran
        raise
    finally:
        op.stop()
        _release(cluster, namespace)
        ended_badly = op.proc is not None and op.proc.returncode not in (
            0,
            -signal.SIGTERM,
            -signal.SIGKILL,
        )
        if failed or ended_badly:
            print(op.output()[-5000:])


def _release(cluster: Cluster, namespace: str) -> None:
    """Drop kopf's finalizers so the namespace can go once no operator serves it."""
    release_finalizers(client.CustomObjectsApi(cluster.api), namespace)


# ---- objects ------------------------------------------------------------------------------


def now_plus(seconds: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def workload(
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    ns: str,
    name: str = "app",
    replicas: int = 1,
    claims: int = 1,
    container: dict[str, Any] | None = None,
) -> None:
    """A Deployment mounting ``claims`` PVCs named ``<name>-data-<i>``."""
    volumes = []
    for i in range(claims):
        claim = f"{name}-data-{i}"
        core.create_namespaced_persistent_volume_claim(
            ns,
            {
                "metadata": {"name": claim},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        volumes.append({"name": f"d{i}", "persistentVolumeClaim": {"claimName": claim}})
    apps.create_namespaced_deployment(
        ns,
        {
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "containers": [
                            container or {"name": "app", "image": "example.com/app:1.0"}
                        ],
                        "volumes": volumes,
                    },
                },
            },
        },
    )


def system(
    name: str,
    model: str = "SaaS",
    package: str | None = None,
    *,
    workload_name: str = "app",
    customer: str = "acme",
    window_start: str | None = None,
    window: str = "1h",
    job: dict[str, str] | None = None,
    update: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A ManagedSystem with a one-off window open now (unless told otherwise)."""
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ManagedSystem",
        "metadata": {"name": name},
        "spec": {
            "customer": customer,
            "serviceModel": model,
            "workload": {"kind": "Deployment", "name": workload_name},
            "updates": {
                "expectedDuration": "1m",
                "verifyTimeout": "30s",
                "runJob": "EveryWindow",  # the Job is the update: it runs with no target
                "bakeTime": "0s",  # the bake's own tests set one
                "template": {
                    "metadata": {"annotations": job or {}},
                    "spec": {
                        "containers": [
                            update
                            or {
                                "name": "update",
                                "image": "example.com/upd:1",
                                "env": [{"name": "SECRET_TOKEN", "value": "hunter2"}],
                            }
                        ]
                    },
                },
            },
            "maintenance": {
                "windows": [
                    {"name": "now", "once": window_start or now_plus(-5), "duration": window}
                ]
            },
            **spec,
        },
    }
    if package:
        body["spec"]["package"] = package
    return body


def update_request(name: str, system_name: str, ticket: str) -> dict[str, Any]:
    """An UpdateRequest for ``system_name`` (security updates, no notBefore)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "UpdateRequest",
        "metadata": {"name": name},
        "spec": {"systemRef": {"name": system_name}, "ticket": ticket},
    }


def create(cluster: Cluster, ns: str, body: dict[str, Any]) -> dict[str, Any]:
    return client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(  # type: ignore[no-any-return]
        GROUP, VERSION, ns, PLURALS[body["kind"]], body
    )


def get(cluster: Cluster, ns: str, kind: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(  # type: ignore[no-any-return]
        GROUP, VERSION, ns, PLURALS[kind], name
    )


def items(cluster: Cluster, ns: str, kind: str) -> list[dict[str, Any]]:
    return list(
        client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
            GROUP, VERSION, ns, PLURALS[kind]
        )["items"]
    )


def runs_of(cluster: Cluster, ns: str, system_name: str) -> list[dict[str, Any]]:
    return [
        r for r in items(cluster, ns, "UpdateRun") if r["spec"]["systemRef"]["name"] == system_name
    ]


def phase(run: dict[str, Any]) -> str | None:
    return (run.get("status") or {}).get("phase")


def wait_run(
    cluster: Cluster, ns: str, system_name: str, phases: AbstractSet[str], timeout: float = 90
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        return next((r for r in runs_of(cluster, ns, system_name) if phase(r) in phases), None)

    return wait_for(probe, timeout=timeout, what=f"a run of {system_name} in {sorted(phases)}")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None
    )


def wait_condition(
    cluster: Cluster, ns: str, name: str, type_: str, reason: str, timeout: float = 30
) -> dict[str, Any]:
    """The ManagedSystem's condition ``type_`` once it has ``reason``."""

    def probe() -> dict[str, Any] | None:
        found = condition(get(cluster, ns, "ManagedSystem", name), type_)
        return found if found and found.get("reason") == reason else None

    return wait_for(probe, timeout=timeout, what=f"{name}'s {type_} to be {reason}")


def wait_stalled(cluster: Cluster, ns: str, name: str, timeout: float = 30) -> dict[str, Any]:
    """The system's Stalled condition, once it is True."""

    def probe() -> dict[str, Any] | None:
        found = condition(get(cluster, ns, "ManagedSystem", name), "Stalled")
        return found if found and found["status"] == "True" else None

    return wait_for(probe, timeout=timeout, what=f"{name} to stall")


@contextmanager
def release_catalog(
    cluster: Cluster, name: str, components: dict[str, list[dict[str, Any]]]
) -> Iterator[str]:
    """A ReleaseCatalog ``name`` of ``components`` (name → releases) while the block runs
    (cluster-scoped: tests name it after their namespace)."""
    api = client.CustomObjectsApi(cluster.api)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ReleaseCatalog",
        "metadata": {"name": name},
        "spec": {"components": [{"name": c, "releases": r} for c, r in components.items()]},
    }
    api.create_cluster_custom_object(GROUP, VERSION, "releasecatalogs", body)
    try:
        yield name
    finally:
        api.delete_cluster_custom_object(GROUP, VERSION, "releasecatalogs", name)


def scrape(port: int, path: str = "/metrics") -> str:
    """What the operator's metrics server on ``port`` (loopback) answers at ``path``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return str(resp.read().decode())


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Each sample of an exposition: (name, labels) → value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    matches = [v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls]
    return sum(matches) if matches else None
