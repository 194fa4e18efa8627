"""The requests controller against the in-memory API: it writes only requests, follows the
run that serves each one, and cancels a run that has not started when its request goes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from patchwarden.controllers.requests import Requests
from patchwarden.core.scheduler import Limits
from patchwarden.runtime.fleet import Fleet
from patchwarden_dev.fakekube import FakeKube

NOW = datetime(2027, 2, 10, 12, 0, tzinfo=UTC)
NS = "ns"
SYSTEM = {
    "metadata": {"name": "db", "namespace": NS},
    "spec": {
        "customer": "acme",
        "serviceModel": "PaaS",
        "package": "basic",
        "workload": {"kind": "Deployment", "name": "db"},
        "maintenance": {"windows": [{"name": "w", "cron": "0 23 * * 0", "duration": "4h"}]},
    },
}


def setup() -> tuple[FakeKube, Fleet, Requests, dict[str, Any]]:
    kube, fleet = FakeKube(), Fleet(Limits(10, 2, 3))
    kube.put("managedsystems", NS, SYSTEM)
    request = kube.put(
        "updaterequests",
        NS,
        {
            "metadata": {"name": "r", "generation": 1, "creationTimestamp": "2027-02-10T11:00:00Z"},
            "spec": {"systemRef": {"name": "db"}, "ticket": "HD-1"},
        },
    )
    fleet.observe_request(request)
    return kube, fleet, Requests(kube, lambda *_: None, fleet, now=lambda: NOW), request


def run(phase: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": NS, "name": "db-1"},
        "spec": {
            "systemRef": {"name": "db"},
            "requestRef": {"name": "r"},
            "window": {"start": "2027-02-14T23:00:00Z"},
        },
        "status": {"phase": phase, **status},
    }


def state(kube: FakeKube) -> tuple[str, str]:
    status = kube.stored("updaterequests", NS, "r")["status"]
    return status["state"], status["message"]


def test_a_request_is_accepted_then_follows_its_run() -> None:
    kube, fleet, requests, _ = setup()
    decided = requests.reconcile_for_system(NS, "db", SYSTEM, NOW)
    assert [r["status"]["state"] for r in decided] == ["Accepted"], "the registry's copy too"
    assert state(kube)[1] == "accepted: scheduled for window w at 2027-02-14T23:00:00Z"
    fleet.observe_run(run("Snapshotting"))
    requests.reconcile_for_system(NS, "db", SYSTEM, NOW)
    assert state(kube) == ("Running", "update run db-1 started")
    fleet.observe_run(run("Succeeded", message="done", completionTime="2027-02-15T00:10:00Z"))
    requests.reconcile_for_system(NS, "db", SYSTEM, NOW)
    assert state(kube) == ("Succeeded", "update run db-1: Succeeded: done")
    writes = {c.rsplit("/", 1)[0] for c in kube.calls if c.startswith("patch")}
    assert writes == {"patch updaterequests/status"}


def test_an_unchanged_decision_is_not_written_again() -> None:
    kube, _, requests, _ = setup()
    requests.reconcile_for_system(NS, "db", SYSTEM, NOW)
    requests.reconcile_for_system(NS, "db", SYSTEM, NOW)
    assert [c for c in kube.calls if c.startswith("patch")] == ["patch updaterequests/status/r"]


def test_a_deleted_request_cancels_its_run_only_before_it_started() -> None:
    kube, fleet, requests, request = setup()
    kube.put("updateruns", NS, run("Pending"))
    fleet.observe_run(run("Pending"))
    requests.cancel(request)  # no runRef written yet: the registry knows the run
    assert ("updateruns", NS, "db-1") not in kube.objects
    kube.put("updateruns", NS, run("Updating"))
    requests.cancel({**request, "status": {"runRef": {"name": "db-1"}}})
    assert ("updateruns", NS, "db-1") in kube.objects, "a started run is never cancelled"
