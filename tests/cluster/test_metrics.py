"""The operator's /metrics after a successful and a rolled-back run, checked by promtool."""

from __future__ import annotations

import subprocess
import urllib.error
from pathlib import Path

from kubernetes import client

from tests.conftest import Cluster
from tests.helpers import wait_for
from tests.operator_harness import (
    ENDED,
    create,
    free_port,
    running_operator,
    samples,
    scrape,
    system,
    value,
    wait_run,
    workload,
)


def test_metrics_after_a_success_and_a_rollback_pass_promtool(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.install_crds()
    core, apps = client.CoreV1Api(cluster.api), client.AppsV1Api(cluster.api)
    workload(core, apps, namespace, name="good")
    workload(core, apps, namespace, name="bad")
    port = free_port()
    with running_operator(cluster, namespace, tmp_path, PATCHWARDEN_METRICS_PORT=str(port)):
        good = system(
            "good",
            "SaaS",
            workload_name="good",
            components=[
                {
                    "name": "nextcloud",
                    "version": "29",
                    "installedBy": "provider",
                    "source": "standard-repository",
                    "layer": "application",
                    "endOfLife": "2030-01-01",
                }
            ],
        )
        create(cluster, namespace, good)
        create(
            cluster,
            namespace,
            system(
                "bad",
                "PaaS",
                "advanced",
                workload_name="bad",
                job={
                    "devcluster.patchwarden.io/outcome": "fail",
                    "devcluster.patchwarden.io/duration": "5s",
                },
            ),
        )

        def first_look() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
            try:
                found = samples(scrape(port))
            except urllib.error.URLError:
                return None  # not serving yet
            seen = value(
                found,
                "patchwarden_update_runs_total",
                namespace=namespace,
                system="bad",
                result="RolledBack",
            )
            return found if seen is not None else None

        # Before its first failure the system's result series are already there, at 0:
        # what increase() needs to see the failure (the alerts' expressions).
        before = wait_for(first_look, timeout=30, what="the bad system's series")
        for result in ("RolledBack", "Failed", "Succeeded"):
            assert (
                value(
                    before,
                    "patchwarden_update_runs_total",
                    namespace=namespace,
                    system="bad",
                    result=result,
                )
                == 0
            ), result
        wait_run(cluster, namespace, "good", ENDED)
        wait_run(cluster, namespace, "bad", ENDED)

        def rolled_back() -> str | None:
            # The series exists at 0 from the first look: wait for its value, and the
            # good run's, not for its name.
            text = scrape(port)
            found = samples(text)
            counted = [
                value(
                    found, "patchwarden_update_runs_total", namespace=namespace, system=s, result=r
                )
                for s, r in (("bad", "RolledBack"), ("good", "Succeeded"))
            ]
            return text if counted == [1, 1] else None

        text = wait_for(rolled_back, timeout=30, what="both runs counted in /metrics")
        assert scrape(port, "/healthz").strip() == "ok"

    found = samples(text)
    ns = namespace
    assert (
        value(
            found,
            "patchwarden_update_runs_total",
            namespace=ns,
            system="good",
            service_model="SaaS",
            result="Succeeded",
        )
        == 1
    )
    assert (
        value(
            found,
            "patchwarden_update_runs_total",
            namespace=ns,
            system="bad",
            service_model="PaaS",
            package="advanced",
            result="RolledBack",
        )
        == 1
    )
    assert (
        value(found, "patchwarden_rollbacks_total", namespace=ns, system="bad", result="RolledBack")
        == 1
    )
    assert value(found, "patchwarden_rollbacks_total", namespace=ns, system="good") == 0
    assert value(found, "patchwarden_update_run_duration_seconds_count", result="Succeeded") == 1
    assert (
        value(found, "patchwarden_update_run_phase_duration_seconds_count", phase="Snapshotting")
        == 2
    )
    assert (
        value(
            found,
            "patchwarden_last_successful_update_timestamp_seconds",
            namespace=ns,
            system="good",
        )
        or 0
    ) > 1.7e9
    assert (
        value(
            found,
            "patchwarden_last_successful_update_timestamp_seconds",
            namespace=ns,
            system="bad",
        )
        is None
    )
    assert (
        value(found, "patchwarden_next_window_start_timestamp_seconds", namespace=ns, system="good")
        or 0
    ) > 1.7e9
    assert value(found, "patchwarden_systems", service_model="SaaS", eligible="true") == 1
    assert (
        value(
            found, "patchwarden_systems", service_model="PaaS", package="advanced", eligible="true"
        )
        == 1
    )
    eol = value(
        found,
        "patchwarden_component_end_of_life_timestamp_seconds",
        namespace=ns,
        system="good",
        component="nextcloud",
    )
    assert eol == 1893456000  # 2030-01-01T00:00:00Z
    assert (
        value(found, "patchwarden_reconcile_total", kind="ManagedSystem", result="success") or 0
    ) >= 2
    assert value(found, "patchwarden_reconcile_errors_total", kind="ManagedSystem") in (None, 0.0)
    assert not any("run" in dict(ls) or "ticket" in dict(ls) for _, ls in found), "unbounded labels"

    promtool = cluster.tools / "promtool"
    check = subprocess.run(
        [str(promtool), "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
