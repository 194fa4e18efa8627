"""A delay queue of keys with client-go's workqueue semantics, and per-key backoff."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import Callable

Key = tuple[str, str]
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 120.0
"""A failing reconcile is retried after 1 s, 2 s, 4 s … at most 2 min, per key (client-go's
ItemExponentialFailureRateLimiter); one success resets it."""


class DelayQueue:
    """Keys, each due at an instant; client-go's workqueue semantics in small.

    * ``add`` keeps the earlier of two due times: a change moves a key forward,
      a later requeue never delays it;
    * a key handed out by ``get`` is *active* until ``done``; adding it
      meanwhile queues it again once the worker is done (never two at once);
    * a key whose reconcile fails backs off exponentially (:meth:`failed`), each
      key on its own, until it succeeds (:meth:`succeeded`).

    All methods run on the event loop's thread.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Key]] = []
        self._due: dict[Key, float] = {}
        self._active: set[Key] = set()
        self._again: dict[Key, float] = {}
        self._changed = asyncio.Event()
        self._seq = itertools.count()
        self._failures: dict[Key, int] = {}

    def __len__(self) -> int:
        return len(self._due)

    def backlog(self) -> int:
        """Keys due now that no worker has taken yet."""
        now = self._clock()
        return sum(1 for when in self._due.values() if when <= now)

    def add(self, key: Key, delay: float = 0.0) -> None:
        when = self._clock() + max(delay, 0.0)
        if key in self._active:
            self._again[key] = min(when, self._again.get(key, math.inf))
            return
        if self._due.get(key, math.inf) <= when:
            return
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), key))
        self._changed.set()

    def forget(self, key: Key) -> None:
        """Drop the key (its object is gone); a worker holding it finishes undisturbed."""
        self._due.pop(key, None)
        self._again.pop(key, None)
        self._failures.pop(key, None)

    def failed(self, key: Key) -> float:
        """The key's reconcile failed: seconds until its retry (doubling per failure)."""
        count = self._failures.get(key, 0)
        self._failures[key] = count + 1
        return min(BACKOFF_MAX, BACKOFF_FIRST * 2.0**count)

    def succeeded(self, key: Key) -> None:
        self._failures.pop(key, None)

    def due(self) -> Key | None:
        """The next key that is due now, made active; None if none is."""
        while self._heap:
            when, _, key = self._heap[0]
            if self._due.get(key) != when:  # superseded by an earlier add, or forgotten
                heapq.heappop(self._heap)
                continue
            if when > self._clock():
                return None
            heapq.heappop(self._heap)
            del self._due[key]
            self._active.add(key)
            return key
        return None

    async def get(self) -> Key:
        """Wait for the next due key."""
        while True:
            key = self.due()
            if key is not None:
                return key
            wait = self._heap[0][0] - self._clock() if self._heap else None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)

    def done(self, key: Key, delay: float | None) -> None:
        """The worker finished ``key``; look again in ``delay`` seconds (None: only on change)."""
        self._active.discard(key)
        again = self._again.pop(key, None)
        if again is not None:
            self.add(key, again - self._clock())
        if delay is not None:
            self.add(key, delay)
