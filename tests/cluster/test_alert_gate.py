"""The alert gate against a real Prometheus: a firing alert holds a due run back and stops a
run in progress (rolling it back once it changed the workload); a cleared one lets the run
start; an endpoint that does not answer blocks unless the system says Proceed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import Cluster
from tests.helpers import holds_for, wait_for
from tests.operator_harness import (
    ENDED,
    condition,
    create,
    free_port,
    get,
    phase,
    running_operator,
    runs_of,
    system,
    wait_condition,
    wait_run,
    workload,
)
from tests.prometheus_harness import ALERT, Prometheus, prometheus

pytestmark = pytest.mark.usefixtures("crds")
QUERY = f'ALERTS{{alertname="{ALERT}", alertstate="firing"}}'


@pytest.fixture
def prom(tools: Path, tmp_path: Path) -> Iterator[Prometheus]:
    with prometheus(tools, tmp_path / "prometheus") as server:
        yield server


def gate_env(url: str) -> dict[str, str]:
    return {
        "PATCHWARDEN_PROMETHEUS_URL": url,
        "PATCHWARDEN_ALERT_GATE_QUERY": QUERY,
        "PATCHWARDEN_ALERT_GATE_INTERVAL_SECONDS": "1",
    }


def halted(cluster: Cluster, ns: str, name: str) -> dict[str, str]:
    found = condition(get(cluster, ns, "ManagedSystem", name), "UpdatesHalted")
    return found or {}


def test_a_firing_alert_holds_the_run_back_until_it_clears(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    prom: Prometheus,
) -> None:
    workload(core, apps, namespace)
    fired = prom.set_trouble(namespace, 1)
    with running_operator(cluster, namespace, tmp_path, **gate_env(prom.url)):
        create(
            cluster,
            namespace,
            system("db", "SaaS", job={"devcluster.patchwarden.io/duration": "1s"}),
        )
        said = wait_condition(cluster, namespace, "db", "UpdatesHalted", "AlertsFiring")
        assert said["status"] == "True"
        assert said["message"].startswith(f"alerts firing: {ALERT}{{instance="), said["message"]
        assert f'namespace="{namespace}",severity="critical"}}' in said["message"]
        holds_for(
            lambda: runs_of(cluster, namespace, "db") == [],
            duration=5,
            what="no run while the alert fires",
        )
        cleared = prom.set_trouble(namespace, 0)
        run = wait_run(cluster, namespace, "db", {"Snapshotting", "Recording", "Updating", *ENDED})
        started = time.monotonic()
        run = wait_run(cluster, namespace, "db", ENDED, timeout=90)
        assert phase(run) == "Succeeded", run["status"]
        record = run["status"]["alertGate"]
        assert record["decision"] == "AlertsClear" and record["queries"] == [QUERY]
        assert halted(cluster, namespace, "db")["status"] == "False"
    print(
        f"\nalert gate: fired {fired:.1f}, cleared → run created within "
        f"{started - cleared:.1f} s (interval 1 s, scrape and rule evaluation 1 s)"
    )


def test_a_firing_alert_stops_a_run_in_progress_and_rolls_it_back(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    prom: Prometheus,
) -> None:
    workload(core, apps, namespace)
    with running_operator(cluster, namespace, tmp_path, **gate_env(prom.url)):
        create(
            cluster,
            namespace,
            system("db", "SaaS", job={"devcluster.patchwarden.io/duration": "60s"}),
        )
        wait_for(
            lambda: any(
                ((r.get("status") or {}).get("job") or {}).get("created")
                for r in runs_of(cluster, namespace, "db")
            ),
            timeout=60,
            what="the update Job to be created",
        )
        fired = prom.set_trouble(namespace, 1)
        wait_run(cluster, namespace, "db", {"RollingBack", *ENDED}, timeout=60)
        stopped = time.monotonic() - fired
        run = wait_run(cluster, namespace, "db", ENDED, timeout=120)
        assert phase(run) == "RolledBack", run["status"]
        status = run["status"]
        assert status["failure"].startswith("the alert gate stopped the run: alerts firing: "), (
            status
        )
        assert status["alertGate"]["decision"] == "AlertsFiring"
        assert any(f.startswith(ALERT) for f in status["alertGate"]["firing"]), status["alertGate"]
    print(f"\nalert gate: firing → the running run stops (rolling back) in {stopped:.1f} s")


def test_an_endpoint_that_does_not_answer_blocks_unless_the_system_says_proceed(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    workload(core, apps, namespace, name="closed")
    workload(core, apps, namespace, name="open")
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with running_operator(cluster, namespace, tmp_path, **gate_env(nobody)):
        create(cluster, namespace, system("closed", "SaaS", workload_name="closed"))
        proceed = system("open", "SaaS", workload_name="open")
        proceed["spec"]["updates"]["alertGate"] = {"query": "vector(1)", "onError": "Proceed"}
        create(cluster, namespace, proceed)
        said = wait_condition(cluster, namespace, "closed", "UpdatesHalted", "AlertGateUnreachable")
        assert said["status"] == "True" and nobody in said["message"], said
        run = wait_run(cluster, namespace, "open", ENDED, timeout=90)
        assert phase(run) == "Succeeded", run["status"]
        assert run["status"]["alertGate"]["decision"] == "AlertGateUnreachable"
        assert runs_of(cluster, namespace, "closed") == []
