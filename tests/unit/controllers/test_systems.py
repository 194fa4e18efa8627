"""The systems controller's reads, without a cluster."""

from __future__ import annotations

import copy
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from patchwarden.controllers.systems import Systems
from patchwarden.core.builders import RUN_FINALIZER
from patchwarden.core.gate import Answer
from patchwarden.core.scheduler import Limits
from patchwarden.core.settings import Settings
from patchwarden.core.times import parse_time, utc_text
from patchwarden.runtime.alerts import Gate
from patchwarden.runtime.fleet import Fleet
from patchwarden.runtime.inventory import KINDS
from patchwarden.runtime.view import View
from patchwarden_dev.fakekube import FakeKube, FakeView
from tests.unit.systems import CATALOG, POSTGRES

LIMITS = Limits(10, 2, 3)
DEFAULT_CLASS = {"snapshot.storage.kubernetes.io/is-default-class": "true"}
FAILED = {"patchwarden.io/state": "failed"}


def test_with_the_watches_listed_a_reconcile_that_changes_nothing_asks_the_api_nothing() -> None:
    kube = FakeKube()
    body = saas(kube, "a")
    body["spec"]["maintenance"] = {
        "windows": [{"name": "w", "cron": "0 23 * * 0", "duration": "4h"}]
    }
    body["spec"]["volumes"] = ["data"]
    body["spec"]["backup"] = {"required": True}
    view = View()
    app = Systems(
        Settings(), kube, lambda *_: None, Fleet(LIMITS), lambda *_: [], view, lambda: NOW
    )
    inventory = view.inventory
    for kind in KINDS:
        listed = threading.Event()
        listed.set()
        inventory.watched_by(kind, listed)
    inventory.observe("Deployment", [("ADDED", {"metadata": {"namespace": "ns", "name": "a"}})])
    for bodies, item in (
        (view.class_bodies, {"metadata": {"name": "std", "annotations": DEFAULT_CLASS}}),
        (view.catalog_bodies, None),
    ):
        bodies.synced = threading.Event()
        bodies.synced.set()
        if item is not None:
            bodies.observe([("ADDED", item)])
    snapshots_listed = threading.Event()
    snapshots_listed.set()
    view.snapshots.watched_by(snapshots_listed)
    assert view.synced()
    app.reconcile(body)
    stalled = kube.stored("managedsystems", "ns", "a")["status"]
    assert "PersistentVolumeClaims not found: data" in conditions(stalled)["Stalled"]
    inventory.observe(
        "PersistentVolumeClaim", [("ADDED", {"metadata": {"namespace": "ns", "name": "data"}})]
    )
    kube.calls.clear()
    app.reconcile(kube.stored("managedsystems", "ns", "a"))
    ready = kube.stored("managedsystems", "ns", "a")
    assert conditions(ready["status"])["Ready"].startswith("True")
    assert kube.calls == ["patch managedsystems/status/a"], "the status written, nothing read"
    kube.calls.clear()
    delay = app.reconcile(ready)
    assert kube.calls == [], "nothing changed: no request at all"
    assert delay > 60, "and no blanket timer: the next window or the safety resync"


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: f"{c['status']} {c['message']}" for c in status.get("conditions") or []}


NOW = datetime(2027, 2, 10, 12, 0, tzinfo=UTC)
OPEN = {"windows": [{"name": "now", "once": "2027-02-10T11:55:00Z", "duration": "2h"}]}


def saas(kube: FakeKube, name: str, customer: str = "acme") -> dict[str, Any]:
    kube.put("deployments", "ns", {"metadata": {"name": name}, "spec": {}})
    return kube.put(
        "managedsystems",
        "ns",
        {
            "metadata": {"name": name, "uid": f"uid-{name}", "generation": 1},
            "spec": {
                "customer": customer,
                "serviceModel": "SaaS",
                "workload": {"kind": "Deployment", "name": name},
                "maintenance": OPEN,
                "updates": {
                    "template": {"spec": {"containers": [{"name": "u", "image": "x"}]}},
                    "runJob": "EveryWindow",
                },
                "backup": {"required": False},
            },
        },
    )


