"""Approvals on the real API server: the proposal is in the status, `kubectl annotate`
approves it, only an approved window runs; an unapproved one is skipped with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import Cluster
from tests.helpers import holds_for, wait_for
from tests.operator_harness import (
    ENDED,
    create,
    get,
    now_plus,
    phase,
    running_operator,
    runs_of,
    system,
    wait_run,
    workload,
)

pytestmark = pytest.mark.usefixtures("crds")


def test_only_the_approved_proposal_runs(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    opens = now_plus(25)  # approve by 10 s before
    for name in ("yes", "no"):
        workload(core, apps, namespace, name=name)
    with running_operator(cluster, namespace, tmp_path):
        for name in ("yes", "no"):
            body = system(name, "SaaS", workload_name=name, window_start=opens)
            body["spec"]["updates"]["approval"] = {"before": "10s"}
            create(cluster, namespace, body)

        def proposal(name: str) -> dict[str, str]:
            return (get(cluster, namespace, "ManagedSystem", name).get("status") or {}).get(
                "proposal"
            ) or {}

        proposed = wait_for(lambda: proposal("yes"), timeout=15, what="the proposal")
        assert proposed["state"] == "Pending" and proposed["start"] == opens
        assert "kubectl annotate managedsystem yes patchwarden.io/approve=" in proposed["message"]
        # The customer approves exactly as the message says.
        cluster.kubectl(
            "-n", namespace, "annotate", "managedsystem", "yes", f"patchwarden.io/approve={opens}"
        )
        wait_for(lambda: proposal("yes")["state"] == "Approved", timeout=10, what="approved")
        run = wait_run(cluster, namespace, "yes", ENDED, timeout=90)
        assert phase(run) == "Succeeded" and run["spec"]["window"]["start"] == opens
        skipped = wait_for(
            lambda: (get(cluster, namespace, "ManagedSystem", "no").get("status") or {}).get(
                "skippedWindow"
            ),
            timeout=30,
            what="the unapproved window skipped",
        )
        assert skipped["reason"].startswith("the proposal was not approved by ")
        assert proposal("no")["state"] == "Expired"
        holds_for(lambda: runs_of(cluster, namespace, "no") == [], duration=3, what="no run")
        reasons = {
            e.reason
            for e in core.list_namespaced_event(
                namespace, field_selector="involvedObject.name=no"
            ).items
        }
        assert "NotApproved" in reasons
