"""kopf's peering rule, as the system workers apply it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

import pytest

from patchwarden.core.settings import Settings
from patchwarden.runtime import metrics
from patchwarden.runtime.peering import (
    FENCE_SECONDS,
    REJOIN_SECONDS,
    blocked_by,
    decide,
    fence_in,
    fenced,
    watch,
)

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


def test_a_replica_whose_own_entry_is_not_renewed_stops_acting_before_it_expires() -> None:
    """kopf renews an entry 5 to 10 s before it expires; a standby takes over at the
    expiry. A replica that has not seen its own renewal stops FENCE_SECONDS before that."""
    renewed = {"me": peer(10, 50), "b": peer(5, 1)}  # kopf renews at 50 to 55 s of 60
    assert decide(renewed, "me", 10, NOW) == (True, "this replica holds the peering", False)
    assert fence_in(renewed, "me", NOW) == pytest.approx(7.0), "the check is due then, not later"
    late = {"me": peer(10, 60 - FENCE_SECONDS + 0.5), "b": peer(5, 1)}
    active, why, fenced_now = decide(late, "me", 10, NOW)
    assert (active, fenced_now) == (False, True)
    assert "not renewed for 58s" in why and "before a standby may take over" in why
    assert fenced(late, "me", NOW) == pytest.approx(57.5)
    # The standby (b, lower priority) still sees "me" alive: it starts only at the expiry.
    assert blocked_by(late, "b", 5, NOW) == ["me"]
    assert fenced({"b": peer(20, 1)}, "me", NOW) is None, "not recorded yet: may act"
    assert fenced({"me": {"priority": 1}}, "me", NOW) is None, "unreadable: kopf's rule"
    outranked = decide({"me": peer(10, 1), "b": peer(20, 1)}, "me", 10, NOW)
    assert outranked == (False, "peers b outrank this replica", False)


def test_after_a_fence_the_replica_acts_again_only_once_its_renewal_was_seen_a_while() -> None:
    """Reconnected, a replica waits REJOIN_SECONDS after its renewal is seen, so that a
    standby which took over sees it back and pauses before it acts."""
    clock = {"now": NOW}
    decisions: list[tuple[bool, str]] = []
    settings = Settings(identity="me", priority=10, peering_name="p")

    async def scenario() -> None:
        with (
            patch("patchwarden.runtime.peering.Reflector") as reflector,
            patch("patchwarden.runtime.peering.lister"),
            patch("patchwarden.runtime.peering.POLL_SECONDS", 0.001),
        ):
            reflector.return_value.synced.is_set.return_value = True
            task = asyncio.ensure_future(
                watch(None, settings, lambda *d: decisions.append(d), lambda: clock["now"])  # type: ignore[arg-type]
            )
            await asyncio.sleep(0.01)
            deliver = reflector.call_args.args[2]  # Reflector(lister, name, deliver)

            async def at(seconds: float, renewed: float) -> tuple[bool, str]:
                """The decision at NOW + ``seconds``, our entry renewed at NOW + ``renewed``."""
                clock["now"] = NOW + timedelta(seconds=seconds)
                mine = {**peer(10, 0), "lastseen": (NOW + timedelta(seconds=renewed)).isoformat()}
                deliver([("MODIFIED", {"metadata": {"name": "p"}, "status": {"me": mine}})])
                await asyncio.sleep(0.02)
                return decisions[-1]

            def replica() -> str:
                """The state the metric says (patchwarden_replica_state)."""
                [found] = [
                    x
                    for x in metrics.REPLICA_STATES
                    if metrics.REGISTRY.get_sample_value("patchwarden_replica_state", {"state": x})
                ]
                return found

            try:
                assert (await at(0, 0))[0] is True and replica() == "acting"
                assert (await at(58, 0))[0] is False, "fenced"
                assert replica() == "fenced"
                assert await at(60, 60) == (
                    False,
                    "renewed after a fence: a standby that took over pauses first",
                )
                assert replica() == "rejoining"
                assert (await at(60 + REJOIN_SECONDS + 0.1, 60))[0] is True
                assert replica() == "acting"
            finally:
                task.cancel()

    asyncio.run(scenario())