def systems(
    kube: FakeKube,
    limits: Limits = LIMITS,
    emit: Any = lambda *_: None,
    now: Any = lambda: NOW,
    settings: Settings | None = None,
    gate: Gate | None = None,
) -> Systems:
    """The systems controller over ``kube``'s objects (its read model a FakeView)."""
    return Systems(
        settings or Settings(), kube, emit, Fleet(limits), lambda *_: [], FakeView(kube), now, gate
    )


def test_a_due_system_starts_its_run_and_the_registry_counts_it_at_once() -> None:
    kube = FakeKube()
    controller = systems(kube, Limits(max_concurrent=1, per_customer=1, max_errors=3))
    first, second = saas(kube, "a"), saas(kube, "b", customer="globex")
    controller.reconcile(first)
    assert kube.created() == ["create updateruns/a-202702101155"]
    assert kube.stored("managedsystems", "ns", "a")["status"]["conditions"]
    waits = controller.reconcile(second)
    cutoff = parse_time(kube.stored("managedsystems", "ns", "b")["status"]["nextWindow"]["cutoff"])
    assert waits == (cutoff - NOW).total_seconds(), "waits for a slot until its window's cutoff"
    assert list(controller.fleet.waiting) == [("ns", "b")]
    assert kube.created() == ["create updateruns/a-202702101155"], "the limit held"


def test_last_run_is_derived_from_the_runs_not_written_by_them() -> None:
    kube = FakeKube()
    controller = systems(kube)
    body = saas(kube, "a")
    controller.reconcile(body)
    run = kube.stored("updateruns", "ns", "a-202702101155")
    run["status"] = {"phase": "Succeeded", "completionTime": "2027-02-10T12:30:00Z"}
    assert controller.fleet.observe_run(run) == (True, True)
    controller.reconcile(body)
    status = kube.stored("managedsystems", "ns", "a")["status"]
    assert status["lastRun"] == {
        "name": "a-202702101155",
        "result": "Succeeded",
        "completionTime": "2027-02-10T12:30:00Z",
    }
    assert status["lastSuccessfulUpdate"] == "2027-02-10T12:30:00Z"
    assert kube.created() == ["create updateruns/a-202702101155"], "one run per window"


def test_a_system_holds_its_deletion_only_while_a_run_is_in_progress() -> None:
    kube = FakeKube()
    controller = systems(kube)
    body = saas(kube, "a")
    controller.reconcile(body)
    stored = kube.stored("managedsystems", "ns", "a")
    assert stored["metadata"]["finalizers"] == [RUN_FINALIZER], "added with its run"
    # Deleted while the run is in progress: held, nothing new starts.
    stored["metadata"]["deletionTimestamp"] = "2027-02-10T12:01:00Z"
    controller.reconcile(copy.deepcopy(stored))
    assert kube.stored("managedsystems", "ns", "a")["metadata"]["finalizers"] == [RUN_FINALIZER]
    # The run ends (here: stopped because its system is being deleted): the deletion completes.
    run = kube.stored("updateruns", "ns", "a-202702101155")
    run["status"] = {"phase": "Cancelled", "completionTime": "2027-02-10T12:01:02Z"}
    controller.fleet.observe_run(run)
    controller.reconcile(copy.deepcopy(kube.stored("managedsystems", "ns", "a")))
    assert ("managedsystems", "ns", "a") not in kube.objects
    assert kube.created() == ["create updateruns/a-202702101155"]


def test_a_system_without_a_run_in_progress_has_no_finalizer() -> None:
    kube = FakeKube()
    controller = systems(kube)
    body = saas(kube, "a")
    body["spec"]["maintenance"] = {"windows": []}
    controller.reconcile(body)
    assert "finalizers" not in kube.stored("managedsystems", "ns", "a")["metadata"]


