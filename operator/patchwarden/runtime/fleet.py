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
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from patchwarden.api.run import TERMINAL, Phase
from patchwarden.core.conditions import NEEDS_ATTENTION, is_true
from patchwarden.core.scheduler import (
    FAILED,
    Limit,
    Limits,
    Population,
    Window,
    halted,
    overlaps,
    within_limits,
)
from patchwarden.runtime.controller import Strings, slim

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


def _limits_it(run: dict[str, Any]) -> bool:
    """Whether the limits count the run: in progress, or failed (the error budget). A
    year's successes are not read at each admission."""
    phase = (run.get("status") or {}).get("phase")
    return phase not in TERMINAL or phase in FAILED


def _system_of(key: Key, run: Mapping[str, Any]) -> Key:
    return key[0], run["spec"]["systemRef"]["name"]


def _unindex(
    by_system: dict[Key, dict[Key, dict[str, Any]]], key: Key, gone: Mapping[str, Any]
) -> None:
    """Take ``key`` (a run or request that went) out of its system's entry."""
    system = _system_of(key, gone)
    theirs = by_system.get(system) or {}
    theirs.pop(key, None)
    if not theirs:
        by_system.pop(system, None)


RUN_OWN = Strings.OWN | {"startTime", "completionTime"}
"""A run's values that are its own (not worth a shared copy); its name is kept apart."""


def run_summary(body: dict[str, Any], strings: Strings | None = None) -> dict[str, Any]:
    """What the registry keeps of a run: its name, spec and the status fields the
    controllers derive from; with ``strings``, the copies of what runs repeat (keys, the
    system's name, the window's times, messages) are shared: a year of retained runs kept
    2.9 KB each, 1.7 KB with them shared (tracemalloc, 13,000 runs)."""
    meta, status = body["metadata"], body.get("status") or {}
    summary = {k: status[k] for k in SUMMARY_STATUS if status.get(k) is not None}
    if is_true(status.get("conditions") or [], NEEDS_ATTENTION):
        summary["needsAttention"] = True
    if status.get("phase") == "Succeeded":
        reported = [
            {"component": c.get("component"), "to": c.get("to")}
            for c in status.get("changes") or []
            if c.get("source") == "job" and c.get("component") and c.get("to")
        ]
        if reported:  # the versions of components described by hand (core/history.py)
            summary["reported"] = reported
    gate = status.get("alertGate") or {}
    if status.get("phase") in TERMINAL and gate.get("stopped"):
        summary["gateStopped"] = True
        summary["gateDecision"] = gate.get("decision")
    spec: dict[str, Any] = body["spec"]
    ns: str = meta["namespace"]
    if strings is not None:
        ns, spec, summary = strings.one(ns), strings.share(spec), strings.share(summary)
    return {
        "metadata": {"namespace": ns, "name": meta["name"]},
        "spec": spec,
        "status": summary,
    }


def _nobody(window: Window) -> Population:
    return {}


def shares(body: Mapping[str, Any], window: Window) -> bool:
    """Whether a system's ``status.nextWindow`` overlaps ``window`` (the same night)."""
    theirs = (body.get("status") or {}).get("nextWindow") or {}
    start = str(theirs.get("start") or "")
    return bool(start) and overlaps((start, str(theirs.get("end") or start)), window)


class WindowPopulation:
    """What percentage limits are of: per customer, the systems whose ``status.nextWindow``
    overlaps a window (an eligible system's next window is the open one until its cutoff).

    A projection of the systems' watch events (:meth:`observe`), kept as a tally per
    customer and distinct next window (a fleet shares a handful of windows): counting a
    window reads the tally, not the fleet, and is current with the last event."""

    def __init__(self) -> None:
        self._tally: Counter[tuple[str, str, str]] = Counter()
        self._of: dict[Key, tuple[str, str, str]] = {}
        self._lock = threading.Lock()

    def observe(self, key: Key, body: Mapping[str, Any] | None) -> None:
        """A system's event (None: it was deleted)."""
        theirs = ((body or {}).get("status") or {}).get("nextWindow") or {}
        start = str(theirs.get("start") or "")
        now = None
        if body is not None and start:
            customer = str((body.get("spec") or {}).get("customer", ""))
            now = (customer, start, str(theirs.get("end") or start))
        with self._lock:
            before = self._of.pop(key, None)
            if before is not None:
                self._tally[before] -= 1
                if not self._tally[before]:
                    del self._tally[before]
            if now is not None:
                self._of[key] = now
                self._tally[now] += 1

    def __call__(self, window: Window) -> Population:
        found: Counter[str] = Counter()
        with self._lock:
            for (customer, start, end), count in self._tally.items():
                if overlaps((start, end), window):
                    found[customer] += count
        return found


