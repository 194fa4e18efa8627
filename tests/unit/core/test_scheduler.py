"""Scheduling decisions and fleet limits (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from patchwarden.api import ManagedSystemSpec, Trigger
from patchwarden.core.policy import assess
from patchwarden.core.scheduler import Limit, Limits, decide_start, halted, within_limits

NOW = datetime(2027, 2, 10, 12, 0, tzinfo=UTC)


def spec(model: str = "SaaS", package: str | None = None, **maintenance: Any) -> ManagedSystemSpec:
    data: dict[str, Any] = {
        "customer": "acme",
        "serviceModel": model,
        "workload": {"kind": "Deployment", "name": "app"},
        "updates": {"expectedDuration": "30m"},
        "maintenance": maintenance
        or {"windows": [{"name": "w", "once": "2027-02-10T11:00:00Z", "duration": "2h"}]},
    }
    if package:
        data["package"] = package
    return ManagedSystemSpec.model_validate(data)


def decide(
    s: ManagedSystemSpec,
    requests: list[dict[str, Any]] = (),
    runs: list[dict[str, Any]] = (),
    now: datetime = NOW,
) -> Any:  # type: ignore[assignment]
    return decide_start("app", s, assess(s), now, list(requests), list(runs))


def run(
    name: str,
    phase: str,
    window_start: str = "2027-02-10T11:00:00Z",
    customer: str = "acme",
    window_end: str | None = None,
) -> dict[str, Any]:
    window = {"start": window_start, **({"end": window_end} if window_end else {})}
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"customer": customer, "window": window},
        "status": {"phase": phase},
    }


def request(state: str = "Accepted", not_before: str | None = None) -> dict[str, Any]:
    spec_: dict[str, Any] = {
        "systemRef": {"name": "app"},
        "ticket": "HD-1",
        "classes": ["security"],
    }
    if not_before:
        spec_["notBefore"] = not_before
    return {
        "metadata": {"name": "r", "creationTimestamp": "2027-02-01T00:00:00Z"},
        "spec": spec_,
        "status": {"state": state},
    }


def test_saas_starts_in_an_open_window_with_a_name_per_window() -> None:
    start = decide(spec())
    assert start.trigger == Trigger.SCHEDULE and start.run == "app-202702101100"


def test_nothing_starts_outside_a_window_or_after_the_cutoff() -> None:
    assert decide(spec(), now=NOW - timedelta(hours=2)) is None
    assert decide(spec(), now=NOW + timedelta(minutes=31)) is None


def test_the_cutoff_keeps_the_expected_duration_and_the_rollback_reserve_free() -> None:
    """Window 11:00-13:00, 30 minutes expected and 15 reserved for a rollback: cutoff 12:15."""
    assert decide(spec(), now=NOW + timedelta(minutes=15)) is not None
    assert decide(spec(), now=NOW + timedelta(minutes=16)) is None
    short = spec().model_copy(
        update={"rollback": spec().rollback.model_copy(update={"reserve": "5m"})}
    )
    assert decide(short, now=NOW + timedelta(minutes=25)) is not None
    off = spec().model_copy(
        update={"rollback": spec().rollback.model_copy(update={"enabled": False})}
    )
    assert decide(off, now=NOW + timedelta(minutes=30)) is not None, "no rollback, no reserve"
    assert decide(off, now=NOW + timedelta(minutes=31)) is None


def test_a_window_whose_run_was_deleted_gets_no_second_run() -> None:
    """The run is gone (deleted by hand), but the system's lastRun still names it."""
    assert decide(spec()) is not None
    s = spec()
    assert decide_start("app", s, assess(s), NOW, [], [], "app-202702101100") is None
    assert decide_start("app", s, assess(s), NOW, [], [], "app-202702031100") is not None


def test_one_run_per_window_and_one_at_a_time() -> None:
    assert decide(spec(), runs=[run("app-202702101100", "Failed")]) is None
    assert (
        decide(spec(), runs=[run("app-202702030000", "Updating", "2027-02-03T00:00:00Z")]) is None
    )


def test_basic_needs_an_accepted_request_that_is_due() -> None:
    s = spec("PaaS", "basic")
    assert decide(s) is None
    assert decide(s, [request("Rejected")]) is None
    assert decide(s, [request(not_before="2027-02-10T13:00:00Z")]) is None
    start = decide(s, [request()])
    assert start.trigger == Trigger.REQUEST and start.ticket == "HD-1" and start.request == "r"


def test_advanced_cadence_is_served_once_per_quarter_unless_the_run_failed() -> None:
    s = spec("PaaS", "advanced")
    assert decide(s).trigger == Trigger.CADENCE
    served = run("app-202701050000", "Succeeded", "2027-01-05T00:00:00Z")
    assert decide(s, runs=[served]) is None
    failed = run("app-202701050000", "RolledBack", "2027-01-05T00:00:00Z")
    assert decide(s, runs=[failed]).trigger == Trigger.CADENCE
    cancelled = run("app-202701050000", "Cancelled", "2027-01-05T00:00:00Z")
    assert decide(s, runs=[cancelled]).trigger == Trigger.CADENCE, "a cancelled run served nothing"
    last_quarter = run("app-202612050000", "Succeeded", "2026-12-05T00:00:00Z")
    assert decide(s, runs=[last_quarter]).trigger == Trigger.CADENCE


