"""What status a system and a request get (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from patchwarden.api.system import Component, ManagedSystemStatus
from patchwarden.core.releases import State, states
from patchwarden.core.request_status import request_status as typed_request_status
from patchwarden.core.status import (
    SystemFacts,
    last_run,
    next_look,
    parse_system,
    requeue_after,
)
from patchwarden.core.status import system_status as typed_status
from patchwarden.core.times import parse_time, utc_text
from tests.unit.core.test_releases import _release, catalogs, workload

NOW = datetime(2027, 2, 10, 12, 0, tzinfo=UTC)


def body(**spec: Any) -> dict[str, Any]:
    base = {
        "customer": "acme",
        "serviceModel": "SaaS",
        "workload": {"kind": "Deployment", "name": "app"},
        "updates": {"template": {"spec": {"containers": [{"name": "u", "image": "x"}]}}},
        "maintenance": {"windows": [{"name": "w", "cron": "0 23 * * 0", "duration": "4h"}]},
    }
    return {"metadata": {"name": "s", "namespace": "ns", "generation": 3}, "spec": {**base, **spec}}


def system_status(*args: Any) -> tuple[dict[str, Any], list[str]]:
    """The status as the controller writes it (its merge patch), and the problems."""
    status, problems = typed_status(*args)
    return status.patch(), problems


def request_status(*args: Any) -> dict[str, Any]:
    """A request's status as the controller writes it (its merge patch)."""
    return typed_request_status(*args).patch()


def typed(status: dict[str, Any]) -> ManagedSystemStatus:
    return ManagedSystemStatus.model_validate(status)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_a_healthy_system_is_ready_with_its_next_window() -> None:
    status, problems = system_status(body(), SystemFacts(snapshot_class="std"), NOW)
    assert problems == []
    assert status["observedGeneration"] == 3
    assert status["nextWindow"]["start"] == "2027-02-14T23:00:00Z"
    assert conditions(status)["Ready"] == ("True", "Reconciled")
    assert conditions(status)["Stalled"] == ("False", "Reconciled")
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])


@pytest.mark.parametrize(
    ("spec", "facts", "reason", "words"),
    [
        (
            {"maintenance": {"timeZone": "Mars/Olympus"}},
            SystemFacts(snapshot_class="std"),
            "InvalidSpec",
            "spec.maintenance.timeZone",
        ),
        (
            {"maintenance": {"windows": [{"name": "w", "cron": "every day", "duration": "1h"}]}},
            SystemFacts(snapshot_class="std"),
            "InvalidSpec",
            "spec.maintenance.windows[0].cron",
        ),
        (
            {},
            SystemFacts(missing_workloads=["Deployment app"], snapshot_class="std"),
            "WorkloadNotFound",
            "Deployment app",
        ),
        ({}, SystemFacts(snapshot_class=None), "SnapshotClassNotFound", "no VolumeSnapshotClass"),
        (
            {"updates": {}},
            SystemFacts(snapshot_class="std"),
            "NoUpdateTemplate",
            "spec.updates.template",
        ),
        ({}, SystemFacts(missing_claims=["data"], snapshot_class="std"), "ClaimNotFound", "data"),
    ],
)
def test_unusable_specs_stall_with_a_readable_message(
    spec: dict[str, Any], facts: SystemFacts, reason: str, words: str
) -> None:
    status, problems = system_status(body(**spec), facts, NOW)
    assert problems
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", reason)
    assert words in stalled["message"]
    assert conditions(status)["Ready"][0] == "False"


def test_condition_transition_time_moves_only_on_change() -> None:
    first, _ = system_status(body(), SystemFacts(snapshot_class="std"), NOW)
    later = datetime(2027, 2, 10, 13, 0, tzinfo=UTC)
    again, _ = system_status({**body(), "status": first}, SystemFacts(snapshot_class="std"), later)
    assert [c["lastTransitionTime"] for c in again["conditions"]] == [
        c["lastTransitionTime"] for c in first["conditions"]
    ]
    stalled, _ = system_status(
        {**body(), "status": first},
        SystemFacts(missing_workloads=["Deployment app"], snapshot_class="std"),
        later,
    )
    assert (
        next(c for c in stalled["conditions"] if c["type"] == "Stalled")["lastTransitionTime"]
        == "2027-02-10T13:00:00Z"
    )


