"""The chart's static files agree with the code: CRDs, dashboard and alert metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from patchwarden.runtime.metrics import FAMILIES, REGISTRY

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "patchwarden"


def exported() -> set[str]:
    """Every sample name the operator can export (counters' _total, histograms' _bucket …)."""
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        suffixes = {
            "counter": ["_total", "_created"],
            "histogram": ["_bucket", "_count", "_sum", "_created"],
        }
        names.update(family.name + s for s in suffixes.get(family.type, []))
    return names | {family.name for family in FAMILIES}  # the per-system series


def used(text: str) -> set[str]:
    return set(re.findall(r"\b(patchwarden_[a-z_]+)\b", text))


def test_chart_crds_are_the_generated_crds() -> None:
    top = {p.name: p.read_text() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert chart == top, "run `make crds`"


def test_every_dashboard_query_uses_exported_metrics() -> None:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = set().union(*(used(e) for e in exprs))
    assert names, "the dashboard queries patchwarden's metrics"
    assert names <= exported(), names - exported()
    for panel in ("Runs by result", "Rollbacks", "Compliance", "Upcoming windows", "end of life"):
        assert any(panel.lower() in p["title"].lower() for p in dashboard["panels"]), panel


def test_every_alert_uses_exported_metrics() -> None:
    rules = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())["groups"][0]["rules"]
    names = set().union(*(used(r["expr"]) for r in rules))
    assert names <= exported(), names - exported()
    assert {r["alert"] for r in rules} >= {
        "PatchwardenUpdateFailed",
        "PatchwardenUpdateRolledBack",
        "PatchwardenRollbackFailed",
        "PatchwardenAdvancedSystemNotUpdatedThisQuarter",
        "PatchwardenComponentEndOfLifeSoon",
        "PatchwardenOperatorDown",
        "PatchwardenSystemStalled",
        "PatchwardenSystemNeverUpdated",
        "PatchwardenReleaseHalted",
        "PatchwardenApprovalDeadlineNear",
    }


def test_metric_names_follow_prometheus_conventions() -> None:
    for family in REGISTRY.collect():
        assert family.name.startswith("patchwarden_"), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name


def test_the_charts_kubernetes_floor_serves_the_admission_policy_it_installs_by_default() -> None:
    """ValidatingAdmissionPolicy is served as admissionregistration.k8s.io/v1 from
    Kubernetes 1.30: a chart that installs one by default cannot promise an older cluster."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    policy = (CHART / "templates" / "admission-policy.yaml").read_text()
    assert values["admissionPolicy"]["enabled"] is True
    assert "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy" in policy
    found = re.fullmatch(r">=\s*(\d+)\.(\d+)(?:\.\d+)?(?:-0)?", chart["kubeVersion"])
    assert found, f"Chart.yaml kubeVersion {chart['kubeVersion']!r}: expected a '>=X.Y' floor"
    assert (int(found[1]), int(found[2])) >= (1, 30), chart["kubeVersion"]
