"""A clock the queue tests set by hand, and two keys."""

from __future__ import annotations


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


A, B = ("ns", "a"), ("ns", "b")