def test_requests_are_scheduled_or_rejected() -> None:
    req = {
        "metadata": {"name": "r", "generation": 1},
        "spec": {"systemRef": {"name": "s"}, "ticket": "T"},
    }
    accepted = request_status(req, body(), [], NOW)
    assert accepted["state"] == "Accepted"
    assert accepted["scheduledWindow"]["start"] == "2027-02-14T23:00:00Z"
    missing = request_status(req, None, [], NOW)
    assert missing["state"] == "Rejected" and "'s'" in missing["message"]
    iaas = request_status(req, body(serviceModel="IaaS"), [], NOW)
    assert iaas["state"] == "Rejected" and "IaaS" in iaas["message"]
    served = request_status(
        {**req, "status": {"state": "Completed", "message": "done"}}, None, [], NOW
    )
    assert served == {"state": "Completed", "message": "done"}


def summary(
    name: str, phase: str, completed: str | None = None, window: str = "2027-02-07T23:00:00Z"
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "message": f"{phase.lower()} it is"}
    if completed:
        status["completionTime"] = completed
    end = utc_text(parse_time(window) + timedelta(hours=4))
    spec = {"window": {"name": "w", "start": window, "end": end}}
    return {"metadata": {"namespace": "ns", "name": name}, "spec": spec, "status": status}


ACCEPTED = {
    "type": "Accepted",
    "status": "True",
    "reason": "Accepted",
    "lastTransitionTime": "2027-02-01T00:00:00Z",
}
REQUEST = {
    "metadata": {"name": "r", "generation": 1},
    "spec": {"systemRef": {"name": "s"}, "ticket": "T"},
    "status": {"state": "Accepted", "conditions": [ACCEPTED]},
}


def test_a_request_follows_the_run_that_serves_it() -> None:
    created = request_status(REQUEST, body(), [summary("s-1", "Pending")], NOW)
    assert (created["state"], created["message"]) == ("Running", "update run s-1 created")
    running = request_status(REQUEST, body(), [summary("s-1", "Updating")], NOW)
    assert running["message"] == "update run s-1 started" and running["runRef"] == {"name": "s-1"}
    assert running["conditions"] == [ACCEPTED], "the decision stays as it was"
    for phase in ("Succeeded", "Failed"):
        done = request_status(REQUEST, body(), [summary("s-1", phase, "2027-02-08T01:00:00Z")], NOW)
        assert (done["state"], done["attempts"]) == (phase, 1)
        assert done["message"] == f"update run s-1: {phase}: {phase.lower()} it is"


def test_a_request_whose_run_rolled_back_is_retried_in_a_later_window_then_ends() -> None:
    first = summary("s-1", "RolledBack", "2027-02-08T01:00:00Z")
    retry = request_status(REQUEST, body(), [first], NOW)
    assert retry["state"] == "Accepted" and retry["attempts"] == 1
    assert retry["scheduledWindow"]["start"] == "2027-02-14T23:00:00Z", "after the failed one"
    assert retry["message"] == (
        "update run s-1 rolled back; retry 1 of 1: scheduled for window w at 2027-02-14T23:00:00Z"
    )
    assert retry["runRef"] == {"name": "s-1"}
    again = summary("s-2", "RolledBack", "2027-02-15T01:00:00Z", window="2027-02-14T23:00:00Z")
    final = request_status(REQUEST, body(), [first, again], NOW)
    assert (final["state"], final["attempts"], final["runRef"]) == (
        "RolledBack",
        2,
        {"name": "s-2"},
    )
    never = {**REQUEST, "spec": {**REQUEST["spec"], "retries": 0}}
    assert request_status(never, body(), [first], NOW)["state"] == "RolledBack"


