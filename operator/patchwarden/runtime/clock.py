"""The operator's one clock: wall time for what it decides, monotonic time for intervals.

The runtime object (``app.py``) makes one and hands it to everything that reads the time
(the controllers, the fleet's window population, the alert gate, the work queue, the
notifier, the peering check); the pure core never reads a clock, it is given ``now``.
Tests hand a clock they set."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime


def _wall() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Clock:
    now: Callable[[], datetime] = field(default=_wall)
    """The wall time (aware, UTC)."""
    monotonic: Callable[[], float] = field(default=time.monotonic)
    """Seconds that only go forward (intervals, timeouts, caches' ages)."""