@dataclass
class Fleet:
    limits: Limits
    population: Callable[[Window], Population] = _nobody
    """Customer → its systems whose window overlaps a window: what percentage limits are
    of (the operator counts them in its watch-fed cache of systems)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    runs: dict[Key, dict[str, Any]] = field(default_factory=dict)
    """Every UpdateRun this process knows (summaries), by (namespace, name)."""
    deleted: dict[Key, dict[str, Any]] = field(default_factory=dict)
    """Each system's newest ended run that was deleted, by the system's (namespace, name):
    until the system's status names it, it is known only here."""
    requests: dict[Key, dict[str, Any]] = field(default_factory=dict)
    """Every UpdateRequest this process knows, by (namespace, name)."""
    _runs_by_system: dict[Key, dict[Key, dict[str, Any]]] = field(default_factory=dict)
    _limiting: dict[Key, dict[str, Any]] = field(default_factory=dict)
    """The runs the limits count (:func:`_limits_it`)."""
    _requests_by_system: dict[Key, dict[Key, dict[str, Any]]] = field(default_factory=dict)
    strings: Strings = field(default_factory=lambda: Strings(own=RUN_OWN))
    """The copies of what the runs' summaries repeat."""
    waiting: dict[Key, tuple[str, Window]] = field(default_factory=dict)
    """Systems whose due run the limits hold back, oldest first: (namespace, name) →
    (customer, window occurrence). A freed slot wakes the first that fit (:meth:`to_wake`)."""

    # ---- runs ---------------------------------------------------------------------------
    def observe_run(self, body: dict[str, Any]) -> tuple[bool, bool]:
        """Record a run; (news: it is new, started or ended — what its system's status and
        its request's state derive from; freed: an active run ended)."""
        summary = run_summary(body, self.strings)
        key = (summary["metadata"]["namespace"], summary["metadata"]["name"])
        with self.lock:
            old = self.runs.get(key)
            self._keep_run(key, summary)
        news = old is None or _stage(old) != _stage(summary)
        return news, old is not None and _active(old) and not _active(summary)

    def forget_run(self, ns: str, name: str) -> dict[str, Any] | None:
        """Forget a deleted run (remembering it as its system's newest deleted run if it had
        ended); returns what was known of it."""
        with self.lock:
            gone = self._drop_run((ns, name))
            ended = ((gone or {}).get("status") or {}).get("completionTime")
            if gone is not None and ended:
                system = _system_of((ns, name), gone)
                newest = (self.deleted.get(system) or {}).get("status", {}).get("completionTime")
                if newest is None or ended > newest:
                    self.deleted[system] = gone
            return gone

    def _keep_run(self, key: Key, summary: dict[str, Any]) -> None:
        """Record a run and index it (under the lock)."""
        self.runs[key] = summary
        self._runs_by_system.setdefault(_system_of(key, summary), {})[key] = summary
        if _limits_it(summary):
            self._limiting[key] = summary
        else:
            self._limiting.pop(key, None)

    def _drop_run(self, key: Key) -> dict[str, Any] | None:
        gone = self.runs.pop(key, None)
        self._limiting.pop(key, None)
        if gone is not None:
            _unindex(self._runs_by_system, key, gone)
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
            return list((self._runs_by_system.get((ns, system)) or {}).values())

    def all_runs(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.runs.values())

    def runs_of_request(self, ns: str, request: str) -> list[dict[str, Any]]:
        """The runs started for the request (more than one when one rolled back and was
        retried), oldest window first."""
        with self.lock:
            # A request's runs are runs of its system, and the request names its system.
            theirs = self.requests.get((ns, request))
            system = ((theirs or {}).get("spec") or {}).get("systemRef", {}).get("name")
            candidates = (
                self._runs_by_system.get((ns, system)) or {}
                if system is not None
                else {k: r for k, r in self.runs.items() if k[0] == ns}
            )
            found = [
                r
                for r in candidates.values()
                if (r["spec"].get("requestRef") or {}).get("name") == request
            ]
        return sorted(found, key=lambda r: r["spec"]["window"]["start"])

    # ---- requests -----------------------------------------------------------------------
    def observe_request(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        with self.lock:
            self._drop_request(key)
            self.requests[key] = kept = slim(body)
            self._requests_by_system.setdefault(_system_of(key, kept), {})[key] = kept

    def forget_request(self, ns: str, name: str) -> None:
        with self.lock:
            self._drop_request((ns, name))

    def _drop_request(self, key: Key) -> None:
        gone = self.requests.pop(key, None)
        if gone is not None:
            _unindex(self._requests_by_system, key, gone)

    def requests_of(self, ns: str, system: str) -> list[dict[str, Any]]:
        with self.lock:
            return list((self._requests_by_system.get((ns, system)) or {}).values())

    # ---- admission ----------------------------------------------------------------------
    def admit(
        self,
        key: Key,
        customer: str,
        window: Window,
        build: Callable[[], dict[str, Any]],
        create: Callable[[dict[str, Any]], bool],
    ) -> str | None:
        """Start a run if the limits allow; otherwise the system waits for a slot, and this
        returns why. One decision at a time, on the current runs: ``build`` makes the run's
        manifest and the registry counts it as Pending at once, under the lock; ``create``
        then makes it in the cluster (False: it existed already) outside the lock, so a
        slow API server holds up neither the other admissions nor the watches' events.
        When ``create`` fails or finds the run there, the count it added is taken back."""
        population = self._population(window)
        with self.lock:
            runs = list(self._limiting.values())
            blocked = within_limits(customer, window, runs, self.limits, population)
            if blocked:
                self.waiting.setdefault(key, (customer, window))
                return blocked
            self.waiting.pop(key, None)
            manifest = build()
            meta = manifest["metadata"]
            run_key = (meta["namespace"], meta["name"])
            reserved = None
            if run_key not in self.runs:
                pending = {**manifest, "status": {"phase": Phase.PENDING.value}}
                reserved = run_summary(pending, self.strings)
                self._keep_run(run_key, reserved)
        made = False
        try:
            made = create(manifest)
        finally:
            if not made and reserved is not None:
                with self.lock:
                    if self.runs.get(run_key) is reserved:  # the watch has not seen it since
                        self._drop_run(run_key)
        return None

    def halted(self, window: Window) -> str | None:
        """Why no more runs start in ``window`` (its error budget is spent), if so."""
        population = self._population(window)
        with self.lock:
            return halted(window, list(self._limiting.values()), self.limits, population)

    def _population(self, window: Window) -> Population:
        return self.population(window) if self.limits.by_percent else {}

    def stop_waiting(self, ns: str, name: str) -> None:
        """The system no longer waits for a slot (no run is due)."""
        with self.lock:
            self.waiting.pop((ns, name), None)

    def to_wake(self) -> list[Key]:
        """The systems held back by the limits that would now fit, oldest first, at most
        as many as there are free slots (decided again in :meth:`admit` when they start)."""
        with self.lock:
            runs = list(self._limiting.values())
            waiting = list(self.waiting.items())
        populations = {window: self._population(window) for _, (_, window) in waiting}
        fleet_wide = Limit.parse(self.limits.max_concurrent)
        # An absolute fleet-wide limit bounds the search; a percentage depends on the window.
        free = None if fleet_wide.percent else fleet_wide.value - sum(map(_active, runs))
        with self.lock:
            woken: list[Key] = []
            for key, (customer, window) in waiting:
                if free is not None and len(woken) >= free:
                    break
                if key not in self.waiting:
                    continue
                if within_limits(customer, window, runs, self.limits, populations[window]) is None:
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
