"""Per-system series: refreshed and forgotten one system at a time, without a cluster."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from patchwarden.core.status import parse_system
from patchwarden.runtime import metrics


def body(name: str, components: list[dict[str, Any]], next_start: str | None) -> dict[str, Any]:
    status = {"eligible": True, "lastSuccessfulUpdate": "2026-11-01T00:00:00Z"}
    if next_start:
        status["nextWindow"] = {"name": "w", "start": next_start}
    return {
        "metadata": {"namespace": "metrics-ns", "name": name},
        "spec": {
            "customer": "acme",
            "serviceModel": "SaaS",
            "workload": {"kind": "Deployment", "name": name},
            "components": components,
            "maintenance": {"windows": [{"name": "w", "cron": "0 23 * * 0", "duration": "4h"}]},
        },
        "status": status,
    }


def debian(version: str) -> dict[str, Any]:
    return {
        "name": "debian",
        "version": version,
        "installedBy": "provider",
        "source": "standard-repository",
        "endOfLife": "2028-06-30",
    }


def lines(name: str) -> list[str]:
    text = generate_latest(metrics.REGISTRY).decode()
    return [
        line
        for line in text.splitlines()
        if 'namespace="metrics-ns"' in line and f'system="{name}"' in line
    ]


def observe(b: dict[str, Any]) -> None:
    spec, problem = parse_system(b["spec"])
    assert spec is not None, problem
    metrics.observe_system(b, spec)


def test_series_follow_the_system_and_go_with_it() -> None:
    observe(body("a", [debian("12.7")], "2026-11-29T22:00:00Z"))
    observe(body("b", [debian("12.7")], "2026-11-29T22:00:00Z"))
    found = lines("a")
    assert any(line.startswith("patchwarden_next_window_start_timestamp_seconds") for line in found)
    assert any('version="12.7"' in line for line in found)
    assert any(line.startswith("patchwarden_last_successful_update") for line in found)

    observe(body("a", [debian("13.1")], None))  # upgraded; no next window
    found = lines("a")
    assert not any('version="12.7"' in line for line in found), "the old version's series went"
    assert any('version="13.1"' in line for line in found)
    assert not any(line.startswith("patchwarden_next_window") for line in found)

    metrics.forget_system("metrics-ns", "a")
    assert lines("a") == []
    assert lines("b"), "another system's series stay"
    metrics.forget_system("metrics-ns", "b")


def test_every_result_series_exists_at_zero_from_the_first_look() -> None:
    """A counter that first appears at 1 gives increase() nothing: the first failure of a
    system would raise no alert. Its series are there, at 0, as soon as it is seen."""
    observe(body("z", [], None))
    counters = sorted(
        line
        for line in lines("z")
        if line.startswith(("patchwarden_update_runs_total", "patchwarden_rollbacks_total"))
    )
    assert counters == [
        'patchwarden_rollbacks_total{namespace="metrics-ns",result="Failed",system="z"} 0.0',
        'patchwarden_rollbacks_total{namespace="metrics-ns",result="RolledBack",system="z"} 0.0',
        'patchwarden_update_runs_total{namespace="metrics-ns",package="",result="Failed",'
        'service_model="SaaS",system="z"} 0.0',
        'patchwarden_update_runs_total{namespace="metrics-ns",package="",result="RolledBack",'
        'service_model="SaaS",system="z"} 0.0',
        'patchwarden_update_runs_total{namespace="metrics-ns",package="",result="Succeeded",'
        'service_model="SaaS",system="z"} 0.0',
    ]
    metrics.UPDATE_RUNS.labels("metrics-ns", "z", "SaaS", "", "RolledBack").inc()
    observe(body("z", [], None))
    assert any('result="RolledBack"' in x and x.endswith(" 1.0") for x in lines("z")), "kept"
    metrics.forget_system("metrics-ns", "z")
    assert lines("z") == []
