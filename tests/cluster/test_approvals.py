"""Approvals on the real API server: the proposal is in the status, `kubectl patchwarden
approve` approves it in the caller's name, only an approved window runs; an unapproved one
is skipped with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import Cluster
from tests.helpers import holds_for, kubectl_plugin, wait_for
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
        assert "kubectl patchwarden approve yes" in proposed["message"]
        # The customer approves exactly as the message says: with the kubectl plugin, which
        # records the name the API server knows them by.
        said = kubectl_plugin(cluster, "-n", namespace, "approve", "yes").stdout
        me = cluster.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
        assert (
            said.strip()
            == f"{namespace}/yes: the proposal for the window at {opens} approved as {me}"
        )
        wait_for(lambda: proposal("yes")["state"] == "Approved", timeout=10, what="approved")
        assert proposal("yes")["approvedBy"] == me
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

        # The plugin's other commands, on what the operator recorded.
        name = run["metadata"]["name"]
        history = kubectl_plugin(cluster, "-n", namespace, "history", "yes").stdout
        assert name in history and "Succeeded" in history, history
        told = kubectl_plugin(cluster, "-n", namespace, "why", "no").stdout
        assert told.startswith(f"window now at {opens}: no run started: the proposal was not "), (
            told
        )
        assert "NotApproved" in told, told
        assert kubectl_plugin(cluster, "-n", namespace, "why", "yes").stdout.startswith(
            f"update run {name} ended Succeeded at "
        )
        fleet = kubectl_plugin(cluster, "-n", namespace, "status").stdout
        assert [line.split()[1] for line in fleet.splitlines()[1:]] == ["no", "yes"], fleet
        one = kubectl_plugin(cluster, "-n", namespace, "status", "yes").stdout
        assert one.startswith(f"{namespace}/yes — customer acme, SaaS"), one
        snaps = kubectl_plugin(cluster, "-n", namespace, "snapshots", "yes").stdout
        assert f"pre-update  {name}" in snaps and "dataSource:" in snaps, snaps
        plan = kubectl_plugin(cluster, "-n", namespace, "plan", "-o", "json").stdout
        assert {s["name"] for s in json.loads(plan)["systems"]} == {"no", "yes"}
        refused = kubectl_plugin(cluster, "-n", namespace, "approve", "no", check=False)
        assert refused.returncode == 1
        assert "proposal is Expired" in refused.stderr, refused.stderr
