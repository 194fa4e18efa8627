"""The one place that reaches into kopf's private modules: the bodies kopf keeps.

kopf keeps, for each object of a resource with a daemon, the last body it saw, for the
daemons and timers to read; it keeps it also for every object whose daemon never runs (an
ended UpdateRun, a decided UpdateRequest): 7.9 KB a retained run (tracemalloc, issue 17).
kopf offers no setting for that. ``kopf.run(memories=...)`` is public; the container's
class (``ResourceMemories``) and its fields are not. ``tests/unit/test_operator.py`` fails
when the pinned kopf keeps them elsewhere or otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

RELEASE_SECONDS = 30.0
RELEASE_EVENTS = 500
"""kopf's kept bodies are released once RELEASE_EVENTS run or request events came since the
last release (a start listing a year of runs), else at most RELEASE_SECONDS after one."""


def kopf_memories() -> Any | None:
    """kopf's container of what it keeps for each object, made here (and handed to kopf.run)
    so that :func:`release_bodies` can reach it; None if this kopf keeps it elsewhere."""
    try:
        from kopf._core.reactor.inventory import ResourceMemories
    except ImportError:  # pragma: no cover - a kopf that moved it (a unit test pins ours)
        log.warning("kopf's ResourceMemories not found: bodies of ended runs stay in memory")
        return None
    return ResourceMemories()


def release_bodies(memories: Any) -> int:
    """Drop the last body kopf keeps of each object that has no daemon or timer running.

    kopf sets it again from the object's next event, before it spawns a daemon (there is
    no await between the two), and a daemon paused by peering is spawned again only by an
    event. Returns how many."""
    released = 0
    for memory in memories.iter_all_memories():
        kept = memory.daemons_memory
        if kept.live_fresh_body is not None and not kept.running_daemons:
            kept.live_fresh_body = None
            released += 1
    return released


@dataclass
class Kept:
    """Run and request events since kopf's kept bodies were last released."""

    events: int = 0
    since: float = 0.0
    """Seconds since the last release."""

    def seen(self) -> None:
        # From the event loop and from kopf's threads for sync handlers: a lost count
        # only delays a release.
        self.events += 1

    def due(self, elapsed: float) -> bool:
        """Whether to release now, ``elapsed`` seconds after the last look."""
        self.since += elapsed
        if self.events >= RELEASE_EVENTS or (self.events and self.since >= RELEASE_SECONDS):
            self.events, self.since = 0, 0.0
            return True
        return False
