"""`make demo` (`python -m patchwarden_dev.demo`): the examples, run for real, window open now.

Applies every ManagedSystem and UpdateRequest of ``examples/`` into a fresh
namespace, with a workload (and its claims) for each, a one-off window open
now instead of their windows, and the update of one SaaS system made to fail;
starts the operator; shows the runs progressing; and ends with a table. It
exits 0 only when every outcome is the one the responsibility model prescribes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from rich.console import Console
from rich.table import Table

from patchwarden.api.common import GROUP, VERSION
from patchwarden.api.crd import all_crds

FAIL_ANNOTATION = {"devcluster.patchwarden.io/outcome": "fail"}
FAILING_SYSTEM = "mail"
"""The example whose update the demo makes fail, to show the rollback."""

# What the responsibility model prescribes for each example, and why.
EXPECTED = {
    "shop-db": ("Succeeded", "PaaS advanced: its cadence is due"),
    "crm-cache": ("Succeeded", "PaaS basic: on the customer's request HD-20417"),
    "files": ("Succeeded", "SaaS: the provider updates proactively"),
    "build-vm": ("no run", "IaaS: the customer's own"),
    "legacy-erp": ("no run", "PaaS with customer admin access: not eligible"),
    FAILING_SYSTEM: ("RolledBack", "SaaS, its update Job fails: restored from snapshots"),
}
PLURALS = {"ManagedSystem": "managedsystems", "UpdateRequest": "updaterequests"}


@dataclass
class Row:
    namespace_name: str
    model: str
    package: str
    outcome: str = "no run"
    duration: str = ""
    snapshots: int = 0
    rolled_back: bool = False


def load_examples(directory: Path) -> list[dict[str, Any]]:
    docs = []
    for path in sorted(directory.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") in PLURALS]
    return docs


def prepare(doc: dict[str, Any], ns: str, now: datetime) -> dict[str, Any]:
    """The example as the demo applies it: in ``ns``, with a window open now."""
    doc = yaml.safe_load(yaml.safe_dump(doc))
    doc["metadata"]["namespace"] = ns
    spec = doc["spec"]
    if doc["kind"] == "UpdateRequest":
        spec.pop("notBefore", None)
        return doc
    maintenance = spec.setdefault("maintenance", {})
    start = (now - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    maintenance["windows"] = [{"name": "demo-now", "once": start, "duration": "1h"}]
    maintenance.pop("freezes", None)
    updates = spec.setdefault("updates", {})
    updates.update(expectedDuration="5m", verifyTimeout="1m")
    if doc["metadata"]["name"] == FAILING_SYSTEM:
        updates.setdefault("template", {}).setdefault("metadata", {})["annotations"] = (
            FAIL_ANNOTATION
        )
    return doc


def workload_for(system: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A small Deployment or StatefulSet with one claim, as the system names it."""
    kind, name = system["spec"]["workload"]["kind"], system["spec"]["workload"]["name"]
    labels = {"app": name}
    pod: dict[str, Any] = {
        "metadata": {"labels": labels},
        "spec": {
            "containers": [
                {
                    "name": name,
                    "image": f"registry.example.com/{name}:1.0",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ]
        },
    }
    claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    if kind == "StatefulSet":
        return [
            (
                "StatefulSet",
                {
                    "metadata": {"name": name},
                    "spec": {
                        "replicas": 1,
                        "serviceName": name,
                        "selector": {"matchLabels": labels},
                        "template": pod,
                        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim}],
                    },
                },
            )
        ]
    pod["spec"]["volumes"] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": f"{name}-data"}}
    ]
    return [
        ("PersistentVolumeClaim", {"metadata": {"name": f"{name}-data"}, "spec": claim}),
        (
            "Deployment",
            {
                "metadata": {"name": name},
                "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": pod},
            },
        ),
    ]


