"""Reading the objects a run acts on (core/objects.py)."""

from __future__ import annotations

from typing import Any

import pytest

from patchwarden.core import run as m


@pytest.mark.parametrize(
    ("event", "status", "wakes"),
    [
        ("ADDED", {}, False),  # the run just made it
        ("MODIFIED", {"readyToUse": False}, False),
        ("MODIFIED", {"readyToUse": True}, True),
        ("MODIFIED", {"readyToUse": False, "error": {"message": "no space"}}, True),
        ("ADDED", {"readyToUse": True}, True),  # listed again after a broken watch
        ("MODIFIED", {"active": 1, "ready": 1}, False),  # the Job's pod started
        ("MODIFIED", {"conditions": [{"type": "Complete", "status": "True"}]}, True),
        ("MODIFIED", {"conditions": [{"type": "Suspended", "status": "True"}]}, True),
        ("DELETED", {}, True),
    ],
)
def test_only_news_of_a_runs_snapshot_or_job_wakes_the_run(
    event: str, status: dict[str, Any], wakes: bool
) -> None:
    assert m.wakes_its_run(event, {"metadata": {"name": "x"}, "status": status}) is wakes
