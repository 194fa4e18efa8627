"""The fleet registry and admission: who may start, who waits, who is woken."""

from __future__ import annotations

import json
from typing import Any

import pytest

from patchwarden.core.scheduler import Limits
from patchwarden.runtime.fleet import Fleet, WindowPopulation, run_summary


def run(name: str, customer: str, phase: str | None) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name},
        "spec": {
            "customer": customer,
            "systemRef": {"name": "s"},
            "window": {"start": "2026-11-29T22:00:00Z"},
        },
        "status": {"phase": phase} if phase else {},
    }


def manifest(name: str, customer: str = "acme") -> dict[str, Any]:
    body = run(name, customer, None)
    del body["status"]
    return body


def existed(_manifest: dict[str, Any]) -> bool:
    """A create that finds the run there already (no count is kept for it)."""
    return False


def test_a_freed_slot_wakes_the_oldest_waiters_that_fit() -> None:
    app = Fleet(Limits(max_concurrent=2, per_customer=1, max_errors=3))
    assert not app.observe_run(run("r1", "acme", "Updating"))[1]
    assert not app.observe_run(run("r2", "globex", "Snapshotting"))[1]
    window = ("2026-11-29T22:00:00Z", "2026-11-30T02:00:00Z")
    for name, customer in [("w1", "acme"), ("w2", "acme"), ("w3", "initech"), ("w4", "umbrella")]:
        app.waiting[("ns", name)] = (customer, window)
    assert app.to_wake() == [], "no free slot"
    assert app.observe_run(run("r1", "acme", "Succeeded")) == (True, True), "a slot freed"
    # One slot: w1 (acme, whose run just ended) is the oldest and fits.
    assert app.to_wake() == [("ns", "w1")]
    assert app.forget_run("ns", "r2") is not None, "a deleted active run frees its slot too"
    # Two slots: w1 takes one; w2 would be acme's second run at once; w3 fits.
    assert app.to_wake() == [("ns", "w1"), ("ns", "w3")]
    app.stop_waiting("ns", "w1")
    assert app.to_wake() == [("ns", "w2"), ("ns", "w3")]
    assert app.observe_run(run("r1", "acme", "Succeeded")) == (False, False), "nothing new"


def test_only_a_new_started_or_ended_run_is_news_for_its_system() -> None:
    fleet = Fleet(Limits(max_concurrent=2, per_customer=1, max_errors=3))
    moves = [
        fleet.observe_run(run("r1", "acme", phase))[0]
        for phase in (None, "Pending", "Snapshotting", "Recording", "Updating", "RollingBack")
    ]
    assert moves == [True, False, True, False, False, False]
    assert fleet.observe_run(run("r1", "acme", "RolledBack")) == (True, True)
    assert fleet.observe_run(run("r1", "acme", "RolledBack")) == (False, False)


def test_a_deleted_ended_run_is_remembered_for_its_system_until_the_system_goes() -> None:
    fleet = Fleet(Limits(max_concurrent=2, per_customer=1, max_errors=3))
    ended = run("r1", "acme", "RolledBack")
    ended["status"]["completionTime"] = "2026-11-29T23:00:00Z"
    fleet.observe_run(ended)
    fleet.observe_run(run("r2", "acme", "Updating"))
    fleet.forget_run("ns", "r2")
    assert fleet.deleted_run("ns", "s") is None, "a run that never ended leaves nothing"
    fleet.forget_run("ns", "r1")
    remembered = fleet.deleted_run("ns", "s")
    assert remembered is not None and remembered["metadata"]["name"] == "r1"
    older = run("r0", "acme", "Succeeded")
    older["status"]["completionTime"] = "2026-11-22T23:00:00Z"
    fleet.observe_run(older)
    fleet.forget_run("ns", "r0")  # pruned history: older than what is remembered
    assert fleet.deleted_run("ns", "s") == remembered
    fleet.forget_system("ns", "s")
    assert fleet.deleted_run("ns", "s") is None


