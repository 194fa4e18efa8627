"""Delivery of notifications: CloudEvents (structured JSON) POSTed to the provider's
webhook, with retries and backoff, off the runs' path.

The watches hand every UpdateRun and UpdateRequest they see to :meth:`Notifier.observe`;
what the object owes and has not had (``core/notify.py``, its ``patchwarden.io/notified``
annotation) is queued under the object. Worker threads deliver each object's events in
order, one at a time per object, many objects at once; a delivered event is recorded in
the annotation, so a restarted operator sends only what is still owed (a delivery whose
record was cut short is sent again with the same ``id``: receivers key on it). A
receiver that is down or slow delays only its events: nothing waits for it, and an event
still undelivered after ``notify_max_age_seconds`` is given up (and recorded so).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3
from cloudevents.core.bindings.http import to_structured_event
from cloudevents.core.v1.event import CloudEvent
from urllib3.exceptions import HTTPError

from patchwarden.core.notify import (
    NOTIFIED,
    Notice,
    delivered,
    owed,
    request_notices,
    run_notices,
)
from patchwarden.core.settings import Settings
from patchwarden.core.times import parse_time
from patchwarden.runtime import metrics

log = logging.getLogger(__name__)

SIGNATURE = "X-Patchwarden-Signature"
"""``sha256=<hex HMAC-SHA256 of the body>`` when a key is configured (as GitHub signs)."""
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
Key = tuple[str, str, str]
"""(plural, namespace, name)."""


@dataclass
class _Outbox:
    notices: deque[Notice] = field(default_factory=deque)
    attempts: int = 0
    not_before: float = 0.0
    busy: bool = False


class Notifier:
    """Queues what each object owes and delivers it in order, in background threads."""

    def __init__(
        self,
        settings: Settings,
        annotate: Callable[[str, str, str, dict[str, str]], None],
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        workers: int = 4,
    ) -> None:
        self.url = settings.notify_url
        key = settings.notify_hmac_key
        self.key = key.get_secret_value().encode() if key and key.get_secret_value() else None
        self.max_age = timedelta(seconds=settings.notify_max_age_seconds)
        self.timeout = urllib3.Timeout(connect=3.0, read=settings.notify_timeout_seconds)
        self.annotate = annotate
        self.clock, self.now = clock, now
        self.http = urllib3.PoolManager(num_pools=2, maxsize=workers, retries=False)
        self.boxes: dict[Key, _Outbox] = {}
        self.sent: dict[Key, set[str]] = {}
        """Keys delivered by this process (an annotation written may not be seen yet)."""
        self.lock = threading.Condition()
        self.stopping = False
        self.threads = [
            threading.Thread(target=self._work, name=f"notify-{i}", daemon=True)
            for i in range(workers if self.url else 0)
        ]
        for t in self.threads:
            t.start()

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    # ---- what is owed ------------------------------------------------------------------
    def observe(self, plural: str, body: Mapping[str, Any]) -> None:
        """An UpdateRun or UpdateRequest as the watch delivered it: queue what it owes."""
        if not self.enabled or not body.get("spec"):
            return
        notices = run_notices(body) if plural == "updateruns" else request_notices(body)
        if not notices:
            return
        meta = body["metadata"]
        key = (plural, meta["namespace"], meta["name"])
        oldest = self.now() - self.max_age
        with self.lock:
            done = delivered(body) | self.sent.get(key, set())
            # What another process delivered stays in the record this one writes.
            self.sent[key] = set(done)
            box = self.boxes.setdefault(key, _Outbox())
            queued = {n.key for n in box.notices}
            for notice in owed(notices, done):
                if notice.key in queued:
                    continue
                if notice.time and parse_time(notice.time) < oldest:
                    continue  # history from before (or far behind): not news any more
                box.notices.append(notice)
            if not box.notices and not box.busy:
                del self.boxes[key]
            metrics.NOTIFY_QUEUE.set(sum(len(b.notices) for b in self.boxes.values()))
            self.lock.notify_all()

    def forget(self, plural: str, ns: str, name: str) -> None:
        """The object was deleted: what it still owes is delivered, then nothing is kept."""
        with self.lock:
            self.sent.pop((plural, ns, name), None)

    # ---- delivery -----------------------------------------------------------------------
    def _next(self) -> tuple[Key, Notice] | None:
        """The first notice of an object ready for delivery (not being delivered, not
        backing off); waits up to a second for one."""
        with self.lock:
            now = self.clock()
            for key, box in self.boxes.items():
                if box.notices and not box.busy and box.not_before <= now:
                    box.busy = True
                    return key, box.notices[0]
            self.lock.wait(timeout=1.0)
            return None

    def _work(self) -> None:
        while not self.stopping:
            ready = self._next()
            if ready is None:
                continue
            key, notice = ready
            try:
                ok, why = self.deliver(notice)
            except Exception as exc:  # a bug must not kill the worker: counted, retried
                log.exception("notification %s could not be sent", notice.id)
                ok, why = False, repr(exc)[:300]
            self._done(key, notice, ok, why)

    def _done(self, key: Key, notice: Notice, ok: bool, why: str) -> None:
        gave_up = (
            not ok and bool(notice.time) and parse_time(notice.time) < self.now() - self.max_age
        )
        if ok or gave_up:
            outcome = "delivered" if ok else "gave_up"
            metrics.NOTIFICATIONS.labels(outcome).inc()
            if gave_up:
                log.warning("notification %s given up after %s: %s", notice.id, self.max_age, why)
            self._record(key, notice)
        else:
            metrics.NOTIFICATIONS.labels("failed").inc()
        with self.lock:
            box = self.boxes[key]
            box.busy = False
            if ok or gave_up:
                box.notices.popleft()
                box.attempts = 0
                box.not_before = 0.0
            else:
                delay = BACKOFF[min(box.attempts, len(BACKOFF) - 1)]
                box.attempts += 1
                box.not_before = self.clock() + delay
                log.info("notification %s failed (%s); again in %.0fs", notice.id, why, delay)
            if not box.notices:
                del self.boxes[key]
            metrics.NOTIFY_QUEUE.set(sum(len(b.notices) for b in self.boxes.values()))
            self.lock.notify_all()

    def _record(self, key: Key, notice: Notice) -> None:
        """Add the notice to the object's annotation (a deleted object needs no record)."""
        with self.lock:
            sent = self.sent.setdefault(key, set())
            sent.add(notice.key)
            value = ",".join(sorted(sent))
        plural, ns, name = key
        try:
            self.annotate(plural, ns, name, {NOTIFIED: value})
        except Exception as exc:  # the event went out; a missing record only repeats it
            log.warning("recording notification %s on %s/%s failed: %s", notice.id, ns, name, exc)

    def encode(self, notice: Notice) -> tuple[dict[str, str], bytes]:
        """The HTTP headers and body of one CloudEvent in structured mode (JSON), signed."""
        attributes = {**notice.attributes(), "time": parse_time(notice.time)}
        message = to_structured_event(CloudEvent(attributes, notice.data))
        headers = dict(message.headers)
        if self.key is not None:
            digest = hmac.new(self.key, message.body, hashlib.sha256).hexdigest()
            headers[SIGNATURE] = f"sha256={digest}"
        return headers, message.body

    def deliver(self, notice: Notice) -> tuple[bool, str]:
        """POST one CloudEvent; (delivered: a 2xx answer, why not)."""
        headers, body = self.encode(notice)
        started = time.perf_counter()
        try:
            reply = self.http.request(
                "POST", self.url, body=body, headers=headers, timeout=self.timeout
            )
        except HTTPError as exc:
            return False, str(exc)[:300]
        finally:
            metrics.NOTIFY_DURATION.observe(time.perf_counter() - started)
        if 200 <= reply.status < 300:
            return True, ""
        return False, f"HTTP {reply.status}: {reply.data[:200]!r}"

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.lock.notify_all()
        for t in self.threads:
            t.join(timeout=5)

    def pending(self) -> int:
        with self.lock:
            return sum(len(b.notices) for b in self.boxes.values())
