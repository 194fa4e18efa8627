"""`patchwarden plan`: the JSON contract, the reasons, and errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from patchwarden.cli import main

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
FROM = "2027-01-01T00:00:00Z"


def run(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["plan", "-f", str(path), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def plan_of(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, count: int = 5
) -> dict[str, Any]:
    path = tmp_path / "input.yaml"
    path.write_text(text)
    code, out, err = run(capsys, path, "--from", FROM, "--count", str(count), "-o", "json")
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def examples_text() -> str:
    return "\n---\n".join(p.read_text() for p in sorted(EXAMPLES.glob("*.yaml")))


def by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in result["systems"]}


def test_plan_answers_for_every_example(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    systems = by_name(plan_of(capsys, tmp_path, examples_text(), count=6))
    assert set(systems) == {"shop-db", "crm-cache", "files", "build-vm", "legacy-erp", "mail"}

    iaas = systems["build-vm"]
    assert iaas["responsibility"] == {"planning": "Customer", "execution": "Customer"}
    assert not iaas["eligible"] and iaas["windows"] == []

    erp = systems["legacy-erp"]
    assert not erp["eligible"] and "administrative" in erp["reason"]
    assert erp["windows"] and not any(w["update"] for w in erp["windows"])

    basic = systems["crm-cache"]
    assert basic["responsibility"] == {"planning": "Customer", "execution": "Provider"}
    updates = [w for w in basic["windows"] if w["update"]]
    assert len(updates) == 1 and "HD-20417" in updates[0]["why"]
    assert updates[0]["start"] >= "2027-01-12T00:00:00Z"  # the request's notBefore
    assert all("no update request" in w["why"] for w in basic["windows"] if not w["update"])
    assert (
        basic["requests"][0]["accepted"] and basic["requests"][0]["window"] == updates[0]["start"]
    )

    saas = systems["files"]
    assert saas["responsibility"] == {"planning": "Provider", "execution": "Provider"}
    # SemVer: neither the pre-release nor the next major version; later windows start from
    # it, have nothing newer, and its update Job does not run for nothing (issue 33, 1.5).
    assert [w["update"] for w in saas["windows"]] == [True] + [False] * 5
    # Two workloads, one run: what each installs, by workload (docs/workloads.md).
    targets = saas["windows"][0]["targets"]
    assert [(t["workload"], t["component"], t["from"], t["to"]) for t in targets] == [
        ("nextcloud-db", "postgresql", "15.8", "15.10"),
        ("nextcloud", "nextcloud", "32.0.1", "32.0.2"),
    ]
    assert saas["windows"][1]["why"] == (
        "up to date: nothing newer to install, no run starts; the update Job runs only with "
        "something newer (updates.runJob: WhenNewer)"
    )

    assert [(t["component"], t["to"], t["image"]) for t in updates[0]["targets"]] == [
        ("redis", "7.2.6", "registry.example.com/library/redis:7.2.6")  # track minor: not 7.4
    ]

    advanced = systems["shop-db"]
    quarter = [w for w in advanced["windows"] if w["update"]]
    assert len(quarter) == 1 and "2027-Q1" in quarter[0]["why"]
    assert "freeze 'year-end'" in advanced["windows"][0]["why"]  # Sunday 3 Jan runs into the freeze
    assert quarter[0]["start"] == advanced["windows"][1]["start"]
    assert sorted((t["component"], t["from"], t["to"]) for t in quarter[0]["targets"]) == [
        ("debian", "12.7", "12.8"),  # no container: the Job receives it
        ("postgresql", "15.8", "15.10"),  # dpkg order: 15.10 is newer than 15.8
    ]
    assert iaas["warnings"] == [
        "centos 7 is past its end of life (2024-06-30) and its track offers no newer release "
        "the contract installs"
    ]
    assert all("outside cadence" in w["why"] for w in advanced["windows"][2:])


def test_a_system_with_nothing_newer_and_no_job_runs_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    catalog = (EXAMPLES / "02-release-catalog.yaml").read_text()
    system = """
apiVersion: patchwarden.io/v1alpha1
kind: ManagedSystem
metadata: {name: cache, namespace: crm}
spec:
  customer: c
  serviceModel: SaaS
  workload: {kind: Deployment, name: redis}
  components:
    - {name: redis, container: redis, track: minor, installedBy: provider,
       source: standard-repository}
  maintenance: {windows: [{name: nightly, cron: "0 1 * * *", duration: 2h}]}
