"""Hostile and unusable input: what the schema cannot refuse, the operator reports as
Stalled with a readable reason; it never crashes and keeps serving the others.
(What the API server refuses is tested in test_crds_on_api_server.py.)"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.catalogue import CATALOGUE, SYSTEM, UNUSABLE
from tests.conftest import Cluster
from tests.operator_harness import (
    create,
    now_plus,
    running_operator,
    runs_of,
    wait_run,
    wait_stalled,
    workload,
)

TEMPLATE = {"spec": {"containers": [{"name": "update", "image": "example.com/upd:1"}]}}


def healthy(name: str) -> dict[str, Any]:
    body = copy.deepcopy(SYSTEM)
    body["metadata"] = {"name": name}
    body["spec"]["updates"] = {"template": TEMPLATE, "runJob": "EveryWindow", "bakeTime": "0s"}
    body["spec"]["maintenance"]["windows"] = [{"name": "w", "once": now_plus(-5), "duration": "1h"}]
    body["spec"]["maintenance"]["freezes"] = []
    return body


def test_every_unusable_spec_stalls_and_a_good_system_is_still_served(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.install_crds()
    core, apps = client.CoreV1Api(cluster.api), client.AppsV1Api(cluster.api)
    workload(core, apps, namespace)
    names = {}
    with running_operator(cluster, namespace, tmp_path) as op:
        for i, bad in enumerate(UNUSABLE):
            body = healthy(f"u{i}")
            if bad.name == "expected duration longer than the window":
                body["spec"]["updates"]["expectedDuration"] = "5h"
            else:
                bad.change(body["spec"])
            create(cluster, namespace, body)
            names[f"u{i}"] = bad
        create(cluster, namespace, healthy("good"))
        for name, bad in names.items():
            stalled = wait_stalled(cluster, namespace, name)
            assert stalled["reason"] == bad.reason, (bad.name, stalled)
            assert bad.words in stalled["message"], (bad.name, stalled["message"])
            assert runs_of(cluster, namespace, name) == []
        assert (
            wait_run(cluster, namespace, "good", {"Succeeded", "RolledBack", "Failed"})["status"][
                "phase"
            ]
            == "Succeeded"
        )
        assert op.proc is not None and op.proc.poll() is None, "the operator keeps running"
    assert "Traceback" not in op.output()
    print(
        f"bad inputs: {len(CATALOGUE)} refused by the API server, {len(UNUSABLE)} reported Stalled"
    )
    assert len(CATALOGUE) + len(UNUSABLE) >= 40
