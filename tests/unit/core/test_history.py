"""The history limits: the newest ended runs stay, by outcome; a run in progress always. And
the snapshots' retention."""

from __future__ import annotations

from typing import Any

from patchwarden.core.history import prunable, to_prune


def run(name: str, phase: str, day: int | None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if day is not None:
        status["completionTime"] = f"2027-01-{day:02d}T02:00:00Z"
    return {"metadata": {"name": name}, "status": status}


def test_the_newest_successes_and_failures_stay_and_a_year_does_not_pile_up() -> None:
    runs = [
        run("s1", "Succeeded", 1),
        run("f2", "RolledBack", 2),
        run("s3", "Succeeded", 3),
        run("f4", "Failed", 4),
        run("s5", "Succeeded", 5),
        run("s6", "Succeeded", 6),
        run("active", "Updating", None),
    ]
    assert to_prune(runs, successful=2, failed=1) == ["s3", "f2", "s1"]
    assert to_prune(runs, successful=3, failed=10) == ["s1"]
    assert to_prune(runs, successful=0, failed=0) == ["s6", "s5", "f4", "s3", "f2", "s1"]
    year = [run(f"w{week}", "Succeeded", 1 + week % 28) for week in range(52)]
    assert len(year) - len(to_prune(year, successful=3, failed=10)) == 3


def test_prune_keeps_the_newest_runs_and_always_this_one_and_failed_states_for_a_while() -> None:
    def snap(name: str, run: str, created: str, failed: bool = False) -> dict[str, Any]:
        labels = {"patchwarden.io/run": run}
        if failed:
            labels["patchwarden.io/state"] = "failed"
        return {"metadata": {"name": name, "labels": labels, "creationTimestamp": created}}

    snaps = [
        snap("a1", "a", "2027-01-01T00:00:00Z"),
        snap("a1-failed", "a", "2027-01-01T01:00:00Z", failed=True),
        snap("b1", "b", "2027-01-08T00:00:00Z"),
        snap("b1-failed", "b", "2027-01-08T01:00:00Z", failed=True),
        snap("c1", "c", "2027-01-15T00:00:00Z"),
        snap("c2", "c", "2027-01-15T00:00:01Z"),
    ]
    week = "2027-01-05T00:00:00Z"
    assert prunable(snaps, "c", retain=2, failed_state_before=week) == ["a1", "a1-failed"]
    assert prunable(snaps, "a", retain=1, failed_state_before=week) == ["b1", "a1-failed"]
    never = "2000-01-01T00:00:00Z"
    assert prunable(snaps, "c", retain=1, failed_state_before=never) == ["b1", "a1"], (
        "retain never takes a failed-state snapshot"
    )
