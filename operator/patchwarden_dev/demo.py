"""`make demo` (`python -m patchwarden_dev.demo`): the examples, run for real, window open now.

Applies the ManagedSystems, UpdateRequests, workloads and claims of ``examples/``
into a fresh namespace (and its ReleaseCatalogs), with a one-off window open now
instead of their windows, and the update of one SaaS system made to fail; starts
the operator; shows the runs progressing; and ends with a table of outcomes and
what each run changed (from → to). It exits 0 only when every outcome is the one
the responsibility model prescribes.
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
OBJECTS = {"Deployment", "StatefulSet", "PersistentVolumeClaim", "ReleaseCatalog"}
"""Applied with the systems: their workloads and claims, and the catalogs (cluster-wide)."""


@dataclass
class Row:
    namespace_name: str
    model: str
    package: str
    outcome: str = "no run"
    duration: str = ""
    snapshots: int = 0
    rolled_back: bool = False
    changes: str = ""


def load_examples(directory: Path) -> list[dict[str, Any]]:
    docs = []
    for path in sorted(directory.glob("*.yaml")):
        docs += [
            d
            for d in yaml.safe_load_all(path.read_text())
            if d and d.get("kind") in {*PLURALS, *OBJECTS}
        ]
    return docs


def prepare(
    doc: dict[str, Any], ns: str, now: datetime, catalogs: list[str] | None = None
) -> dict[str, Any]:
    """The example as the demo applies it: in ``ns``, with a window open now, using the
    examples' ``catalogs`` (renamed ``<ns>-<name>``: cluster-scoped, they must not replace
    a catalog of the cluster)."""
    doc = yaml.safe_load(yaml.safe_dump(doc))
    if doc["kind"] == "ReleaseCatalog":
        doc["metadata"]["name"] = f"{ns}-{doc['metadata']['name']}"
        return doc
    doc["metadata"]["namespace"] = ns
    spec = doc["spec"]
    if doc["kind"] in OBJECTS:
        return doc
    if doc["kind"] == "UpdateRequest":
        spec.pop("notBefore", None)
        return doc
    maintenance = spec.setdefault("maintenance", {})
    start = (now - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    maintenance["windows"] = [{"name": "demo-now", "once": start, "duration": "1h"}]
    maintenance.pop("freezes", None)
    updates = spec.setdefault("updates", {})
    # Each run bakes (watched once ready) for 10 s instead of the default 2 minutes.
    updates.update(expectedDuration="5m", verifyTimeout="1m", bakeTime="10s")
    named = updates.get("catalogs") or catalogs or []
    updates["catalogs"] = [f"{ns}-{c}" for c in named]
    if doc["metadata"]["name"] == FAILING_SYSTEM:
        updates.setdefault("template", {}).setdefault("metadata", {})["annotations"] = (
            FAIL_ANNOTATION
        )
    return doc


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
            match doc["kind"]:
                case "PersistentVolumeClaim":
                    self.core.create_namespaced_persistent_volume_claim(self.ns, doc)
                case "Deployment":
                    self.apps.create_namespaced_deployment(self.ns, doc)
                case "StatefulSet":
                    self.apps.create_namespaced_stateful_set(self.ns, doc)
                case "ReleaseCatalog":
                    self.custom.create_cluster_custom_object(GROUP, VERSION, "releasecatalogs", doc)
                case "ManagedSystem":
                    spec = doc["spec"]
                    rows[doc["metadata"]["name"]] = Row(
                        doc["metadata"]["name"], spec["serviceModel"], spec.get("package", "—")
                    )
        for doc in docs:
            if doc["kind"] in PLURALS:
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
        # One change a line: a system of several workloads changes several components.
        row.changes = (status.get("summary") or "").replace(", ", "\n")
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
            "changed (from → to)",
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
                row.changes or "—",
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
        for catalog in self.custom.list_cluster_custom_object(GROUP, VERSION, "releasecatalogs")[
            "items"
        ]:
            if catalog["metadata"]["name"].startswith(f"{self.ns}-"):
                self.custom.delete_cluster_custom_object(
                    GROUP, VERSION, "releasecatalogs", catalog["metadata"]["name"]
                )


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
    catalogs = [d["metadata"]["name"] for d in docs if d["kind"] == "ReleaseCatalog"]
    rows = demo.apply([prepare(d, demo.ns, now, catalogs) for d in docs])
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