"""
    workload = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: redis, namespace: crm}
spec:
  template: {spec: {containers: [{name: redis, image: registry.example.com/library/redis:IMAGE}]}}
"""
    current = plan_of(
        capsys, tmp_path, "---".join([catalog, system, workload.replace("IMAGE", "7.2.6")])
    )
    (cache,) = current["systems"]
    assert not any(w["update"] for w in cache["windows"])
    assert cache["windows"][0]["why"] == "up to date: nothing newer to install, no run starts"
    behind = plan_of(
        capsys, tmp_path, "---".join([catalog, system, workload.replace("IMAGE", "7.2.5")])
    )
    first, second = behind["systems"][0]["windows"][:2]
    assert first["update"] and [t["to"] for t in first["targets"]] == ["7.2.6"]
    assert not second["update"], "the next night starts from 7.2.6: nothing newer"
    request = """
apiVersion: patchwarden.io/v1alpha1
kind: UpdateRequest
metadata: {name: r, namespace: crm}
spec: {systemRef: {name: cache}, ticket: HD-9}
"""
    basic = system.replace("serviceModel: SaaS", "serviceModel: PaaS\n  package: basic")
    served = plan_of(
        capsys, tmp_path, "---".join([catalog, basic, workload.replace("IMAGE", "7.2.6"), request])
    )["systems"][0]
    assert "request HD-9 is served without one" in served["windows"][0]["why"]
    assert served["requests"][0]["window"] == served["windows"][0]["start"]
    assert "no update request" in served["windows"][1]["why"], "served once, not every window"
    unknown = plan_of(capsys, tmp_path, "---".join([catalog, system]))
    assert "is not in the input" in unknown["systems"][0]["warnings"][0]
    assert unknown["systems"][0]["windows"][0]["targets"] is None