class Demo:
    def __init__(self, examples: Path, timeout: float, keep: bool, console: Console) -> None:
        config.load_kube_config()
        self.api = client.ApiClient()
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.examples, self.timeout, self.keep, self.console = examples, timeout, keep, console
        self.ns = f"patchwarden-demo-{uuid.uuid4().hex[:6]}"

    def install_crds(self) -> None:
        ext = client.ApiextensionsV1Api(self.api)
        for crd in all_crds():
            try:
                ext.create_custom_resource_definition(crd)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                ext.patch_custom_resource_definition(crd["metadata"]["name"], crd)
        deadline = time.monotonic() + 60
        for crd in all_crds():
            while not any(
                c.type == "Established" and c.status == "True"
                for c in ext.read_custom_resource_definition(
                    crd["metadata"]["name"]
                ).status.conditions
                or []
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"CRD {crd['metadata']['name']} not established within 60s")
                time.sleep(0.2)

    def apply(self, docs: list[dict[str, Any]]) -> dict[str, Row]:
        self.core.create_namespace({"metadata": {"name": self.ns}})
        rows = {}
        for doc in docs:
            if doc["kind"] != "ManagedSystem":
                continue
            for kind, body in workload_for(doc):
                if kind == "PersistentVolumeClaim":
                    self.core.create_namespaced_persistent_volume_claim(self.ns, body)
                elif kind == "Deployment":
                    self.apps.create_namespaced_deployment(self.ns, body)
                else:
                    self.apps.create_namespaced_stateful_set(self.ns, body)
            spec = doc["spec"]
            rows[doc["metadata"]["name"]] = Row(
                doc["metadata"]["name"],
                spec["serviceModel"],
                spec.get("package", "—"),
            )
        for doc in docs:
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURALS[doc["kind"]], doc
            )
        return rows

    def watch(self, rows: dict[str, Row]) -> None:
        started, seen = time.monotonic(), dict[str, str]()
        runs_expected = {n for n, (o, _) in EXPECTED.items() if o != "no run" and n in rows}
        while time.monotonic() - started < self.timeout:
            runs = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, "updateruns")[
                "items"
            ]
            for run in runs:
                system = run["spec"]["systemRef"]["name"]
                phase = (run.get("status") or {}).get("phase") or "Pending"
                if seen.get(run["metadata"]["name"]) != phase:
                    seen[run["metadata"]["name"]] = phase
                    self.console.print(
                        f"[{time.monotonic() - started:5.1f}s] {system:<11} "
                        f"{run['spec']['trigger']:<9} {phase}"
                    )
                self._record(rows[system], run)
            done = {
                n for n, r in rows.items() if r.outcome in {"Succeeded", "RolledBack", "Failed"}
            }
            if runs_expected <= done and time.monotonic() - started > 10:
                return
            time.sleep(1)

    @staticmethod
    def _record(row: Row, run: dict[str, Any]) -> None:
        status = run.get("status") or {}
        row.outcome = status.get("phase") or "Pending"
        row.snapshots = len(status.get("snapshots") or [])
        row.rolled_back = bool((status.get("restore") or {}).get("completed"))
        if status.get("startTime") and status.get("completionTime"):
            took = datetime.fromisoformat(
                status["completionTime"].replace("Z", "+00:00")
            ) - datetime.fromisoformat(status["startTime"].replace("Z", "+00:00"))
            row.duration = f"{took.total_seconds():.0f}s"

    def table(self, rows: dict[str, Row]) -> bool:
        table = Table(title=f"patchwarden demo in namespace {self.ns}", title_justify="left")
        for col in (
            "system",
            "model",
            "package",
            "outcome",
            "duration",
            "snapshots",
            "rolled back",
            "prescribed by the contract",
            "ok",
        ):
            table.add_column(col)
        ok_all = True
        for name, row in rows.items():
            prescribed, why = EXPECTED.get(name, ("?", "not an example the demo knows"))
            ok = row.outcome == prescribed
            ok_all &= ok
            table.add_row(
                row.namespace_name,
                row.model,
                row.package,
                row.outcome,
                row.duration,
                str(row.snapshots),
                "yes" if row.rolled_back else "no",
                f"{prescribed} ({why})",
                "[green]yes[/]" if ok else "[red]NO[/]",
            )
        self.console.print(table)
        return ok_all

    def cleanup(self) -> None:
        if self.keep:
            self.console.print(f"kept namespace {self.ns}; delete it while the operator runs")
            return
        for plural in ("updateruns", "updaterequests", "managedsystems"):
            for obj in self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, plural)[
                "items"
            ]:
                self.custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.ns,
                    plural,
                    obj["metadata"]["name"],
                    {"metadata": {"finalizers": None}},
                )
        self.core.delete_namespace(self.ns)


def run_demo(examples: Path, timeout: float = 180.0, keep: bool = False) -> int:
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    demo = Demo(examples, timeout, keep, console)
    docs = load_examples(examples)
    if not docs:
        console.print(f"[red]no examples in {examples}[/]")
        return 2
    demo.install_crds()
    now = datetime.now(UTC)
    rows = demo.apply([prepare(d, demo.ns, now) for d in docs])
    console.print(
        f"namespace {demo.ns}: {len(rows)} systems; the update of {FAILING_SYSTEM} is made to fail"
    )
    env = {
        "PATCHWARDEN_METRICS_PORT": "0",
        **os.environ,
        "PATCHWARDEN_RUN_POLL_SECONDS": "0.5",
        "PATCHWARDEN_RESYNC_SECONDS": "5",
    }
    operator = subprocess.Popen(
        [sys.executable, "-m", "patchwarden", "run", "-n", demo.ns],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.monotonic()
    try:
        demo.watch(rows)
    finally:
        operator.terminate()
        operator.wait(timeout=30)
    ok = demo.table(rows)
    console.print(
        f"demo took {time.monotonic() - started:.0f}s; "
        + ("every outcome is the prescribed one" if ok else "[red]some outcomes differ[/]")
    )
    demo.cleanup()
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m patchwarden_dev.demo",
        description="Applies examples/ into a fresh namespace with a window open now, runs the "
        "operator, shows the runs, and exits 0 only when every outcome is the prescribed one.",
    )
    parser.add_argument(
        "--examples", type=Path, default=Path("examples"), help="default: ./examples"
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds (default 180)")
    parser.add_argument("--keep", action="store_true", help="keep the demo namespace afterwards")
    args = parser.parse_args(argv)
    return run_demo(args.examples, args.timeout, args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