def test_last_run_is_the_newest_ended_run_and_survives_its_runs_deletion() -> None:
    runs = [
        summary("s-1", "Succeeded", "2027-01-01T02:00:00Z"),
        summary("s-2", "RolledBack", "2027-01-08T02:00:00Z"),
        summary("s-3", "Updating"),
    ]
    derived = last_run({}, runs)
    assert derived == {
        "lastRun": {
            "name": "s-2",
            "result": "RolledBack",
            "completionTime": "2027-01-08T02:00:00Z",
            "message": "rolledback it is",
        },
        "lastSuccessfulUpdate": "2027-01-01T02:00:00Z",
    }
    assert last_run(derived, []) == derived, "history pruned: what was recorded stays"
    assert last_run(derived, runs[:1]) == derived, "an older run does not go back in time"
    facts = SystemFacts(runs=runs)
    status, _ = system_status(body(), facts, NOW)
    assert status["lastRun"]["name"] == "s-2"
    assert conditions(status)["LastUpdateSucceeded"] == ("False", "RolledBack")
    last = next(x for x in status["conditions"] if x["type"] == "LastUpdateSucceeded")
    assert last["message"] == (
        "update run s-2 ended RolledBack at 2027-01-08T02:00:00Z: rolledback it is"
    ), "why it ended so, on the system"
    succeeded = summary("s-4", "Succeeded", "2027-01-15T02:00:00Z")
    status, _ = system_status(body(), SystemFacts(runs=[*runs, succeeded]), NOW)
    assert conditions(status)["LastUpdateSucceeded"] == ("True", "Succeeded")
    fresh, _ = system_status(body(), SystemFacts(), NOW)
    assert "LastUpdateSucceeded" not in conditions(fresh), "no run ended yet: no claim either way"
    cancelled = summary("s-5", "Cancelled", "2027-01-16T02:00:00Z")
    status, _ = system_status(body(), SystemFacts(runs=[*runs, succeeded, cancelled]), NOW)
    assert status["lastRun"]["result"] == "Cancelled"
    assert conditions(status)["LastUpdateSucceeded"] == ("False", "Cancelled")


def test_a_request_whose_run_was_cancelled_fails() -> None:
    run = summary("s-1", "Cancelled", "2027-02-08T01:00:00Z")
    done = request_status(REQUEST, body(), [run], NOW)
    assert (done["state"], done["message"]) == (
        "Failed",
        "update run s-1: Cancelled: cancelled it is",
    )


def test_a_window_longer_than_its_period_stalls() -> None:
    spec = {"maintenance": {"windows": [{"name": "daily", "cron": "0 1 * * *", "duration": "25h"}]}}
    status, problems = system_status(body(**spec), SystemFacts(snapshot_class="std"), NOW)
    assert conditions(status)["Stalled"] == ("True", "WindowLongerThanPeriod")
    assert "daily" in problems[0]


def test_a_freeze_over_every_window_stalls() -> None:
    spec = {
        "maintenance": {
            "windows": [{"name": "w", "cron": "0 23 * * 0", "duration": "4h"}],
            "freezes": [
                {"name": "all", "once": "2027-01-01T00:00:00Z", "end": "2031-01-01T00:00:00Z"}
            ],
        }
    }
    status, _ = system_status(body(**spec), SystemFacts(snapshot_class="std"), NOW)
    assert conditions(status)["Stalled"] == ("True", "NoUsableWindow")


def test_an_eligible_system_with_no_window_ahead_says_it_is_never_updated() -> None:
    """Issue 33, 1.4: its only window was a one-off that passed (or it has none): it was
    Ready with no condition, and never updated."""
    for windows in ([{"name": "w", "once": "2020-01-01T00:00:00Z", "duration": "1h"}], []):
        spec = {"maintenance": {"windows": windows}}
        status, problems = system_status(body(**spec), SystemFacts(snapshot_class="std"), NOW)
        assert "nextWindow" not in status
        assert conditions(status)["Scheduled"] == ("False", "NoUsableWindow")
        assert conditions(status)["Ready"] == ("False", "NoUsableWindow")
        assert problems == [
            "no maintenance window lies ahead (none is defined, or each was a one-off that "
            "has passed): the system is never updated"
        ]
    healthy, _ = system_status(body(), SystemFacts(snapshot_class="std"), NOW)
    assert conditions(healthy)["Scheduled"] == ("True", "WindowAhead")
    iaas, problems = system_status(
        body(serviceModel="IaaS", maintenance={"windows": []}), SystemFacts(), NOW
    )
    assert conditions(iaas)["Scheduled"] == ("False", "NotEligible") and problems == []


