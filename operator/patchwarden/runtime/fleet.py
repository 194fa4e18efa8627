"""What this process knows of the fleet's runs and requests, and fleet admission.

The registry is fed by the watches (and by the runs this process creates, the
moment it creates them); the controllers read it instead of the API: the systems
controller for each system's runs (the start decision, ``lastRun``), the requests
controller for the run that serves a request. Admission — whether one more run may
start under the fleet limits, and who waits for a slot — lives here and only here;
the limits themselves are a pure rule (:func:`patchwarden.core.scheduler.within_limits`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from patchwarden.api.run import TERMINAL, Phase
from patchwarden.core.conditions import NEEDS_ATTENTION, is_true
from patchwarden.core.scheduler import Limits, Window, within_limits
from patchwarden.runtime.controller import slim

Key = tuple[str, str]
SUMMARY_STATUS = ("phase", "message", "startTime", "completionTime")
"""The fields of a run's status the registry keeps (what the controllers derive from)."""


def _active(run: dict[str, Any]) -> bool:
    return (run.get("status") or {}).get("phase") not in TERMINAL


def _stage(run: dict[str, Any]) -> tuple[str, str | None]:
    """Pending, in progress or ended (with how): a move between these is news for the
    run's system and request; a step inside "in progress" is not."""
    phase = (run.get("status") or {}).get("phase") or Phase.PENDING.value
    if phase == Phase.PENDING.value:
        return ("Pending", None)
    return ("Ended", phase) if phase in TERMINAL else ("InProgress", None)


def run_summary(body: dict[str, Any]) -> dict[str, Any]:
    meta, status = body["metadata"], body.get("status") or {}
    summary = {k: status[k] for k in SUMMARY_STATUS if status.get(k) is not None}
    if is_true(status.get("conditions") or [], NEEDS_ATTENTION):
        summary["needsAttention"] = True
    if status.get("phase") in TERMINAL and (status.get("alertGate") or {}).get("stopped"):
        summary["gateStopped"] = True
    return {
        "metadata": {"namespace": meta["namespace"], "name": meta["name"]},
        "spec": body["spec"],
        "status": summary,
    }


@dataclass
class Fleet:
    limits: Limits
    lock: threading.Lock = field(default_factory=threading.Lock)
    runs: dict[Key, dict[str, Any]] = field(default_factory=dict)
    """Every UpdateRun this process knows (summaries), by (namespace, name)."""
    deleted: dict[Key, dict[str, Any]] = field(default_factory=dict)
    """Each system's newest ended run that was deleted, by the system's (namespace, name):
    until the system's status names it, it is known only here."""
    requests: dict[Key, dict[str, Any]] = field(default_factory=dict)
    """Every UpdateRequest this process knows, by (namespace, name)."""
    waiting: dict[Key, tuple[str, Window]] = field(default_factory=dict)
    """Systems whose due run the limits hold back, oldest first: (namespace, name) →
    (customer, window occurrence). A freed slot wakes the first that fit (:meth:`to_wake`)."""

    # ---- runs ---------------------------------------------------------------------------
    def observe_run(self, body: dict[str, Any]) -> tuple[bool, bool]:
        """Record a run; (news: it is new, started or ended — what its system's status and
        its request's state derive from; freed: an active run ended)."""
        summary = run_summary(body)
        key = (summary["metadata"]["namespace"], summary["metadata"]["name"])
        with self.lock:
            old = self.runs.get(key)
            self.runs[key] = summary
        news = old is None or _stage(old) != _stage(summary)
        return news, old is not None and _active(old) and not _active(summary)

    def forget_run(self, ns: str, name: str) -> dict[str, Any] | None:
        """Forget a deleted run (remembering it as its system's newest deleted run if it had
        ended); returns what was known of it."""
        with self.lock:
            gone = self.runs.pop((ns, name), None)
            ended = ((gone or {}).get("status") or {}).get("completionTime")
            if gone is not None and ended:
                system = (ns, gone["spec"]["systemRef"]["name"])
                newest = (self.deleted.get(system) or {}).get("status", {}).get("completionTime")
                if newest is None or ended > newest:
                    self.deleted[system] = gone
            return gone

    def deleted_run(self, ns: str, system: str) -> dict[str, Any] | None:
        with self.lock:
            return self.deleted.get((ns, system))

    def forget_system(self, ns: str, name: str) -> None:
        """A deleted system waits for nothing and leaves no memory of its runs (a new
        system of the same name starts afresh)."""
        with self.lock:
            self.deleted.pop((ns, name), None)
            self.waiting.pop((ns, name), None)

    def runs_of(self, ns: str, system: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                r
                for (r_ns, _), r in self.runs.items()
                if r_ns == ns and r["spec"]["systemRef"]["name"] == system
            ]

    def all_runs(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.runs.values())

    def runs_of_request(self, ns: str, request: str) -> list[dict[str, Any]]:
        """The runs started for the request (more than one when one rolled back and was
        retried), oldest window first."""
        with self.lock:
            found = [
                r
                for (r_ns, _), r in self.runs.items()
                if r_ns == ns and (r["spec"].get("requestRef") or {}).get("name") == request
            ]
        return sorted(found, key=lambda r: r["spec"]["window"]["start"])

    # ---- requests -----------------------------------------------------------------------
    def observe_request(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        with self.lock:
            self.requests[(meta["namespace"], meta["name"])] = slim(body)

    def forget_request(self, ns: str, name: str) -> None:
        with self.lock:
            self.requests.pop((ns, name), None)

    def requests_of(self, ns: str, system: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                r
                for (r_ns, _), r in self.requests.items()
                if r_ns == ns and r["spec"]["systemRef"]["name"] == system
            ]

    # ---- admission ----------------------------------------------------------------------
    def admit(
        self,
        key: Key,
        customer: str,
        window: Window,
        create: Callable[[], dict[str, Any] | None],
    ) -> str | None:
        """Start a run if the limits allow: ``create`` makes it (returns the manifest, or
        None when it already existed) and the registry counts it at once. Otherwise the
        system waits for a slot; returns why. One decision at a time, on the current runs."""
        with self.lock:
            blocked = within_limits(customer, window, list(self.runs.values()), self.limits)
            if blocked:
                self.waiting.setdefault(key, (customer, window))
                return blocked
            self.waiting.pop(key, None)
            manifest = create()
            if manifest is not None:
                meta = manifest["metadata"]
                self.runs.setdefault(
                    (meta["namespace"], meta["name"]),
                    run_summary({**manifest, "status": {"phase": Phase.PENDING.value}}),
                )
        return None

    def stop_waiting(self, ns: str, name: str) -> None:
        """The system no longer waits for a slot (no run is due)."""
        with self.lock:
            self.waiting.pop((ns, name), None)

    def to_wake(self) -> list[Key]:
        """The systems held back by the limits that would now fit, oldest first, at most
        as many as there are free slots (decided again in :meth:`admit` when they start)."""
        with self.lock:
            runs = list(self.runs.values())
            free = self.limits.max_concurrent - sum(1 for r in runs if _active(r))
            woken: list[Key] = []
            for key, (customer, window) in self.waiting.items():
                if len(woken) >= free:
                    break
                if within_limits(customer, window, runs, self.limits) is None:
                    woken.append(key)
                    runs.append(
                        {
                            "spec": {
                                "customer": customer,
                                "window": {"start": window[0], "end": window[1]},
                            },
                            "status": {"phase": Phase.PENDING.value},
                        }
                    )
            return woken
