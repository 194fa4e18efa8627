"""The notifier's queue: per object in order, retried with backoff, recorded, given up.
(Delivery to a real webhook: tests/cluster/test_notifications.py.)"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from patchwarden.core.notify import NOTIFIED, Notice, run_notices
from patchwarden.core.settings import Settings
from patchwarden.runtime.notify import NAMESPACE_SECRET, Notifier, Target, target_of

NOW = datetime(2026, 12, 6, 1, 30, tzinfo=UTC)


def run(name: str, phase: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": name,
            "annotations": annotations or {},
        },
        "spec": {"systemRef": {"name": name}},
        "status": {
            "phase": phase,
            "startTime": "2026-12-06T01:00:00Z",
            **({"completionTime": "2026-12-06T01:20:00Z"} if phase == "Succeeded" else {}),
        },
    }


class Scripted(Notifier):
    """Delivery answered by the test; the queue stepped by hand (no worker threads)."""

    def __init__(self, answers: list[bool]) -> None:
        self.recorded: list[tuple[str, dict[str, str]]] = []
        self.clock_now = [0.0]
        super().__init__(
            Settings(notify_url="http://127.0.0.1:9/hook"),
            lambda plural, ns, name, a: self.recorded.append((name, a)),
            clock=lambda: self.clock_now[0],
            now=lambda: NOW,
            workers=0,
        )
        self.answers = answers
        self.sent_ids: list[str] = []
        self._namespaces["ns"] = (float("inf"), None)  # known: no webhook of its own

    def deliver(self, notice: Notice, target: Target | None = None) -> tuple[bool, str]:
        ok = self.answers.pop(0) if self.answers else True
        if ok:
            where = "" if target is None or not target.suffix else "@" + target.url
            self.sent_ids.append(notice.id + where)
        return ok, "" if ok else "HTTP 503"

    def step(self) -> bool:
        """One delivery, as a worker makes it (a namespace without a webhook: dropped)."""
        while (ready := self._next()) is not None:
            key, notice = ready
            target = self.boxes[key].target or self.namespace_target(key[1])
            if target is None:
                self._drop(key)
                continue
            self._done(key, notice, *self.deliver(notice, target))
            return True
        return False


def test_a_runs_events_go_in_order_and_are_recorded_once_delivered() -> None:
    n = Scripted([])
    n.observe("updateruns", run("a", "Succeeded"))
    n.observe("updateruns", run("a", "Succeeded"))  # seen twice: queued once
    assert n.pending() == 2
    assert n.step() and n.step() and not n.step()
    assert n.sent_ids == ["a/started", "a/succeeded"]
    assert n.recorded == [("a", {NOTIFIED: "started"}), ("a", {NOTIFIED: "started,succeeded"})]
    n.observe("updateruns", run("a", "Succeeded"))  # a stale body: the process remembers
    assert n.pending() == 0


def test_a_failing_webhook_backs_off_without_holding_other_objects() -> None:
    n = Scripted([False, True, True, True])
    n.observe("updateruns", run("a", "Updating"))
    n.observe("updateruns", run("b", "Updating"))
    assert n.step()  # a fails: backs off 1 s
    assert n.step()  # b goes meanwhile
    assert n.sent_ids == ["b/started"]
    assert not n.step(), "a waits for its backoff"
    n.clock_now[0] += 1.0
    assert n.step() and n.sent_ids == ["b/started", "a/started"]


def test_an_event_too_old_is_given_up_and_history_is_not_sent() -> None:
    n = Scripted([False])
    old = run("a", "Updating")
    old["status"]["startTime"] = (NOW - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    n.observe("updateruns", old)
    assert n.pending() == 0, "older than the max age: not news"
    edge = run("b", "Updating")
    edge["status"]["startTime"] = (NOW - timedelta(minutes=59, seconds=59)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    n.observe("updateruns", edge)
    n.now = lambda: NOW + timedelta(seconds=5)
    assert n.step() and n.pending() == 0, "failed past its max age: given up"
    assert n.recorded == [("b", {NOTIFIED: "started"})], "recorded, not retried after a restart"


def test_without_a_webhook_nothing_is_queued() -> None:
    n = Notifier(Settings(), lambda *a: None, workers=0)
    n.observe("updateruns", run("a", "Succeeded"))
    assert n.pending() == 0 and not n.enabled


def test_an_event_is_a_structured_cloudevent_signed_over_its_body() -> None:
    import hashlib
    import hmac
    import json

    from cloudevents.core.bindings.http import HTTPMessage, from_http_event

    from patchwarden.core.notify import run_notices

    n = Notifier(
        Settings(notify_url="http://127.0.0.1:9/h", notify_hmac_key="k"), lambda *a: None, workers=0
    )
    (notice,) = run_notices(run("a", "Updating"))
    headers, body = n.encode(notice)
    assert headers["content-type"] == "application/cloudevents+json"
    assert (
        headers["X-Patchwarden-Signature"]
        == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    )
    event = from_http_event(HTTPMessage(headers, body))
    assert (event.get_id(), event.get_type()) == (
        "a/started",
        "io.patchwarden.updaterun.started.v1",
    )
    assert (
        json.loads(body)["time"] == "2026-12-06T01:00:00Z"
        and json.loads(body)["specversion"] == "1.0"
    )


def test_the_record_keeps_what_an_earlier_process_delivered() -> None:
    n = Scripted([])
    n.observe("updateruns", run("a", "Succeeded", {NOTIFIED: "started"}))
    assert n.step() and n.sent_ids == ["a/succeeded"]
    assert n.recorded == [("a", {NOTIFIED: "started,succeeded"})]


def test_a_namespace_with_its_own_webhook_gets_its_objects_events_too() -> None:
    """Issue 33, section 2: notification targets per customer namespace, besides the fleet's."""
    import base64

    n = Scripted([])
    secret = {"data": {"url": base64.b64encode(b"http://127.0.0.1:9/acme").decode()}}
    n.read_target = lambda ns: target_of(secret) if ns == "acme" else None
    body = run("a", "Updating")
    body["metadata"]["namespace"] = "acme"
    n.observe("updateruns", body)
    assert n.step() and n.step() and not n.step()
    assert sorted(n.sent_ids) == ["a/started", "a/started@http://127.0.0.1:9/acme"]
    assert n.recorded[-1] == ("a", {NOTIFIED: "started,started@ns"}), "each target recorded"
    n.observe("updateruns", body)
    assert n.pending() == 0, "neither target is owed it again"
    assert target_of({"data": {"url": base64.b64encode(b"ftp://x").decode()}}) is None
    assert NAMESPACE_SECRET == "patchwarden-notifications"


