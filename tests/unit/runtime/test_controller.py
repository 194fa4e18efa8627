"""The workers and the systems' cache, without a cluster."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from patchwarden.runtime.controller import Strings, SystemController, slim
from patchwarden.runtime.queue import DelayQueue
from tests.unit.runtime.clock import A, Clock


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
        acknowledged = system("a", 2)
        acknowledged["metadata"]["annotations"] = {"patchwarden.io/acknowledged-run": "a-1"}
        c.observe("MODIFIED", acknowledged)  # a person dealt with a failed rollback
        assert c.queue.due() == A
        c.queue.done(A, None)
        deleting = system("a", 2)
        deleting["metadata"]["annotations"] = {"patchwarden.io/acknowledged-run": "a-1"}
        deleting["metadata"]["deletionTimestamp"] = "2027-01-01T00:00:00Z"
        c.observe("MODIFIED", deleting)
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
        c = SystemController(reconcile=reconcile, workers=2, synced=asyncio.Event())
        workers = [asyncio.ensure_future(c.work()) for _ in range(c.workers)]
        c.observe(None, system("a", 1))
        c.observe(None, system("b", 1))
        await asyncio.sleep(0.1)
        assert seen == [], "paused: another replica holds the peering"
        c.set_active(True, "test")
        await asyncio.sleep(0.1)
        assert seen == [], "the workloads and claims are not listed yet"
        assert c.synced is not None
        c.synced.set()
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.02)
        assert sorted(seen) == ["a", "b"]
        assert c.queue.backlog() == 0 and len(c.queue) == 2, "both requeued an hour ahead"
        for w in workers:
            w.cancel()

    asyncio.run(scenario())


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


def test_a_workload_or_claim_changing_queues_the_systems_that_name_them_only() -> None:
    async def scenario() -> None:
        c = SystemController(reconcile=lambda body: 60.0, workers=1)
        named = system("a", 1)
        named["spec"] = {"workload": {"kind": "Deployment", "name": "db"}, "volumes": ["data"]}
        other = system("b", 1)
        other["spec"] = {"workload": {"kind": "StatefulSet", "name": "db"}}
        for body in (named, other):
            c.observe(None, body)
            key = c.queue.due()
            assert key is not None
            c.queue.done(key, None)
        c.changed([("Deployment", "ns", "db"), ("PersistentVolumeClaim", "elsewhere", "data")])
        assert c.queue.due() == A and c.queue.due() is None, (
            "only a; another namespace's claim is not a's"
        )
        c.queue.done(A, None)
        moved = system("a", 2)
        moved["spec"] = {"workload": {"kind": "Deployment", "name": "db2"}}
        c.observe("MODIFIED", moved)
        assert c.queue.due() == A
        c.queue.done(A, None)
        c.changed([("Deployment", "ns", "db"), ("PersistentVolumeClaim", "ns", "data")])
        assert c.queue.due() is None, "a names neither any more"
        c.observe("DELETED", moved)
        c.changed([("Deployment", "ns", "db2")])
        assert c.queue.due() is None and c.referrers == {("StatefulSet", "ns", "db"): {("ns", "b")}}
        c.requeue_if(lambda body: body["spec"]["workload"]["kind"] == "StatefulSet")
        assert c.queue.due() == ("ns", "b")

    asyncio.run(scenario())


def test_the_cached_systems_share_the_strings_they_repeat_but_not_their_own() -> None:
    c = SystemController(reconcile=lambda body: 60.0, workers=1)
    said = {"conditions": [{"type": "Ready", "message": "the system is reconciled"}]}
    for name in ("a", "b"):
        body = json.loads(json.dumps(system(name, 1, said)))  # parsed apart, as from a watch
        body["metadata"]["uid"] = f"uid-{name}-" + "x" * 20
        c.observe(None, body)
    a, b = c.systems[("ns", "a")], c.systems[("ns", "b")]
    assert a["status"] == said == b["status"]
    message = a["status"]["conditions"][0]["message"]
    assert message is b["status"]["conditions"][0]["message"], "one copy for both"
    assert "uid-a-" + "x" * 20 not in [s for s in c.strings._known], "an object's own: not kept"
    before = a["spec"]
    c.observe("MODIFIED", json.loads(json.dumps(system("a", 1, {"eligible": True}))))
    assert c.systems[("ns", "a")]["spec"] is before, "a status-only change keeps the spec"
    strings = Strings(limit=2)
    assert strings.share(["x", "y", "z"]) == ["x", "y", "z"] and len(strings) == 2