def test_iaas_and_admin_access_never_start() -> None:
    assert decide(spec("IaaS"), [request()]) is None
    admin = ManagedSystemSpec.model_validate(
        {**spec().model_dump(by_alias=True), "customerAdminAccess": True}
    )
    assert decide(admin, [request()]) is None


def test_a_freeze_vetoes_the_open_window() -> None:
    s = spec(
        windows=[{"name": "w", "once": "2027-02-10T11:00:00Z", "duration": "2h"}],
        freezes=[{"name": "f", "once": "2027-02-10T12:30:00Z", "end": "2027-02-11T00:00:00Z"}],
    )
    assert decide(s) is None


LIMITS = Limits(max_concurrent=2, per_customer=1, max_errors=2)


@pytest.mark.parametrize(
    ("runs", "blocked"),
    [
        ([], None),
        (
            [run("a", "Updating", customer="x"), run("b", "Snapshotting", customer="y")],
            "fleet-wide limit",
        ),
        ([run("a", "Updating")], "runs of customer acme"),
        (
            [run("a", "Failed", customer="x"), run("b", "RolledBack", customer="y")],
            "no more runs start",
        ),
        (
            [
                run("a", "Failed", "2027-01-01T00:00:00Z"),
                run("b", "Failed", "2027-01-01T00:00:00Z"),
            ],
            None,
        ),
    ],
)
def test_fleet_limits(runs: list[dict[str, Any]], blocked: str | None) -> None:
    got = within_limits("acme", ("2027-02-10T11:00:00Z", "2027-02-10T14:00:00Z"), runs, LIMITS)
    assert (got is None) if blocked is None else (got is not None and blocked in got)


def test_the_error_budget_is_the_nights_not_the_minutes() -> None:
    """Windows a minute apart (or otherwise overlapping) share one MaxErrors budget; last
    week's failures, or a window that ended before this one opened, do not count."""
    night = ("2027-02-10T23:01:00Z", "2027-02-11T03:01:00Z")
    failed = [
        run("a", "Failed", "2027-02-10T23:00:00Z", window_end="2027-02-11T03:00:00Z"),
        run("b", "RolledBack", "2027-02-10T23:30:00Z", window_end="2027-02-11T01:00:00Z"),
    ]
    got = within_limits("acme", night, failed, LIMITS)
    assert got is not None and "2 runs failed in windows overlapping the one from" in got
    earlier = [
        run("a", "Failed", "2027-02-03T23:00:00Z", window_end="2027-02-04T03:00:00Z"),
        run("b", "Failed", "2027-02-10T19:00:00Z", window_end="2027-02-10T23:01:00Z"),
        run("c", "Cancelled", "2027-02-10T23:00:00Z", window_end="2027-02-11T03:00:00Z"),
    ]
    assert within_limits("acme", night, earlier, LIMITS) is None


def test_limits_may_be_percentages_of_the_systems_in_the_window() -> None:
    """As AWS SSM's MaxConcurrency/MaxErrors: 10 % of 37 systems is 4 (rounded up), 25 % of
    one customer's 6 systems is 2, never below 1."""
    night = ("2027-02-10T23:00:00Z", "2027-02-11T03:00:00Z")
    limits = Limits("10%", "25%", "5%")
    population = {"acme": 6, "globex": 31}
    active = [run(c, "Updating", customer=c) for c in ("x1", "x2", "x3")]
    assert within_limits("globex", night, active, limits, population) is None, "3 of 4"
    four = [*active, run("x4", "Updating", customer="x4")]
    got = within_limits("globex", night, four, limits, population)
    assert got == "4 runs in progress, the fleet-wide limit is 10% of 37 systems in this window"
    acme = [run("a1", "Updating"), run("a2", "Snapshotting")]
    got = within_limits("acme", night, acme, limits, population)
    assert got == (
        "2 runs of customer acme in progress, the limit is 25% of 6 customer acme's systems in it"
    )
    failed = [run("f1", "Failed", "2027-02-10T23:00:00Z", window_end="2027-02-11T03:00:00Z")]
    got = halted(night, failed * 2, limits, population)
    assert got is not None and "(limit 5% of 37 systems in this window)" in got
    assert halted(night, failed, limits, population) is None, "5% of 37 is 2"
    assert within_limits("new", night, [], limits, {}) is None, "no population: at least 1"


@pytest.mark.parametrize(
    ("text", "limit", "of_37"),
    [
        ("3", Limit(3), 3),
        (3, Limit(3), 3),
        ("10%", Limit(10, True), 4),
        ("100%", Limit(100, True), 37),
    ],
)
def test_a_limit_is_a_number_or_a_percentage(text: object, limit: Limit, of_37: int) -> None:
    assert Limit.parse(text) == limit and limit.of(37) == of_37 and Limit.parse(str(limit)) == limit


@pytest.mark.parametrize("text", ["0", "0%", "101%", "-1", "1.5", "ten", True, ""])
def test_a_bad_limit_says_what_is_allowed(text: object) -> None:
    with pytest.raises(ValueError, match=r"whole number|at least 1"):
        Limit.parse(text)