def test_a_run_the_alert_gate_stopped_is_marked_in_its_summary() -> None:
    stopped = run("r1", "acme", "Cancelled")
    stopped["status"]["alertGate"] = {"decision": "AlertsFiring", "stopped": True}
    started_anyway = run("r2", "acme", "Failed")
    started_anyway["status"]["alertGate"] = {"decision": "AlertGateUnreachable", "stopped": False}
    assert run_summary(stopped)["status"]["gateStopped"] is True
    assert run_summary(stopped)["status"]["gateDecision"] == "AlertsFiring"  # waves.halts
    assert "gateStopped" not in run_summary(started_anyway)["status"]
    held = run("r3", "acme", "Pending")
    held["status"]["alertGate"] = {"decision": "AlertsFiring", "stopped": True}
    assert "gateStopped" not in run_summary(held)["status"], "only an ended run was stopped"


def test_percentage_limits_count_the_systems_whose_window_overlaps() -> None:
    night = ("2026-11-29T22:00:00Z", "2026-11-30T02:00:00Z")

    def system(customer: str, start: str, end: str) -> dict[str, Any]:
        return {
            "spec": {"customer": customer},
            "status": {"nextWindow": {"start": start, "end": end}},
        }

    fleet_of = [
        *(system("acme", "2026-11-29T22:00:00Z", "2026-11-30T02:00:00Z") for _ in range(8)),
        system("globex", "2026-11-29T23:30:00Z", "2026-11-30T01:00:00Z"),  # overlaps
        system("globex", "2026-11-30T22:00:00Z", "2026-12-01T02:00:00Z"),  # the next night
        {"spec": {"customer": "initech"}, "status": {}},  # not eligible: no next window
    ]
    count = WindowPopulation()
    for i, body in enumerate(fleet_of):
        count.observe(("ns", f"s{i}"), body)
    assert count(night) == {"acme": 8, "globex": 1}
    count.observe(("ns", "new"), system("acme", *night))
    assert count(night)["acme"] == 9, "current with the last event"
    count.observe(("ns", "s8"), system("globex", "2026-11-30T22:00:00Z", "2026-12-01T02:00:00Z"))
    count.observe(("ns", "s0"), None)  # deleted
    assert count(night) == {"acme": 8}, "a system counts where its next window is now"
    for i in (0, 8):  # back as they were: 9 of acme's, 1 of globex's
        count.observe(("ns", f"s{i}"), fleet_of[i])
    fleet = Fleet(Limits("20%", "50%", 3), population=count)  # 2 of 10; 5 of acme's 9
    fleet.observe_run(run("r1", "acme", "Updating"))
    assert fleet.admit(("ns", "s2"), "acme", night, lambda: manifest("x2"), existed) is None
    fleet.observe_run(run("r2", "acme", "Updating"))
    blocked = fleet.admit(("ns", "s3"), "acme", night, lambda: manifest("x3"), existed)
    assert blocked == "2 runs in progress, the fleet-wide limit is 20% of 10 systems in this window"
    assert fleet.to_wake() == []
    fleet.observe_run(run("r1", "acme", "Succeeded"))
    assert fleet.to_wake() == [("ns", "s3")]


def test_each_systems_runs_and_requests_are_indexed_and_the_limits_read_only_what_counts() -> None:
    """A year of runs: a system's reconcile reads its own runs (not the fleet's), and an
    admission reads the runs in progress and the failed ones, whatever the successes."""
    fleet = Fleet(Limits(max_concurrent=2, per_customer=2, max_errors=1))
    for week in range(52):
        for system in ("a", "b"):
            done = run(f"{system}-{week}", "acme", "Succeeded")
            done["spec"]["systemRef"] = {"name": system}
            fleet.observe_run(done)
    failed = run("b-failed", "acme", "RolledBack")
    failed["spec"]["systemRef"] = {"name": "b"}
    failed["spec"]["requestRef"] = {"name": "ask"}
    fleet.observe_run(failed)
    fleet.observe_request(
        {"metadata": {"namespace": "ns", "name": "ask"}, "spec": {"systemRef": {"name": "b"}}}
    )
    assert len(fleet.runs_of("ns", "a")) == 52 and len(fleet.runs_of("ns", "b")) == 53
    assert fleet.runs_of("other", "a") == [] and fleet.runs_of("ns", "c") == []
    assert [r["metadata"]["name"] for r in fleet.runs_of_request("ns", "ask")] == ["b-failed"]
    assert [r["metadata"]["name"] for r in fleet.requests_of("ns", "b")] == ["ask"]
    assert fleet.requests_of("ns", "a") == []
    assert list(fleet._limiting) == [("ns", "b-failed")], "the successes are not read"
    window = ("2026-11-29T22:00:00Z", "2026-11-30T02:00:00Z")
    assert "1 runs failed" in (fleet.halted(window) or ""), "the error budget still counts"
    assert fleet.admit(("ns", "a"), "acme", window, lambda: manifest("x"), existed) is not None
    fleet.forget_run("ns", "b-failed")
    assert fleet.halted(window) is None and len(fleet.runs_of("ns", "b")) == 52
    for week in range(52):
        fleet.forget_run("ns", f"a-{week}")
    assert fleet.runs_of("ns", "a") == [] and ("ns", "a") not in fleet._runs_by_system
    fleet.forget_request("ns", "ask")
    assert fleet.requests_of("ns", "b") == [] and fleet._requests_by_system == {}
    # A run moving from in progress to succeeded leaves what the limits count.
    fleet.observe_run(run("r", "acme", "Updating"))
    assert list(fleet._limiting) == [("ns", "r")]
    fleet.observe_run(run("r", "acme", "Succeeded"))
    assert fleet._limiting == {}