def test_requeue_at_the_next_window_boundary_and_never_in_a_loop_inside_an_open_one() -> None:
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)

    def at(start: int, cutoff: int = 60, end: int = 120) -> ManagedSystemStatus:
        window = {"start": start, "cutoff": start + cutoff, "end": start + end}
        times = {k: (now + timedelta(minutes=v)).isoformat() for k, v in window.items()}
        return typed({"nextWindow": {"name": "w", **times}})

    facts = SystemFacts()
    assert requeue_after(at(10), facts, now, 3600) == 600
    assert requeue_after(at(120), facts, now, 3600) == 3600, "the safety resync comes first"
    assert requeue_after(at(-5), facts, now, 36000) == 55 * 60, "open: at its cutoff"
    assert requeue_after(at(-70), facts, now, 36000) == 50 * 60, "past its cutoff: at its end"
    assert requeue_after(at(-121), facts, now, 36000) == 36000, "ended (not yet moved on)"
    assert requeue_after(typed({}), facts, now, 60) == 60


def test_the_clock_alone_wakes_a_system_at_approval_deadlines_releases_and_soaks() -> None:
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    later = lambda hours: now + timedelta(hours=hours)  # noqa: E731
    window = {"window": "w", "start": later(27).isoformat(), "approveBy": later(3).isoformat()}
    proposal = typed({"proposal": {**window, "state": "Pending"}})
    assert next_look(proposal, SystemFacts(), now) == later(3)
    approved = typed({"proposal": {**window, "state": "Approved"}})
    assert next_look(approved, SystemFacts(), now) is None, "decided: no deadline any more"
    component = Component.model_validate(
        {
            "name": "pg",
            "version": "15.1",
            "installedBy": "provider",
            "source": "standard-repository",
        }
    )
    states = [State(component, True, changes_at=later(5)), State(component, True)]
    assert next_look(typed({}), SystemFacts(components=states), now) == later(5)
    soaked = SystemFacts(components=states, soaked=[later(4), now - timedelta(hours=1)])
    assert next_look(proposal, soaked, now) == later(3)
    assert next_look(typed({}), soaked, now) == later(4), "a past soak end is no wake-up"


def test_a_failed_rollback_stalls_the_system_until_a_person_acknowledges_it() -> None:
    failed = summary("s-2", "Failed", "2027-01-08T02:00:00Z")
    failed["status"]["needsAttention"] = True
    status, problems = system_status(body(), SystemFacts(runs=[failed], snapshot_class="std"), NOW)
    assert status["lastRun"]["needsAttention"] is True
    assert conditions(status)["Stalled"] == ("True", "RollbackFailed")
    assert conditions(status)["Ready"] == ("False", "RollbackFailed")
    assert problems[0] == (
        "update run s-2 failed and left the workload as a person must check (its rollback "
        "did not complete); no update starts until then: kubectl annotate managedsystem s "
        "patchwarden.io/acknowledged-run=s-2"
    )
    seen = body()
    seen["metadata"]["annotations"] = {"patchwarden.io/acknowledged-run": "s-2"}
    status, problems = system_status(seen, SystemFacts(runs=[failed], snapshot_class="std"), NOW)
    assert problems == [] and conditions(status)["Stalled"][0] == "False"
    assert conditions(status)["LastUpdateSucceeded"] == ("False", "Failed"), "still the truth"
    other = summary("s-3", "Failed", "2027-01-09T02:00:00Z")
    status, problems = system_status(
        seen, SystemFacts(runs=[failed, other], snapshot_class="std"), NOW
    )
    assert problems == [], "a Failed run that changed nothing needs nobody"


