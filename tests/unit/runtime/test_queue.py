"""The delay queue: due order, one key once, active keys, per-key backoff."""

from __future__ import annotations

import asyncio
from typing import Any

from patchwarden.runtime.queue import DelayQueue
from tests.unit.runtime.clock import A, B, Clock


def test_a_key_is_queued_once_and_the_earlier_due_time_wins() -> None:
    clock = Clock()
    q = DelayQueue(clock)
    q.add(A, 60)
    q.add(A, 5)
    q.add(A, 30)
    assert len(q) == 1
    assert q.due() is None
    clock.now += 5
    assert q.due() == A
    assert q.due() is None, "the superseded entry at 60 s is dropped, not handed out again"
    clock.now += 100
    assert q.due() is None


def test_keys_come_out_in_due_order() -> None:
    clock = Clock()
    q = DelayQueue(clock)
    q.add(A, 2)
    q.add(B, 1)
    clock.now += 3
    assert [q.due(), q.due(), q.due()] == [B, A, None]


def test_a_key_added_while_a_worker_holds_it_comes_back_after_done() -> None:
    clock = Clock()
    q = DelayQueue(clock)
    q.add(A)
    assert q.due() == A
    q.add(A)  # a change arrives mid-reconcile
    assert q.due() is None, "never handed to a second worker while the first holds it"
    q.done(A, 60)
    assert q.due() == A, "the change made while it was held is due at once"


def test_done_requeues_after_the_delay_and_none_means_only_on_change() -> None:
    clock = Clock()
    q = DelayQueue(clock)
    q.add(A)
    q.add(B)
    a, b = q.due(), q.due()
    q.done(a, 10)  # type: ignore[arg-type]
    q.done(b, None)  # type: ignore[arg-type]
    clock.now += 10
    assert q.due() == A
    assert q.due() is None
    assert q.backlog() == 0


def test_forget_drops_a_key() -> None:
    clock = Clock()
    q = DelayQueue(clock)
    q.add(A)
    q.add(B)
    q.forget(A)
    assert [q.due(), q.due()] == [B, None]


def test_get_waits_for_the_first_due_key() -> None:
    async def scenario() -> tuple[Any, float]:
        q = DelayQueue()
        loop = asyncio.get_running_loop()
        started = loop.time()
        q.add(A, 0.2)
        key = await asyncio.wait_for(q.get(), 5)
        return key, loop.time() - started

    key, waited = asyncio.run(scenario())
    assert key == A
    assert waited >= 0.15


def test_get_wakes_when_an_earlier_key_is_added() -> None:
    async def scenario() -> Any:
        q = DelayQueue()
        q.add(A, 60)
        getter = asyncio.ensure_future(q.get())
        await asyncio.sleep(0.05)
        q.add(B)
        return await asyncio.wait_for(getter, 5)

    assert asyncio.run(scenario()) == B


def test_a_failing_key_backs_off_exponentially_on_its_own_and_a_success_resets_it() -> None:
    q = DelayQueue(Clock())
    assert [q.failed(A) for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert q.failed(B) == 1.0, "each key counts its own failures"
    for _ in range(20):
        q.failed(A)
    assert q.failed(A) == 120.0, "capped"
    q.succeeded(A)
    assert q.failed(A) == 1.0
    q.forget(B)
    assert q.failed(B) == 1.0, "a forgotten key starts over"
