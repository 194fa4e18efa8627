"""The history limits: the newest ended runs stay, by outcome; a run in progress always."""

from __future__ import annotations

from typing import Any

from patchwarden.core.history import to_prune


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
