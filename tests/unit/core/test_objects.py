"""Reading the objects a run acts on (core/objects.py)."""

from __future__ import annotations

from typing import Any

import pytest

from patchwarden.core import run as m
from patchwarden.core.objects import same_image


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


@pytest.mark.parametrize(
    ("live", "wanted", "same"),
    [
        ("example.com/shop:1.1.0", "example.com/shop:1.1.0", True),
        ("example.com/shop:1.1.0@sha256:" + "a" * 64, "example.com/shop:1.1.0", True),  # pinned
        ("mirror.local/example/shop:1.1.0", "example.com/shop:1.1.0", True),  # a mirror
        ("example.com/shop:1.2.0", "example.com/shop:1.1.0", False),
        ("example.com/other:1.1.0", "example.com/shop:1.1.0", False),
        ("example.com/shop", "example.com/shop:1.1.0", False),
        ("other.com/shop", "example.com/shop", False),  # no tag: the reference must be equal
        (None, "example.com/shop:1.1.0", False),
    ],
)
def test_an_image_rewritten_by_admission_is_still_the_same_image(
    live: str | None, wanted: str, same: bool
) -> None:
    """Issue 35, part 4: a digest a policy engine added, or a mirror's host, is not
    "someone else changed the image"; another tag or name is."""
    assert same_image(live, wanted) is same