def test_a_waiting_proposal_is_announced_once_and_again_before_its_deadline() -> None:
    n = Scripted([])
    system = {
        "metadata": {"namespace": "ns", "name": "files", "uid": "u1"},
        "spec": {"customer": "initech"},
        "status": {
            "proposal": {
                "window": "w",
                "start": "2026-12-08T01:00:00Z",
                "approveBy": "2026-12-07T01:00:00Z",
                "state": "Pending",
                "targets": [{"component": "nextcloud", "from": "32.0.1", "to": "32.0.2"}],
            }
        },
    }
    n.observe("managedsystems", system)
    assert n.step() and not n.step()
    assert n.sent_ids == ["u1/proposal-waiting-2026-12-08T01:00:00Z"]
    n.now = lambda: datetime(2026, 12, 6, 19, 30, tzinfo=UTC)  # 5.5 h before approveBy
    n.observe("managedsystems", system)
    assert n.step() and not n.step()
    assert n.sent_ids[-1] == "u1/proposal-deadline-2026-12-08T01:00:00Z"
    system["status"]["proposal"]["state"] = "Approved"
    n.observe("managedsystems", system)
    assert n.pending() == 0, "answered: nothing more"


def test_two_targets_records_are_never_written_out_of_order() -> None:
    """The fleet's and the namespace's deliveries end in two threads at once: the record
    written last holds both (before, the first thread's slower write could land last and
    drop the second's key, and a restarted operator sent that event again)."""
    writes: list[str] = []
    first = threading.Event()

    def annotate(plural: str, ns: str, name: str, a: dict[str, str]) -> None:
        if not first.is_set():
            first.set()
            time.sleep(0.2)  # the first write is slow: the second delivery ends meanwhile
        writes.append(a[NOTIFIED])

    n = Notifier(Settings(notify_url="http://127.0.0.1:9/hook"), annotate, workers=0)
    notice = run_notices(run("a", "Running"))[0]
    threads = [
        threading.Thread(target=n._record, args=(("updateruns", "ns", "a", suffix), notice))
        for suffix in ("", "@ns")
    ]
    threads[0].start()
    first.wait(timeout=5)
    threads[1].start()
    for t in threads:
        t.join(timeout=5)
    assert writes[-1] == "started,started@ns", writes