def bound(kube: FakeKube, image: str, model: str = "PaaS") -> dict[str, Any]:
    """A system whose postgres runs in container db of its Deployment, with no Job template."""
    kube.put(
        "deployments",
        "ns",
        {
            "metadata": {"name": "db", "generation": 1},
            "spec": {"template": {"spec": {"containers": [{"name": "db", "image": image}]}}},
        },
    )
    kube.put("releasecatalogs", "", CATALOG)
    return kube.put(
        "managedsystems",
        "ns",
        {
            "metadata": {"name": "db", "uid": "uid-db", "generation": 1},
            "spec": {
                "customer": "acme",
                "serviceModel": model,
                **({"package": "advanced"} if model == "PaaS" else {}),
                "workload": {"kind": "Deployment", "name": "db"},
                "maintenance": OPEN,
                "components": [POSTGRES],
                "backup": {"required": False},
            },
        },
    )


def test_a_system_behind_starts_a_run_with_its_targets_and_says_what_is_pending() -> None:
    kube = FakeKube()
    body = bound(kube, "pg:16.3")
    systems(kube).reconcile(body)
    status = kube.stored("managedsystems", "ns", "db")["status"]
    assert status["components"] == [
        {
            "name": "postgres",
            "inScope": True,
            "container": "db",
            "workload": "db",
            "installed": "16.3",
            "image": "pg:16.3",
            "security": "16.4",
            "feature": "16.5",
            "behindSince": "2027-01-01T00:00:00Z",
        }
    ]
    assert status["pendingUpdates"] == "security 1"  # PaaS: features are not in its contract
    up = next(c for c in status["conditions"] if c["type"] == "UpToDate")
    assert (up["status"], up["reason"]) == ("False", "UpdatesPending")
    assert "postgres 16.3→16.4" in up["message"]
    run = kube.stored("updateruns", "ns", "db-202702101155")
    assert [(t["to"], t["image"]) for t in run["spec"]["targets"]] == [("16.4", "pg:16.4")]


def test_an_up_to_date_system_starts_no_run_and_says_so_once() -> None:
    kube = FakeKube()
    events: list[str] = []
    body = bound(kube, "pg:16.5", model="SaaS")
    controller = systems(kube, emit=lambda _b, _t, reason, _m: events.append(reason))
    controller.reconcile(body)
    controller.reconcile(kube.stored("managedsystems", "ns", "db"))
    assert not [c for c in kube.created() if "updateruns" in c], "no run, no snapshot"
    status = kube.stored("managedsystems", "ns", "db")["status"]
    assert status["skippedWindow"] == {"name": "now", "start": "2027-02-10T11:55:00Z"}
    assert events.count("NothingToInstall") == 1
    up = next(c for c in status["conditions"] if c["type"] == "UpToDate")
    assert (up["status"], up["reason"]) == ("True", "NothingPending")


