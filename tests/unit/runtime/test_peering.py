"""kopf's peering rule, as the system workers apply it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from patchwarden.runtime.peering import blocked_by, stale

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def peer(priority: int, seen_ago: float, lifetime: int = 60) -> dict[str, Any]:
    seen = (NOW - timedelta(seconds=seen_ago)).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen}


@pytest.mark.parametrize(
    ("others", "blocked"),
    [
        ({}, []),
        ({"b": peer(5, 1)}, []),  # lower priority: we run
        ({"b": peer(20, 1)}, ["b"]),  # higher: we pause
        ({"b": peer(10, 1)}, ["b"]),  # same: kopf pauses every replica
        ({"b": peer(20, 61)}, []),  # higher but dead
        ({"b": {"priority": "x"}}, []),  # unreadable: ignored
    ],
)
def test_peering_follows_kopfs_rule(others: dict[str, Any], blocked: list[str]) -> None:
    peers = {"me": peer(10, 0), **others}
    assert blocked_by(peers, "me", 10, NOW) == blocked


def test_a_kopf_timestamp_with_z_is_read() -> None:
    assert blocked_by(
        {"b": {"priority": 20, "lifetime": 60, "lastseen": "2026-11-27T11:59:30Z"}}, "me", 1, NOW
    ) == ["b"]


def test_a_copy_in_which_our_own_entry_expired_is_stale_and_decides_nothing() -> None:
    assert not stale({"me": peer(10, 5), "b": peer(20, 90)}, "me", NOW), "b died, we renew"
    assert stale({"me": peer(10, 90), "b": peer(20, 90)}, "me", NOW), "the watch stalled"
    assert not stale({"b": peer(20, 1)}, "me", NOW), "not recorded yet: decide"
    assert not stale({"me": {"priority": 1}}, "me", NOW), "unreadable: decide"