def test_plan_json_contract(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = (EXAMPLES / "paas-advanced.yaml").read_text().replace("  namespace: shop\n", "")
    [system] = plan_of(capsys, tmp_path, text, count=2)["systems"]
    assert system["namespace"] == "default"
    assert set(system) >= {
        "namespace",
        "name",
        "serviceModel",
        "package",
        "responsibility",
        "eligible",
        "reason",
        "windows",
    }
    for window in system["windows"]:
        assert set(window) >= {"start", "end", "update", "why"}
        assert window["start"].endswith("Z") and window["end"].endswith("Z")
    assert system["windows"][0]["start"] == "2027-01-03T22:00:00Z"  # Sunday 23:00 CET


def test_freeze_and_cutoff_reasons(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = """
apiVersion: patchwarden.io/v1alpha1
kind: ManagedSystem
metadata: {name: s, namespace: n}
spec:
  customer: c
  serviceModel: SaaS
  workload: {kind: Deployment, name: app}
  updates:
    expectedDuration: 90m
    runJob: EveryWindow
    template: {spec: {containers: [{name: u, image: "registry.invalid/u:1"}]}}
  maintenance:
    windows:
      - {name: long, cron: "0 1 * * 1", duration: 4h}
      - {name: short, cron: "0 1 * * 3", duration: 1h}
    freezes:
      - {name: jan, once: "2027-01-01T00:00:00Z", end: "2027-01-05T00:00:00Z"}
"""
    windows = plan_of(capsys, tmp_path, text, count=3)["systems"][0]["windows"]
    assert [(w["name"], w["update"]) for w in windows] == [
        ("long", False),
        ("short", False),
        ("long", True),
    ]
    assert "freeze 'jan'" in windows[0]["why"]
    assert "cutoff" in windows[1]["why"]


def test_plan_serves_requests_one_run_per_window_as_the_operator_does(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Two accepted requests: the operator's start decision serves the older one in the
    first window and the other in the next (one run per window); a notBefore inside a
    window moves its run there, not to the next one."""
    text = """
apiVersion: patchwarden.io/v1alpha1
kind: ManagedSystem
metadata: {name: s, namespace: n}
spec:
  customer: c
  serviceModel: PaaS
  package: basic
  workload: {kind: Deployment, name: app}
  updates:
    runJob: EveryWindow
    template: {spec: {containers: [{name: u, image: "registry.invalid/u:1"}]}}
  maintenance:
    windows: [{name: weekly, cron: "0 1 * * 1", duration: 4h}]
---
apiVersion: patchwarden.io/v1alpha1
kind: UpdateRequest
metadata: {name: first, namespace: n}
spec: {systemRef: {name: s}, ticket: T-1}
---
apiVersion: patchwarden.io/v1alpha1
kind: UpdateRequest
metadata: {name: second, namespace: n}
spec: {systemRef: {name: s}, ticket: T-2}
---
apiVersion: patchwarden.io/v1alpha1
kind: UpdateRequest
metadata: {name: third, namespace: n}
spec: {systemRef: {name: s}, ticket: T-3, notBefore: "2027-01-18T02:00:00Z"}
"""
    result = plan_of(capsys, tmp_path, text, count=4)["systems"][0]
    assert [(w["start"], w["update"], w["why"]) for w in result["windows"]] == [
        ("2027-01-04T01:00:00Z", True, "on request (T-1)"),
        ("2027-01-11T01:00:00Z", True, "on request (T-2)"),
        ("2027-01-18T01:00:00Z", True, "on request (T-3)"),
        ("2027-01-25T01:00:00Z", False, "PaaS basic: no update request for this window"),
    ]
    assert {r["name"]: r["window"] for r in result["requests"]} == {
        "first": "2027-01-04T01:00:00Z",
        "second": "2027-01-11T01:00:00Z",
        "third": "2027-01-18T01:00:00Z",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Pod\nmetadata: {name: x}\n", "document 1 (Pod default/x): kind must be"),
        (
            "apiVersion: patchwarden.io/v1alpha1\nkind: ManagedSystem\nmetadata: {name: a}\n"
            "spec: {customer: c, serviceModel: PaaS, workload: {kind: Deployment, name: w}}\n",
            "document 1 (ManagedSystem default/a): spec.package: a PaaS system needs a package",
        ),
        (
            "---\n---\napiVersion: patchwarden.io/v1alpha1\nkind: ManagedSystem\n"
            "metadata: {name: b}\n"
            "spec: {customer: c, serviceModel: SaaS, workload: {kind: Deployment, name: w},\n"
            "  maintenance: {windows: [{name: w, cron: '61 * * * *', duration: 1h}]}}\n",
            "document 2 (ManagedSystem default/b): spec.maintenance.windows[0].cron",
        ),
        (
            "- just\n- a list\n",
            "document 1: kind must be ManagedSystem, UpdateRequest or ReleaseCatalog",
        ),
        (
            "apiVersion: patchwarden.io/v1alpha1\nkind: ManagedSystem\nmetadata: {name: c}\n"
            "spec: {customer: c, serviceModel: SaaS, workload: {kind: Deployment, name: w},\n"
            "  maintenance: {timeZone: Mars/Olympus}}\n",
            "spec.maintenance.timeZone: 'Mars/Olympus' is not an IANA time zone",
        ),
        (
            "apiVersion: patchwarden.io/v1alpha1\nkind: UpdateRequest\nmetadata: {name: r}\n"
            "spec: {systemRef: {name: s}, ticket: T, colour: red}\n",
            "spec.colour: Extra inputs are not permitted",
        ),
        ("a: [unclosed", "not valid YAML"),
    ],
)
def test_bad_input_exits_2_naming_the_document_and_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, out, err = run(capsys, path)
    assert code == 2
    assert out == ""
    assert message in err, err
    assert str(path) in err


def test_a_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, tmp_path / "nope.yaml")
    assert code == 2 and "cannot read" in err and "nope.yaml" in err


def test_several_files_are_planned_together(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "plan",
            "-f",
            str(EXAMPLES / "paas-basic.yaml"),
            "-f",
            str(EXAMPLES / "update-request.yaml"),
            "--from",
            FROM,
            "-o",
            "json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    [system] = result["systems"]
    assert system["requests"][0]["accepted"] is True


def test_table_output_of_a_directory_names_each_system(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, EXAMPLES, "--from", FROM, "--count", "2")
    assert code == 0
    for name in ("shop/shop-db", "crm/crm-cache", "labs/build-vm", "nextcloud/files"):
        assert name in out


def test_plan_shows_each_systems_wave(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    waves = (EXAMPLES / "guard-rails" / "waves.yaml").read_text()
    labelled = examples_text().replace(
        "  name: shop-db\n  namespace: shop\n",
        "  name: shop-db\n  namespace: shop\n  labels: {patchwarden.io/wave: canary}\n",
    )
    systems = by_name(plan_of(capsys, tmp_path, labelled + "\n---\n" + waves, count=1))
    assert systems["shop-db"]["waves"] == [
        {"catalog": "provider-tested", "wave": "canary", "after": []}
    ]
    assert systems["files"]["waves"] == [
        {"catalog": "provider-tested", "wave": "rest", "after": ["canary", "bronze"]}
    ]
    path = tmp_path / "table.yaml"
    path.write_text(labelled + "\n---\n" + waves)
    code, out, _ = run(capsys, path, "--from", FROM, "--count", "1")
    assert code == 0
    assert "catalog provider-tested: wave canary: first to take its releases" in out


def test_plan_says_when_a_window_needs_the_customers_approval(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = (EXAMPLES / "guard-rails" / "approval.yaml").read_text()
    files = by_name(plan_of(capsys, tmp_path, text, count=2))["files"]
    updates = [w for w in files["windows"] if w["update"]]
    assert updates and all("needs the customer's approval by " in w["why"] for w in updates)


def test_the_plan_reads_the_versions_runs_installed_of_components_described_by_hand(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 33, 1.6: shop-db's debian is 12.7 in its spec; a run installed 12.8. The plan
    must not install 12.8 again."""
    before = by_name(plan_of(capsys, tmp_path, examples_text(), count=6))["shop-db"]
    (quarter,) = [w for w in before["windows"] if w["update"]]
    found = [(t["component"], t["from"], t["to"]) for t in quarter["targets"]]
    assert ("debian", "12.7", "12.8") in found
    docs = [d for d in yaml.safe_load_all(examples_text()) if d]
    shop = next(
        d for d in docs if d["kind"] == "ManagedSystem" and d["metadata"]["name"] == "shop-db"
    )
    shop["status"] = {
        "learnedVersions": [
            {
                "component": "debian",
                "version": "12.8",
                "specVersion": "12.7",
                "run": "r1",
                "time": "2026-11-01T01:00:00Z",
            }
        ]
    }
    after = by_name(plan_of(capsys, tmp_path, yaml.safe_dump_all(docs), count=6))["shop-db"]
    (quarter,) = [w for w in after["windows"] if w["update"]]
    assert [t["component"] for t in quarter["targets"]] == ["postgresql"]
