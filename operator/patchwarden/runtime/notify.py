"""Delivery of notifications: CloudEvents (structured JSON) POSTed to the provider's
webhook and to each customer namespace's own, with retries and backoff, off the runs' path.

Targets: the fleet's webhook (``PATCHWARDEN_NOTIFY_URL``) receives every event; a namespace
with a Secret ``patchwarden-notifications`` (keys ``url``, optional ``hmacKey``) receives its
own objects' events too, each target delivered and recorded on its own (a record key ends
in ``@ns`` for the namespace's). The watches hand every UpdateRun and UpdateRequest they
see, and the systems controller every ManagedSystem it reconciled (its proposal), to
:meth:`Notifier.observe`;
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
    proposal_notices,
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
Box = tuple[str, str, str, str]
"""(plural, namespace, name, the target's record suffix)."""
NAMESPACE_SECRET = "patchwarden-notifications"
"""A namespace's own webhook: a Secret of this name in it (``url``, optional ``hmacKey``)."""
NAMESPACE_SUFFIX = "@ns"
TARGET_TTL = 30.0
"""Seconds a namespace's Secret (or its absence) is remembered before it is read again."""


@dataclass(frozen=True)
class Target:
    """Where events go: the fleet's webhook (suffix ``""``) or a namespace's."""

    suffix: str
    url: str
    key: bytes | None = None


@dataclass
class _Outbox:
    target: Target | None
    """None: the namespace's own, read by the worker that delivers (never on the event
    loop, which hands the runs' and requests' events over)."""
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
        namespace_target: Callable[[str], Target | None] = lambda ns: None,
    ) -> None:
        self.url = settings.notify_url
        key = settings.notify_hmac_key
        self.key = key.get_secret_value().encode() if key and key.get_secret_value() else None
        self.fleet = Target("", self.url, self.key) if self.url else None
        self.read_target = namespace_target
        self._namespaces: dict[str, tuple[float, Target | None]] = {}
        self.max_age = timedelta(seconds=settings.notify_max_age_seconds)
        self.timeout = urllib3.Timeout(connect=3.0, read=settings.notify_timeout_seconds)
        self.annotate = annotate
        self.clock, self.now = clock, now
        self.http = urllib3.PoolManager(num_pools=4, maxsize=max(workers, 1), retries=False)
        self.boxes: dict[Box, _Outbox] = {}
        self.sent: dict[Key, set[str]] = {}
        """Record keys delivered by this process (an annotation written may not be seen yet)."""
        self.lock = threading.Condition()
        self._writing: dict[Key, threading.Lock] = {}
        """One lock an object: its record is computed and written by one thread at a time, so
        two targets' deliveries never write their records out of order (the later write
        holding less)."""
        self.stopping = False
        self.workers = workers
        self.threads: list[threading.Thread] = []
        """Started with the first event queued (a cluster with no webhook runs none)."""

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def namespace_target(self, ns: str) -> Target | None:
        """The namespace's own webhook, if its Secret names one (read at most every
        :data:`TARGET_TTL` seconds; called by the workers only)."""
        at = self.clock()
        with self.lock:
            known = self._namespaces.get(ns)
        if known is None or known[0] <= at:
            try:
                found = self.read_target(ns)
            except Exception as exc:  # unreadable: that target is skipped, said once a TTL
                log.warning("namespace %s: its notification Secret cannot be read: %s", ns, exc)
                found = None
            known = (at + TARGET_TTL, found)
            with self.lock:
                self._namespaces[ns] = known
        return known[1]

    # ---- what is owed ------------------------------------------------------------------
    def observe(self, plural: str, body: Mapping[str, Any]) -> None:
        """An UpdateRun, UpdateRequest or ManagedSystem as last seen: queue what it owes,
        to each of its targets."""
        if not body.get("spec"):
            return
        if plural == "updateruns":
            notices = run_notices(body)
        elif plural == "updaterequests":
            notices = request_notices(body)
        else:
            notices = proposal_notices(body, self.now())
        if not notices:
            return
        meta = body["metadata"]
        # The fleet's webhook, and the namespace's own (resolved by the worker: None).
        targets: list[tuple[str, Target | None]] = []
        if self.fleet is not None:
            targets.append(("", self.fleet))
        known = self._namespaces.get(meta["namespace"])
        if known is None or known[1] is not None or known[0] <= self.clock():
            targets.append((NAMESPACE_SUFFIX, None))  # unless known to have none
        key = (plural, meta["namespace"], meta["name"])
        oldest = self.now() - self.max_age
        with self.lock:
            done = delivered(body) | self.sent.get(key, set())
            if plural == "managedsystems":  # only the waiting proposal's record is kept
                current = {n.key + suffix for n in notices for suffix, _ in targets}
                done = frozenset(k for k in done if k in current)
            # What another process delivered stays in the record this one writes.
            self.sent[key] = set(done)
            for suffix, target in targets:
                box = self.boxes.setdefault((*key, suffix), _Outbox(target))
                queued = {n.key for n in box.notices}
                mine = frozenset(_unsuffixed(done, suffix))
                for notice in owed(notices, mine):
                    if notice.key in queued:
                        continue
                    if notice.time and parse_time(notice.time) < oldest:
                        continue  # history from before (or far behind): not news any more
                    box.notices.append(notice)
                if not box.notices and not box.busy:
                    del self.boxes[(*key, suffix)]
            metrics.NOTIFY_QUEUE.set(sum(len(b.notices) for b in self.boxes.values()))
            if self.boxes and not self.threads and not self.stopping:
                self.threads = [
                    threading.Thread(target=self._work, name=f"notify-{i}", daemon=True)
                    for i in range(self.workers)
                ]
                for t in self.threads:
                    t.start()
            self.lock.notify_all()

    def forget(self, plural: str, ns: str, name: str) -> None:
        """The object was deleted: what it still owes is delivered, then nothing is kept."""
        with self.lock:
            self.sent.pop((plural, ns, name), None)
            self._writing.pop((plural, ns, name), None)

    # ---- delivery -----------------------------------------------------------------------
    def _next(self) -> tuple[Box, Notice] | None:
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
            target = self.boxes[key].target or self.namespace_target(key[1])
            if target is None:  # the namespace has no webhook of its own: nothing owed
                self._drop(key)
                continue
            try:
                ok, why = self.deliver(notice, target)
            except Exception as exc:  # a bug must not kill the worker: counted, retried
                log.exception("notification %s could not be sent", notice.id)
                ok, why = False, repr(exc)[:300]
            self._done(key, notice, ok, why)

    def _done(self, key: Box, notice: Notice, ok: bool, why: str) -> None:
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

    def _drop(self, key: Box) -> None:
        with self.lock:
            self.boxes.pop(key, None)
            metrics.NOTIFY_QUEUE.set(sum(len(b.notices) for b in self.boxes.values()))
            self.lock.notify_all()

    def _record(self, key: Box, notice: Notice) -> None:
        """Add the notice to the object's annotation (a deleted object needs no record)."""
        plural, ns, name, suffix = key
        with self.lock:
            sent = self.sent.setdefault((plural, ns, name), set())
            sent.add(notice.key + suffix)
            writing = self._writing.setdefault((plural, ns, name), threading.Lock())
        with writing:  # the value read under it: a write never undoes a later delivery's
            with self.lock:
                value = ",".join(sorted(self.sent.get((plural, ns, name), set())))
            try:
                self.annotate(plural, ns, name, {NOTIFIED: value})
            except Exception as exc:  # the event went out; a missing record only repeats it
                log.warning(
                    "recording notification %s on %s/%s failed: %s", notice.id, ns, name, exc
                )

    def encode(self, notice: Notice, key: bytes | None = None) -> tuple[dict[str, str], bytes]:
        """The HTTP headers and body of one CloudEvent in structured mode (JSON), signed
        with ``key`` (default: the fleet's)."""
        attributes = {**notice.attributes(), "time": parse_time(notice.time)}
        message = to_structured_event(CloudEvent(attributes, notice.data))
        headers = dict(message.headers)
        key = key if key is not None else self.key
        if key is not None:
            digest = hmac.new(key, message.body, hashlib.sha256).hexdigest()
            headers[SIGNATURE] = f"sha256={digest}"
        return headers, message.body

    def deliver(self, notice: Notice, target: Target | None = None) -> tuple[bool, str]:
        """POST one CloudEvent to ``target`` (default: the fleet's webhook); (delivered: a
        2xx answer, why not)."""
        target = target or self.fleet
        if target is None:
            return False, "no webhook"
        headers, body = self.encode(notice, target.key)
        started = time.perf_counter()
        try:
            reply = self.http.request(
                "POST", target.url, body=body, headers=headers, timeout=self.timeout
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


def _unsuffixed(done: frozenset[str], suffix: str) -> set[str]:
    """The notice keys a target has had, from an object's record keys (the fleet's carry no
    suffix, a namespace's end in :data:`NAMESPACE_SUFFIX`)."""
    if suffix:
        return {k[: -len(suffix)] for k in done if k.endswith(suffix)}
    return {k for k in done if "@" not in k}


def target_of(secret: Mapping[str, Any] | None) -> Target | None:
    """A namespace's target from its Secret (``data`` base64, as the API server serves it);
    None when there is none or it names no http(s) URL."""
    import base64

    if not secret:
        return None
    data = secret.get("data") or {}
    url = base64.b64decode(data.get("url") or "").decode(errors="replace").strip()
    if not url.startswith(("http://", "https://")):
        return None
    key = base64.b64decode(data.get("hmacKey") or "") or None
    return Target(NAMESPACE_SUFFIX, url, key)
