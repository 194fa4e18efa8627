"""Shared test helpers: waiting with a deadline, never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> T:
    """Call ``probe`` until it returns something truthy, or fail after ``timeout`` seconds.

    The failure message says what was awaited and what ``probe`` saw last.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; last saw {last!r}"
            )
        time.sleep(interval)


def holds_for(
    probe: Callable[[], bool], *, duration: float, what: str, interval: float = 0.2
) -> None:
    """Assert that ``probe`` stays true for ``duration`` seconds (a bounded negative check)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert probe(), f"{what} stopped holding before {duration}s passed"
        time.sleep(interval)
