"""The system controller's queue, peering rule and cache, without a cluster."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from patchwarden.app import App
from patchwarden.controller import DelayQueue, SystemController, blocked_by, slim
from patchwarden.kube import resource_of
from patchwarden.settings import Settings


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


def test_slim_leaves_the_original_alone() -> None:
    body = system("a", 1)
    assert "managedFields" not in slim(body)["metadata"]
    assert "managedFields" in body["metadata"]


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/apis/patchwarden.io/v1alpha1/namespaces/n/managedsystems/s/status", "managedsystems"),
        ("/apis/apps/v1/namespaces/n/deployments/web", "deployments"),
        ("/api/v1/namespaces/n/persistentvolumeclaims/data", "persistentvolumeclaims"),
        ("/api/v1/namespaces/n/pods?labelSelector=app%3Dweb", "pods"),
        ("/apis/kopf.dev/v1/clusterkopfpeerings/patchwarden", "clusterkopfpeerings"),
        ("/api/v1/namespaces/n", "namespaces"),
    ],
)
def test_the_request_counter_names_the_resource(path: str, resource: str) -> None:
    assert resource_of(path) == resource


def run(name: str, customer: str, phase: str | None) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name},
        "spec": {"customer": customer, "window": {"start": "2026-11-29T22:00:00Z"}},
        "status": {"phase": phase} if phase else {},
    }


def test_a_freed_slot_wakes_the_oldest_waiters_that_fit() -> None:
    app = App(
        settings=Settings(max_concurrent_runs=2, max_runs_per_customer=1),
        kube=None,  # type: ignore[arg-type]  # waiters_to_wake makes no API call
        emit=lambda *_: None,
    )
    assert not app.observe_run(run("r1", "acme", "Updating"))
    assert not app.observe_run(run("r2", "globex", "Snapshotting"))
    start = "2026-11-29T22:00:00Z"
    for name, customer in [("w1", "acme"), ("w2", "acme"), ("w3", "initech"), ("w4", "umbrella")]:
        app.waiting[("ns", name)] = (customer, start)
    assert app.waiters_to_wake() == [], "no free slot"
    assert app.observe_run(run("r1", "acme", "Succeeded")), "an active run ended: a slot freed"
    # One slot: w1 (acme, whose run just ended) is the oldest and fits.
    assert app.waiters_to_wake() == [("ns", "w1")]
    assert app.forget_run("ns", "r2"), "a deleted active run frees its slot too"
    # Two slots: w1 takes one; w2 would be acme's second run at once; w3 fits.
    assert app.waiters_to_wake() == [("ns", "w1"), ("ns", "w3")]
    app.stop_waiting("ns", "w1")
    assert app.waiters_to_wake() == [("ns", "w2"), ("ns", "w3")]
    assert not app.observe_run(run("r1", "acme", "Succeeded")), "already ended: nothing freed"


def test_only_kopfs_per_watch_event_success_line_is_dropped() -> None:
    from patchwarden.handlers import _quiet_watch_handlers

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.INFO, "", 0, message, None, None)

    assert not _quiet_watch_handlers(record("Handler 'system_event' succeeded."))
    assert _quiet_watch_handlers(record("Handler 'request_changed' succeeded."))
    assert _quiet_watch_handlers(record("Handler 'system_event' failed with an exception."))


def test_one_list_per_namespace_answers_yes_and_a_no_is_confirmed_by_a_get() -> None:
    asked: list[str] = []

    class Kube:
        def names(self, kind: str, ns: str) -> list[str]:
            asked.append(f"list {kind} {ns}")
            return ["web", "db"] if kind == "Deployment" else ["data"]

        def get_workload(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
            asked.append(f"get {name}")
            return {"kind": kind} if name == "newer-than-the-list" else None

        def get_claim(self, ns: str, name: str) -> dict[str, Any] | None:
            asked.append(f"get {name}")
            return None

    app = App(settings=Settings(), kube=Kube(), emit=lambda *_: None)  # type: ignore[arg-type]
    assert app._exists("Deployment", "ns", "web")
    assert app._exists("Deployment", "ns", "db")
    assert app._exists("PersistentVolumeClaim", "ns", "data")
    assert asked == ["list Deployment ns", "list PersistentVolumeClaim ns"]
    assert app._exists("Deployment", "ns", "newer-than-the-list")
    assert not app._exists("Deployment", "ns", "gone")
    assert asked[2:] == ["get newer-than-the-list", "get gone"]
    assert app._exists("Deployment", "other", "web") and asked[-1] == "list Deployment other"