def test_retained_runs_share_what_they_repeat_not_what_is_their_own() -> None:
    app = Fleet(Limits(max_concurrent=2, per_customer=1, max_errors=3))
    for name in ("r1", "r2"):
        body = json.loads(json.dumps(run(name, "acme", "Succeeded")))  # parsed apart
        body["status"]["completionTime"] = f"2026-11-30T0{name[1]}:00:00Z"
        app.observe_run(body)
    one, two = app.runs[("ns", "r1")], app.runs[("ns", "r2")]
    assert one["spec"] == two["spec"] and one["spec"] is not two["spec"]
    start = "2026-11-29T22:00:00Z"
    assert one["spec"]["window"]["start"] == start
    assert one["spec"]["window"]["start"] is two["spec"]["window"]["start"], "one copy"
    assert one["metadata"]["namespace"] is two["metadata"]["namespace"]
    known = set(app.strings._known)
    assert {"r1", "r2", "2026-11-30T01:00:00Z"}.isdisjoint(known), "a run's own: not kept"
    assert sorted(r["metadata"]["name"] for r in app.runs_of("ns", "s")) == ["r1", "r2"]


def test_an_admitted_run_counts_at_once_and_its_creation_holds_no_lock() -> None:
    """The API calls of a creation run outside the registry's lock: other admissions, the
    watch's events and reconciles go on meanwhile, and the slot is taken already."""
    fleet = Fleet(Limits(max_concurrent=1, per_customer=1, max_errors=3))
    window = ("2026-11-29T22:00:00Z", "2026-11-30T02:00:00Z")
    seen: list[Any] = []

    def create(body: dict[str, Any]) -> bool:
        assert fleet.lock.acquire(blocking=False), "the lock is free while the run is created"
        fleet.lock.release()
        seen.append(fleet.admit(("ns", "other"), "globex", window, lambda: manifest("o"), existed))
        fleet.observe_run(run("elsewhere", "initech", "Succeeded"))  # a watch event meanwhile
        return True

    assert fleet.admit(("ns", "s"), "acme", window, lambda: manifest("r"), create) is None
    assert seen == ["1 runs in progress, the fleet-wide limit is 1"], "the slot was taken"
    assert fleet.runs_of("ns", "s")[0]["status"]["phase"] == "Pending"


def test_a_failed_or_needless_creation_gives_its_slot_back() -> None:
    fleet = Fleet(Limits(max_concurrent=1, per_customer=1, max_errors=3))
    window = ("2026-11-29T22:00:00Z", "2026-11-30T02:00:00Z")

    def refused(_body: dict[str, Any]) -> bool:
        raise RuntimeError("403 from the API server")

    with pytest.raises(RuntimeError, match="403"):  # the reconcile sees it, and retries
        fleet.admit(("ns", "s"), "acme", window, lambda: manifest("r"), refused)
    assert fleet.runs == {} and fleet._limiting == {}
    assert fleet.admit(("ns", "s"), "acme", window, lambda: manifest("r"), existed) is None
    assert fleet.runs == {}, "a run that existed is counted from its watch event, not twice"

    def watched_meanwhile(body: dict[str, Any]) -> bool:
        fleet.observe_run({**body, "status": {"phase": "Snapshotting"}})
        return False

    fleet.admit(("ns", "s"), "acme", window, lambda: manifest("r"), watched_meanwhile)
    assert fleet.runs_of("ns", "s")[0]["status"]["phase"] == "Snapshotting", "the watch's stays"