def test_a_container_the_workload_lacks_stalls_the_system_naming_the_field() -> None:
    kube = FakeKube()
    body = bound(kube, "pg:16.3")
    body["spec"]["components"][0]["container"] = "postgres"
    kube.put("managedsystems", "ns", body)
    systems(kube).reconcile(body)
    status = kube.stored("managedsystems", "ns", "db")["status"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "ContainerNotFound"
    assert "spec.components[0]: container postgres not found in Deployment db" in stalled["message"]
    assert not [c for c in kube.created() if "updateruns" in c]


def test_a_component_past_its_end_of_life_with_nothing_newer_says_so_once() -> None:
    kube = FakeKube()
    events: list[tuple[str, str]] = []
    old = copy.deepcopy(CATALOG)
    old["spec"]["components"][0]["releases"] = [
        {
            "version": "16.3",
            "image": "pg:16.3",
            "classes": ["security"],
            "released": "2025-01-01T00:00:00Z",
            "endOfLife": "2026-12-31",
        }
    ]
    body = bound(kube, "pg:16.3")
    kube.put("releasecatalogs", "", old)
    controller = systems(
        kube, emit=lambda _b, _t, reason, message: events.append((reason, message))
    )
    controller.reconcile(body)
    controller.reconcile(kube.stored("managedsystems", "ns", "db"))
    status = kube.stored("managedsystems", "ns", "db")["status"]
    eol = next(c for c in status["conditions"] if c["type"] == "EndOfLife")
    assert (eol["status"], eol["reason"]) == ("True", "EndOfLifePassed")
    assert "postgres 16.3 reached its end of life on 2026-12-31" in eol["message"]
    assert [r for r, _ in events].count("EndOfLifePassed") == 1, events
    assert status["components"][0]["endOfLife"] == "2026-12-31"


class Answers(Gate):
    """The alert gate with answers given by the test (the endpoint itself is asked in
    tests/cluster/test_alert_gate.py, a real Prometheus)."""

    def __init__(self, settings: Settings, series: list[dict[str, str]]) -> None:
        super().__init__(settings)
        self.series = series

    def answer(self, query: str) -> Answer:
        return Answer(query, tuple(self.series))


def test_firing_alerts_hold_a_due_run_back_and_say_so_until_they_clear() -> None:
    kube = FakeKube()
    settings = Settings(
        prometheus_url="http://127.0.0.1:9", alert_gate_query='ALERTS{alertstate="firing"}'
    )
    gate = Answers(settings, [{"alertname": "NodeDown", "node": "n1"}])
    controller = systems(kube, settings=settings, gate=gate)
    body = saas(kube, "a")
    assert controller.reconcile(body) == settings.alert_gate_interval_seconds
    assert kube.created() == [], "no run while an alert fires"
    stored = kube.stored("managedsystems", "ns", "a")
    halted = next(c for c in stored["status"]["conditions"] if c["type"] == "UpdatesHalted")
    assert (halted["status"], halted["reason"]) == ("True", "AlertsFiring")
    assert halted["message"] == 'alerts firing: NodeDown{node="n1"}'
    gate.series = [{"alertname": "PostgresDown", "namespace": "elsewhere"}]
    controller.reconcile(stored)
    assert kube.created() == ["create updateruns/a-202702101155"], "another namespace's alert"
    stored = kube.stored("managedsystems", "ns", "a")
    halted = next(c for c in stored["status"]["conditions"] if c["type"] == "UpdatesHalted")
    assert (halted["status"], halted["reason"]) == ("False", "AlertsClear")


def test_a_proposal_is_approved_with_an_annotation_and_only_then_runs() -> None:
    kube = FakeKube()
    body = saas(kube, "a")
    body["spec"]["updates"]["approval"] = {"before": "24h"}
    body["spec"]["maintenance"] = {
        "windows": [{"name": "sat", "once": "2027-02-13T01:00:00Z", "duration": "3h"}]
    }
    clock = [NOW]
    controller = systems(kube, now=lambda: clock[0])
    controller.reconcile(body)
    proposal = kube.stored("managedsystems", "ns", "a")["status"]["proposal"]
    assert (proposal["state"], proposal["start"], proposal["approveBy"]) == (
        "Pending",
        "2027-02-13T01:00:00Z",
        "2027-02-12T01:00:00Z",
    )
    assert proposal["message"].endswith(
        "with: kubectl patchwarden approve a (or reject a --reason …)"
    )
    stored = kube.stored("managedsystems", "ns", "a")
    stored["metadata"]["annotations"] = {"patchwarden.io/approve": "2027-02-13T01:00:00Z"}
    controller.reconcile(stored)
    proposal = kube.stored("managedsystems", "ns", "a")["status"]["proposal"]
    assert proposal["state"] == "Pending", "no approver recorded: no approval"
    stored = kube.stored("managedsystems", "ns", "a")
    stored["metadata"]["annotations"]["patchwarden.io/approved-by"] = "jane@acme.example"
    controller.reconcile(stored)
    proposal = kube.stored("managedsystems", "ns", "a")["status"]["proposal"]
    assert (proposal["state"], proposal["approvedBy"]) == ("Approved", "jane@acme.example")
    clock[0] = datetime(2027, 2, 13, 1, 5, tzinfo=UTC)
    controller.reconcile(kube.stored("managedsystems", "ns", "a"))
    assert kube.created() == ["create updateruns/a-202702130100"]


def test_an_unapproved_window_is_skipped_with_the_reason() -> None:
    kube, events = FakeKube(), []
    body = saas(kube, "a")
    body["spec"]["updates"]["approval"] = {}
    controller = systems(kube, emit=lambda *e: events.append(e[1:]))
    controller.reconcile(body)  # the window opened 5 minutes ago: 24 h too late to approve
    stored = kube.stored("managedsystems", "ns", "a")
    assert stored["status"]["proposal"]["state"] == "Expired"
    assert kube.created() == []
    assert stored["status"]["skippedWindow"]["reason"] == (
        "the proposal was not approved by 2027-02-09T11:55:00Z"
    )
    assert ("Warning", "NotApproved") in [e[:2] for e in events]


def test_a_rejected_proposal_skips_its_window_with_the_customers_reason() -> None:
    kube, events = FakeKube(), []
    body = saas(kube, "a")
    body["spec"]["updates"]["approval"] = {}
    body["spec"]["maintenance"] = {
        "windows": [{"name": "sat", "once": "2027-02-13T01:00:00Z", "duration": "3h"}]
    }
    clock = [NOW]
    controller = systems(kube, emit=lambda *e: events.append(e[1:]), now=lambda: clock[0])
    controller.reconcile(body)
    stored = kube.stored("managedsystems", "ns", "a")
    stored["metadata"]["annotations"] = {
        "patchwarden.io/reject": "2027-02-13T01:00:00Z",
        "patchwarden.io/rejected-by": "jane@acme.example",
        "patchwarden.io/reject-reason": "month-end closing",
    }
    controller.reconcile(stored)
    proposal = kube.stored("managedsystems", "ns", "a")["status"]["proposal"]
    assert (proposal["state"], proposal["rejectedBy"], proposal["reason"]) == (
        "Rejected",
        "jane@acme.example",
        "month-end closing",
    )
    clock[0] = datetime(2027, 2, 13, 1, 5, tzinfo=UTC)
    controller.reconcile(kube.stored("managedsystems", "ns", "a"))
    assert kube.created() == []
    skipped = kube.stored("managedsystems", "ns", "a")["status"]["skippedWindow"]
    assert skipped["reason"] == "the proposal was rejected by jane@acme.example: month-end closing"
    assert ("Warning", "NotApproved") in [e[:2] for e in events]


def test_with_no_run_in_progress_snapshots_beyond_the_retention_go() -> None:
    """A history of runs (made elsewhere, or ending in rollbacks, which prune nothing) does
    not pile up snapshots: the system keeps those of its newest ``retain`` runs and of its
    newest successful run, and failed-state snapshots taken less than ``keepFailedState``
    before that success; nothing while a run is in progress."""
    kube = FakeKube()
    body = saas(kube, "a")
    body["spec"]["maintenance"] = {
        "windows": [{"name": "w", "cron": "0 23 * * 0", "duration": "4h"}]
    }
    body["spec"]["backup"] = {"required": False, "retain": 2}
    body["spec"]["rollback"] = {"keepFailedState": "72h"}
    app = systems(kube)
    year = datetime(2027, 1, 1, 23, tzinfo=UTC)

    def snapshot(name: str, run: str, taken: datetime, **labels: str) -> dict[str, Any]:
        labels.update({"patchwarden.io/system": "a", "patchwarden.io/run": run})
        meta = {"namespace": "ns", "name": name, "labels": labels}
        return {"metadata": {**meta, "creationTimestamp": utc_text(taken)}}

    def ended(run: str, phase: str, at: datetime | None = None) -> dict[str, Any]:
        status = {"phase": phase, **({"completionTime": utc_text(at)} if at else {})}
        meta = {"namespace": "ns", "name": run}
        return {"metadata": meta, "spec": {"systemRef": {"name": "a"}}, "status": status}

    # Weekly runs r1…r5, one backup each: r2 succeeded; r1, r3, r4 and r5 rolled back, and
    # each of those took a failed-state snapshot half an hour later.
    for week, phase in enumerate(["RolledBack", "Succeeded", *["RolledBack"] * 3], start=1):
        run, taken = f"r{week}", year + timedelta(weeks=week)
        kube.put("volumesnapshots", "ns", snapshot(f"{run}-data", run, taken))
        if phase == "RolledBack":
            failed = snapshot(f"{run}-failed", run, taken + timedelta(minutes=30), **FAILED)
            kube.put("volumesnapshots", "ns", failed)
        app.fleet.observe_run(ended(run, phase, taken + timedelta(minutes=40)))
    # r6 is in progress (it took no snapshot yet): nothing goes.
    app.fleet.observe_run(ended("r6", "Updating"))
    app.reconcile(body)
    assert not [c for c in kube.calls if c.startswith("delete")], "a run in progress"
    # r6 succeeded 2 days after r5's failed-state snapshot.
    r5_failed = year + timedelta(weeks=5, minutes=30)
    app.fleet.observe_run(ended("r6", "Succeeded", r5_failed + timedelta(days=2)))
    app.reconcile(body)
    deleted = sorted(c.split("/", 1)[1] for c in kube.calls if c.startswith("delete"))
    # Kept: r4's and r5's backups (the newest two runs' with snapshots; r6, the newest
    # success, took none) and r5's failed state (taken less than 72 h before r6 ended).
    assert deleted == ["r1-data", "r1-failed", "r2-data", "r3-data", "r3-failed", "r4-failed"]


def test_the_ledger_records_a_halt_in_the_catalog_and_a_deleted_run_does_not_lift_it() -> None:
    """Issue 33, 1.3: the halt lived only in the runs; ``kubectl delete urun`` lifted it."""
    kube = FakeKube()
    body = bound(kube, "pg:16.3", model="SaaS")
    waved = copy.deepcopy(CATALOG)
    waved["spec"]["rollout"] = {
        "waves": [{"name": "canary", "selector": {"matchLabels": {"ring": "canary"}}}]
    }
    kube.put("releasecatalogs", "", waved)
    body["metadata"]["labels"] = {"ring": "canary"}
    kube.put("managedsystems", "ns", body)
    kube.put(
        "managedsystems",
        "ns",
        {**copy.deepcopy(body), "metadata": {"name": "late", "uid": "u2", "generation": 1}},
    )
    controller = systems(kube)
    controller.reconcile(kube.stored("managedsystems", "ns", "db"))
    run = kube.stored("updateruns", "ns", "db-202702101155")
    run["status"] = {"phase": "RolledBack", "completionTime": "2027-02-10T12:00:00Z"}
    controller.fleet.observe_run(copy.deepcopy(run))
    controller.refresh_ledger()
    record = kube.stored("releasecatalogs", "", "tested")["status"]["rollout"]
    assert record == [
        {
            "component": "postgres",
            "version": "16.5",
            "waves": [],
            "halted": {
                "run": "db-202702101155",
                "system": "ns/db",
                "wave": "canary",
                "phase": "RolledBack",
                "time": "2027-02-10T12:00:00Z",
            },
        }
    ]
    controller.fleet.forget_run("ns", "db-202702101155")  # kubectl delete urun
    kube.objects.pop(("updateruns", "ns", "db-202702101155"))
    controller.refresh_ledger()
    assert kube.stored("releasecatalogs", "", "tested")["status"]["rollout"] == record
    controller.reconcile(kube.stored("managedsystems", "ns", "late"))
    held = next(
        c
        for c in kube.stored("managedsystems", "ns", "late")["status"]["conditions"]
        if c["type"] == "ReleasesHeld"
    )
    assert (held["status"], held["reason"]) == ("True", "ReleaseHalted")
    assert (
        "postgres 16.5 is halted: run db-202702101155 of ns/db ended RolledBack"
        in (held["message"])
    )


DEBIAN_CATALOG: dict[str, Any] = {
    "metadata": {"name": "os"},
    "spec": {
        "components": [
            {
                "name": "debian",
                "releases": [
                    {"version": v, "image": f"debian:{v}", "classes": ["security"]}
                    | {"released": "2027-01-01T00:00:00Z"}
                    for v in ("12.7", "12.8")
                ],
            }
        ]
    },
}


def test_a_version_written_by_hand_advances_with_the_run_that_installed_it() -> None:
    """Issue 33, 1.6: after a Job reported debian 12.7→12.8, the system still read 12.7,
    UpToDate=False, and the next window targeted the same update again."""
    kube = FakeKube()
    kube.put("releasecatalogs", "", DEBIAN_CATALOG)
    body = saas(kube, "vm")
    debian = {"name": "debian", "version": "12.7", "installedBy": "provider"}
    body["spec"]["components"] = [debian | {"source": "standard-repository", "layer": "os"}]
    body["spec"]["updates"]["runJob"] = "WhenNewer"
    body["spec"]["history"] = {"successfulRuns": 0}  # pruned at once: the record outlives it
    kube.put("managedsystems", "ns", body)
    controller = systems(kube)
    controller.reconcile(kube.stored("managedsystems", "ns", "vm"))
    run = kube.stored("updateruns", "ns", "vm-202702101155")
    assert [(t["from"], t["to"]) for t in run["spec"]["targets"]] == [("12.7", "12.8")]
    run["status"] = {
        "phase": "Succeeded",
        "completionTime": "2027-02-10T12:30:00Z",
        "changes": [{"component": "debian", "from": "12.7", "to": "12.8", "source": "job"}],
    }
    controller.fleet.observe_run(copy.deepcopy(run))
    controller.reconcile(kube.stored("managedsystems", "ns", "vm"))
    assert "delete updateruns/vm-202702101155" in kube.calls, "history 0: pruned"
    status = kube.stored("managedsystems", "ns", "vm")["status"]
    assert status["learnedVersions"] == [
        {
            "component": "debian",
            "version": "12.8",
            "specVersion": "12.7",
            "run": "vm-202702101155",
            "time": "2027-02-10T12:30:00Z",
        }
    ]
    (component,) = status["components"]
    assert (component["installed"], component["installedFrom"]) == (
        "12.8",
        "update run vm-202702101155 installed it (the spec still says 12.7)",
    )
    assert conditions(status)["UpToDate"].startswith("True")
    # Pruned and forgotten by the registry: the next window has nothing to install.
    controller.fleet.forget_run("ns", "vm-202702101155")
    kube.objects.pop(("updateruns", "ns", "vm-202702101155"), None)
    stored = kube.stored("managedsystems", "ns", "vm")
    stored["spec"]["maintenance"] = {
        "windows": [{"name": "later", "once": "2027-02-10T11:58:00Z", "duration": "2h"}]
    }
    kube.calls.clear()
    controller.reconcile(stored)
    assert not [c for c in kube.calls if c.startswith("create updateruns")], "no second 12.7→12.8"
    assert kube.stored("managedsystems", "ns", "vm")["status"]["skippedWindow"]["name"] == "later"
    # GitOps writes the new version: the spec counts again.
    stored = kube.stored("managedsystems", "ns", "vm")
    stored["spec"]["components"][0]["version"] = "12.8"
    controller.reconcile(stored)
    (component,) = kube.stored("managedsystems", "ns", "vm")["status"]["components"]
    assert (component["installed"], component["installedFrom"]) == ("12.8", "spec")
