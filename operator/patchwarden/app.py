"""The operator's I/O layer: gathers facts, applies the pure decisions, writes status.

``operator.py`` (the kopf wiring) calls these from its handlers, in threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from patchwarden import builders, metrics
from patchwarden import conditions as c
from patchwarden.api.run import Phase
from patchwarden.controller import slim
from patchwarden.kube import Kube
from patchwarden.policy import assess
from patchwarden.reconcile import (
    SystemFacts,
    parse_system,
    request_status,
    requeue_after,
    system_status,
    window_ref,
)
from patchwarden.runner import Runner, resolve_snapshot_class
from patchwarden.scheduler import (
    TERMINAL,
    Limits,
    decide_start,
    failures_in_window,
    halted_message,
    open_window,
    within_limits,
)
from patchwarden.settings import Settings

log = logging.getLogger(__name__)

EventFn = Callable[[dict[str, Any], str, str, str], None]
CLASSES_TTL = 10.0
NAMES_TTL = 30.0


def _active(run: dict[str, Any]) -> bool:
    return (run.get("status") or {}).get("phase") not in TERMINAL


@dataclass
class App:
    """Shared state of one operator process."""

    settings: Settings
    kube: Kube
    emit: EventFn
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    lock: threading.Lock = field(default_factory=threading.Lock)
    runs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """Every UpdateRun this process knows (summaries): fed by the watch and by the runs it
    creates itself, so that the fleet limits see a run the moment it is created."""
    requests: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """Every UpdateRequest this process knows, fed by the watch."""
    waiting: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    """Systems whose due run the fleet limits hold back, oldest first: (namespace, name) →
    (customer, window start). A freed slot wakes the first that fit (:meth:`waiters_to_wake`)."""
    system_cache: Mapping[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """The controller's watch-fed ManagedSystems (the runs read them instead of a GET)."""
    _classes: tuple[float, list[dict[str, Any]]] = (0.0, [])
    _names: dict[tuple[str, str], tuple[float, frozenset[str]]] = field(default_factory=dict)
    _names_locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)

    def observe_run(self, body: dict[str, Any]) -> bool:
        """Record a run; True when this frees a slot (an active run ended)."""
        meta = body["metadata"]
        phase = (body.get("status") or {}).get("phase")
        summary = {
            "metadata": {"namespace": meta["namespace"], "name": meta["name"]},
            "spec": body["spec"],
            "status": {"phase": phase},
        }
        key = (meta["namespace"], meta["name"])
        with self.lock:
            old = self.runs.get(key)
            self.runs[key] = summary
        return old is not None and _active(old) and phase in TERMINAL

    def observe_request(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        with self.lock:
            self.requests[(meta["namespace"], meta["name"])] = slim(body)

    def forget_request(self, ns: str, name: str) -> None:
        with self.lock:
            self.requests.pop((ns, name), None)

    def forget_run(self, ns: str, name: str) -> bool:
        """Forget a deleted run; True when this frees a slot (it was active)."""
        with self.lock:
            old = self.runs.pop((ns, name), None)
        return old is not None and _active(old)

    def stop_waiting(self, ns: str, name: str) -> None:
        """The system no longer waits for a slot (it is gone, or no run is due)."""
        with self.lock:
            self.waiting.pop((ns, name), None)

    def waiters_to_wake(self) -> list[tuple[str, str]]:
        """The systems held back by the limits that would now fit, oldest first, at most
        as many as there are free slots (decided again under the lock when they start)."""
        with self.lock:
            runs = list(self.runs.values())
            free = self.settings.max_concurrent_runs - sum(1 for r in runs if _active(r))
            woken: list[tuple[str, str]] = []
            for key, (customer, window_start) in self.waiting.items():
                if len(woken) >= free:
                    break
                if within_limits(customer, window_start, runs, self.limits) is None:
                    woken.append(key)
                    runs.append(
                        {
                            "spec": {"customer": customer, "window": {"start": window_start}},
                            "status": {"phase": Phase.PENDING.value},
                        }
                    )
            return woken

    def _known_runs(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.runs.values())

    def _exists(self, kind: str, ns: str, name: str) -> bool:
        """Whether a workload or claim exists. One LIST per kind and namespace answers every
        system there for NAMES_TTL seconds (not a GET per system and reconcile); a name the
        list lacks is confirmed by a GET, as the object may be newer than the list."""
        key = (kind, ns)
        with self._names_locks.setdefault(key, threading.Lock()):
            listed_at, names = self._names.get(key, (0.0, frozenset()))
            if time.monotonic() - listed_at > NAMES_TTL:
                names = frozenset(self.kube.names(kind, ns))
                self._names[key] = (time.monotonic(), names)
        if name in names:
            return True
        if kind == "PersistentVolumeClaim":
            return self.kube.get_claim(ns, name) is not None
        return self.kube.get_workload(kind, ns, name) is not None

    def _snapshot_classes(self) -> list[dict[str, Any]]:
        """The cluster's VolumeSnapshotClasses, listed at most every CLASSES_TTL seconds."""
        listed_at, classes = self._classes
        if time.monotonic() - listed_at > CLASSES_TTL:
            classes = self.kube.snapshot_classes()
            self._classes = (time.monotonic(), classes)
        return classes

    def runner(self, watched_wait: float | None = None) -> Runner:
        cache = self.system_cache
        return Runner(
            self.kube,
            self.settings,
            self.emit,
            self.now,
            lambda ns, name: cache.get((ns, name)),
            watched_wait,
        )

    @property
    def limits(self) -> Limits:
        s = self.settings
        return Limits(s.max_concurrent_runs, s.max_runs_per_customer, s.max_errors_per_window)

    # ---- ManagedSystem -------------------------------------------------------------------
    def reconcile_system(self, body: dict[str, Any]) -> float:
        """Write the system's status, decide its requests, start its run if due.

        Returns the seconds until the system needs another look.
        """
        with metrics.RECONCILE_DURATION.labels("ManagedSystem").time():
            try:
                delay = self._reconcile_system(body)
            except Exception:
                metrics.RECONCILES.labels("ManagedSystem", "error").inc()
                metrics.RECONCILE_ERRORS.labels("ManagedSystem").inc()
                raise
        metrics.RECONCILES.labels("ManagedSystem", "success").inc()
        return delay

    def _reconcile_system(self, body: dict[str, Any]) -> float:
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        now = self.now()
        spec, _ = parse_system(body.get("spec") or {})
        runs = self._known_runs()
        mine = [
            r
            for r in runs
            if r["metadata"]["namespace"] == ns and r["spec"]["systemRef"]["name"] == name
        ]
        facts = SystemFacts(
            active_run=next(
                (
                    r["metadata"]["name"]
                    for r in mine
                    if (r.get("status") or {}).get("phase") not in TERMINAL
                ),
                None,
            )
        )
        if spec is not None:
            facts.workload_found = self._exists(spec.workload.kind, ns, spec.workload.name)
            facts.missing_claims = [
                v for v in spec.volumes if not self._exists("PersistentVolumeClaim", ns, v)
            ]
            facts.snapshot_class = resolve_snapshot_class(
                self._snapshot_classes(),
                spec.backup.volume_snapshot_class_name,
                self.settings.default_snapshot_class,
            )
            occ = open_window(spec, now)
            if occ is not None:
                opened = window_ref(occ).start
                failed = failures_in_window(opened, runs)
                if failed >= self.settings.max_errors_per_window:
                    facts.halted = halted_message(
                        opened, failed, self.settings.max_errors_per_window
                    )
        status, problems = system_status(body, facts, now)
        self._write("managedsystems", body, status)
        metrics.observe_system(body, spec)
        requests = self._reconcile_requests(ns, name, body, now)
        if problems or spec is None:
            self.stop_waiting(ns, name)
            return self.settings.resync_seconds
        start = decide_start(name, spec, assess(spec), now, requests, mine)
        if start is None or facts.halted is not None:
            self.stop_waiting(ns, name)  # no run due here: not waiting for a slot (any more)
        else:
            blocked = self._start(body, spec, start)
            if blocked:
                log.info("system %s/%s: run %s waits: %s", ns, name, start.run, blocked)
                # A freed slot wakes it (waiters_to_wake); the resync is the fallback.
                return self.settings.resync_seconds
        # While a run is in progress, its end queues the system again.
        return requeue_after(status, self.now(), self.settings.resync_seconds)

    def _start(self, body: dict[str, Any], spec: Any, start: Any) -> str | None:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        window_start = window_ref(start.occurrence).start
        with self.lock:  # one decision at a time, on the current runs: the limits hold
            blocked = within_limits(
                spec.customer, window_start, list(self.runs.values()), self.limits
            )
            if blocked:
                self.waiting.setdefault((ns, name), (spec.customer, window_start))
                return blocked
            self.waiting.pop((ns, name), None)
            manifest = builders.update_run(
                system=name,
                system_uid=body["metadata"]["uid"],
                customer=spec.customer,
                trigger=start.trigger,
                window=window_ref(start.occurrence),
                window_start=start.occurrence.start,
                classes=list(start.classes),
                components=list(assess(spec).components),
                request=start.request,
                ticket=start.ticket,
            )
            manifest["metadata"]["namespace"] = ns
            if self.kube.create("updateruns", ns, manifest):
                key = (ns, manifest["metadata"]["name"])
                self.runs.setdefault(key, {**manifest, "status": {"phase": Phase.PENDING.value}})
                self.emit(
                    body,
                    "Normal",
                    "RunStarted",
                    f"update run {manifest['metadata']['name']} ({start.trigger.value}) started "
                    f"in window {start.occurrence.window}",
                )
        return None

    # ---- UpdateRequest ------------------------------------------------------------------
    def _reconcile_requests(
        self, ns: str, system: str, system_body: dict[str, Any] | None, now: datetime
    ) -> list[dict[str, Any]]:
        with self.lock:
            requests = [
                r
                for (r_ns, _), r in self.requests.items()
                if r_ns == ns and r["spec"]["systemRef"]["name"] == system
            ]
        for request in requests:
            self.reconcile_request(request, system_body, now)
        return requests

    def reconcile_request(
        self, body: dict[str, Any], system: dict[str, Any] | None, now: datetime | None = None
    ) -> None:
        status = request_status(body, system, now or self.now())
        self._write("updaterequests", body, status)
        metrics.observe_request(
            body["metadata"]["namespace"], body["metadata"]["name"], status.get("state")
        )

    def reconcile_request_alone(self, body: dict[str, Any]) -> None:
        ns = body["metadata"]["namespace"]
        system = self.kube.get("managedsystems", ns, body["spec"]["systemRef"]["name"])
        self.reconcile_request(body, system)

    def cancel_request(self, body: dict[str, Any]) -> None:
        """A request deleted before its run started cancels that run."""
        ref = (body.get("status") or {}).get("runRef")
        if not ref:
            return
        ns = body["metadata"]["namespace"]
        run = self.kube.get("updateruns", ns, ref["name"])
        if (
            run is not None
            and (run.get("status") or {}).get("phase", Phase.PENDING.value) == Phase.PENDING.value
        ):
            self.kube.delete("updateruns", ns, ref["name"])

    # ---- writing ------------------------------------------------------------------------
    def _write(self, plural: str, body: dict[str, Any], status: dict[str, Any]) -> None:
        """Patch the status only when it changed; emit an Event per condition transition."""
        old = body.get("status") or {}
        if all(old.get(k) == v for k, v in status.items()):
            return
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        self.kube.patch_status(plural, ns, name, status)
        body["status"] = {**old, **status}
        old_conditions = old.get("conditions") or []
        for type_, value, reason, message in c.transitions(
            old_conditions, status.get("conditions") or []
        ):
            bad = (type_ in {c.STALLED, c.UPDATES_HALTED} and value == "True") or (
                type_ in {c.ELIGIBLE, c.BACKUP_CONFIGURED, c.ACCEPTED} and value == "False"
            )
            first = c.get(old_conditions, type_) is None
            if type_ in {c.READY, c.RECONCILING} or (first and not bad and type_ != c.ACCEPTED):
                continue  # Ready/Reconciling mirror the others; a first "all fine" is no news
            self.emit(
                body, "Warning" if bad else "Normal", reason, message or f"{type_} is {value}"
            )
