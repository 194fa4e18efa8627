"""The work queue, its workers and the systems' cache, without a cluster."""

from __future__ import annotations

import asyncio
from typing import Any

from patchwarden.runtime.controller import DelayQueue, SystemController, slim


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


A, B = ("ns", "a"), ("ns", "b")


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


def system(name: str, generation: int, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "generation": generation,
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {},
        "status": status or {},
    }


def test_the_cache_queues_new_and_changed_systems_but_not_status_only_changes() -> None:
    async def scenario() -> None:
        c = SystemController(reconcile=lambda body: 60.0, workers=1)
        c.observe(None, system("a", 1))
        assert c.queue.due() == A
        c.queue.done(A, None)
        c.observe("MODIFIED", system("a", 1, {"eligible": True}))  # our own status write
        assert c.queue.due() is None
        assert c.systems[A]["status"] == {"eligible": True}
        assert "managedFields" not in c.systems[A]["metadata"]
        c.observe("MODIFIED", system("a", 2))  # a spec change
        assert c.queue.due() == A
        c.queue.done(A, None)
        c.observe("DELETED", system("a", 2))
        assert A not in c.systems
        c.poke("ns", "a")  # a run of a deleted system ends: nothing to do
        assert c.queue.due() is None

    asyncio.run(scenario())


def test_workers_reconcile_only_while_active_and_requeue_with_the_returned_delay() -> None:
    seen: list[str] = []

    def reconcile(body: dict[str, Any]) -> float:
        seen.append(body["metadata"]["name"])
        return 3600.0

    async def scenario() -> None:
        c = SystemController(reconcile=reconcile, workers=2)
        workers = [asyncio.ensure_future(c.work()) for _ in range(c.workers)]
        c.observe(None, system("a", 1))
        c.observe(None, system("b", 1))
        await asyncio.sleep(0.1)
        assert seen == [], "paused: another replica holds the peering"
        c.set_active(True, "test")
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.02)
        assert sorted(seen) == ["a", "b"]
        assert c.queue.backlog() == 0 and len(c.queue) == 2, "both requeued an hour ahead"
        for w in workers:
            w.cancel()

    asyncio.run(scenario())


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


def test_a_worker_retries_a_failing_reconcile_later_each_time() -> None:
    calls: list[float] = []

    def reconcile(body: dict[str, Any]) -> float:
        calls.append(body["metadata"]["generation"])
        raise RuntimeError("the API said no")

    async def scenario() -> list[float]:
        clock = Clock()
        c = SystemController(reconcile=reconcile, workers=1, queue=DelayQueue(clock))
        c.set_active(True, "test")
        worker = asyncio.ensure_future(c.work())
        c.observe(None, system("a", 1))
        due: list[float] = []
        for _ in range(3):
            for _ in range(100):
                if len(calls) > len(due):
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.01)
            due.append(c.queue._due[A] - clock.now)
            clock.now = c.queue._due[A]
            c.queue._changed.set()
        worker.cancel()
        return due

    assert asyncio.run(scenario()) == [1.0, 2.0, 4.0]


def test_slim_leaves_the_original_alone() -> None:
    body = system("a", 1)
    assert "managedFields" not in slim(body)["metadata"]
    assert "managedFields" in body["metadata"]