def test_a_request_whose_window_had_nothing_to_install_succeeds_without_a_run() -> None:
    system = body()
    system["status"] = {
        "skippedWindow": {"name": "w", "start": "2027-02-14T23:00:00Z", "request": "r"}
    }
    done = request_status(REQUEST, system, [], NOW)
    assert done["state"] == "Succeeded"
    assert done["message"] == (
        "nothing to install: system s was up to date in window w at 2027-02-14T23:00:00Z; "
        "no run was needed"
    )
    other = {**REQUEST, "metadata": {"name": "other", "generation": 1}}
    assert request_status(other, system, [], NOW)["state"] == "Accepted"


def test_a_template_above_the_pod_security_floor_stalls_naming_the_field() -> None:
    from patchwarden.core.podsecurity import Level

    system = body()
    system["spec"]["updates"] = {
        "template": {
            "spec": {
                "hostNetwork": True,
                "containers": [{"name": "u", "image": "x"}],
                "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
            }
        }
    }
    status, _ = system_status(system, SystemFacts(snapshot_class="c"), NOW)
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "PodSecurity"
    assert "spec.updates.template.spec.hostNetwork" in stalled["message"]
    assert "spec.updates.template.spec.volumes[0].hostPath" in stalled["message"]
    relaxed = SystemFacts(snapshot_class="c", pod_security=Level.BASELINE)
    assert system_status(system, relaxed, NOW)[1], "baseline refuses host namespaces too"


def test_a_request_whose_run_the_alert_gate_stopped_is_tried_again_without_using_a_retry() -> None:
    stopped = summary("s-1", "Cancelled", "2027-02-08T01:00:00Z")
    stopped["status"]["gateStopped"] = True
    again = request_status(REQUEST, body(), [stopped], NOW)
    assert again["state"] == "Accepted" and again["runRef"] == {"name": "s-1"}
    assert again["message"] == (
        "update run s-1 was stopped by the alert gate (not counted as a retry): "
        "scheduled for window w at 2027-02-14T23:00:00Z"
    )
    rolled = summary("s-2", "RolledBack", "2027-02-15T01:00:00Z", window="2027-02-14T23:00:00Z")
    retry = request_status(REQUEST, body(), [stopped, rolled], NOW)
    assert retry["state"] == "Accepted" and "retry 1 of 1" in retry["message"]
    unlucky = {**stopped, "status": {**stopped["status"], "gateStopped": False}}
    assert request_status(REQUEST, body(), [unlucky], NOW)["state"] == "Failed"


def test_end_of_life_and_up_to_date_are_judged_by_what_the_contract_installs() -> None:
    """Issue 33, 1.2: PaaS installs security releases only. On 16.3, past its end of life,
    with only a feature release newer on its track, it read EndOfLife=False, UpToDate=True."""
    ended = catalogs(
        _release("16.3", ["security"], endOfLife="2027-01-31"),
        _release("16.5", ["feature"]),
        shop=[_release("1.0.0", ["feature"], image="reg.example/shop:1.0.0")],
    )
    pg = {"name": "postgres", "container": "db", "installedBy": "provider"}
    pg |= {"source": "standard-repository", "layer": "middleware"}
    for model, extra, eol, up in (
        ("PaaS", {"package": "basic"}, ("True", "EndOfLifePassed"), "EndOfLifePassed"),
        ("SaaS", {}, ("False", "Supported"), "UpdatesPending"),
    ):
        b = body(serviceModel=model, components=[pg], **extra)
        spec, _ = parse_system(b["spec"])
        assert spec is not None
        found = states(spec, ended, workload(name="app"), NOW)
        status, _ = system_status(b, SystemFacts(snapshot_class="std", components=found), NOW)
        assert conditions(status)["EndOfLife"] == eol, model
        assert conditions(status)["UpToDate"] == ("False", up), model
        if model == "PaaS":
            eol_message = next(c for c in status["conditions"] if c["type"] == "EndOfLife")
            assert eol_message["message"] == (
                "postgres 16.3 reached its end of life on 2027-01-31 and its track offers no "
                "newer security release the contract installs"
            )
