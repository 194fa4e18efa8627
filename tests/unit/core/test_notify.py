"""Which CloudEvents a run or request owes, with stable ids (pure)."""

from __future__ import annotations

from typing import Any

from patchwarden.core.notify import NOTIFIED, delivered, owed, request_notices, run_notices


def run(phase: str | None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": "db-202612060100", "uid": "u-1"},
        "spec": {
            "systemRef": {"name": "db"},
            "customer": "acme",
            "trigger": "Cadence",
            "window": {"name": "sunday", "start": "2026-12-06T01:00:00Z"},
            "targets": [
                {"component": "postgresql", "from": "15.8", "to": "15.10", "image": "pg:15.10"}
            ],
        },
        "status": {"phase": phase, **status} if phase else {},
    }


def test_a_run_owes_started_then_its_ending_in_order() -> None:
    assert run_notices(run(None)) == []
    started = run_notices(run("Updating", startTime="2026-12-06T01:00:05Z"))
    assert [(n.key, n.type, n.id) for n in started] == [
        ("started", "io.patchwarden.updaterun.started.v1", "u-1/started")
    ]
    assert (
        started[0].source
        == "/apis/patchwarden.io/v1alpha1/namespaces/shop/updateruns/db-202612060100"
    )
    assert started[0].subject == "shop/db" and started[0].data["targets"][0]["to"] == "15.10"
    ended = run_notices(
        run(
            "RolledBack",
            startTime="2026-12-06T01:00:05Z",
            completionTime="2026-12-06T01:20:00Z",
            failure="the update Job failed",
        )
    )
    assert [n.key for n in ended] == ["started", "rolledback"]
    assert (
        ended[1].data["failure"] == "the update Job failed"
        and ended[1].time == "2026-12-06T01:20:00Z"
    )
    never = run_notices(run("Failed", completionTime="2026-12-06T04:00:00Z"))
    assert [n.key for n in never] == ["failed"], "ended before it started: no started event"


def test_what_was_delivered_is_not_owed_again() -> None:
    body = run("Succeeded", startTime="2026-12-06T01:00:05Z", completionTime="2026-12-06T01:05:00Z")
    body["metadata"]["annotations"] = {NOTIFIED: "started"}
    assert [n.key for n in owed(run_notices(body), delivered(body))] == ["succeeded"]


def test_a_request_owes_its_decision_and_each_new_acceptance() -> None:
    body = {
        "metadata": {"namespace": "crm", "name": "hd-1", "uid": "r-1"},
        "spec": {"systemRef": {"name": "cache"}, "ticket": "HD-1"},
        "status": {
            "state": "Accepted",
            "conditions": [
                {"type": "Accepted", "status": "True", "lastTransitionTime": "2026-12-01T10:00:00Z"}
            ],
        },
    }
    (first,) = request_notices(body)
    assert (first.key, first.id, first.type, first.time) == (
        "accepted",
        "r-1/accepted",
        "io.patchwarden.updaterequest.accepted.v1",
        "2026-12-01T10:00:00Z",
    )
    body["status"]["attempts"] = 1  # accepted again after a rolled-back attempt
    assert request_notices(body)[0].id == "r-1/accepted-1"
    body["status"]["state"] = "Running"
    assert request_notices(body) == []
