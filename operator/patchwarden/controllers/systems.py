"""The ManagedSystem controller: gathers the facts, derives the status, starts a due run.

One reconcile of a system: read what the status depends on (does the workload
exist, its claims, the snapshot class, the system's runs from the fleet
registry), derive the status (``core/status.py``) and write it when it changed,
let the requests controller decide the system's requests, and start the run
that is due (``core/scheduler.py``) when the fleet admits it. It writes only
ManagedSystem statuses (``lastRun`` included, derived from the runs).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from patchwarden.api.run import TERMINAL
from patchwarden.api.system import ManagedSystemSpec
from patchwarden.core import builders
from patchwarden.core.releases import Catalogs, states
from patchwarden.core.scheduler import open_window
from patchwarden.core.settings import Settings
from patchwarden.core.status import (
    SystemFacts,
    parse_system,
    resolve_snapshot_class,
    window_ref,
)
from patchwarden.core.system import (
    Decision,
    DeleteRun,
    DeleteSnapshot,
    HoldRun,
    ReleaseFinalizer,
    SkipWindow,
    StartRun,
    Timing,
    decide,
)
from patchwarden.core.waves import Ledger, wave_name, wave_of
from patchwarden.core.waves import build as build_ledger
from patchwarden.runtime import metrics
from patchwarden.runtime.alerts import Gate
from patchwarden.runtime.fleet import Fleet
from patchwarden.runtime.inventory import Bodies, Inventory, Snapshots
from patchwarden.runtime.kube import KubeApi
from patchwarden.runtime.writer import EventFn, StatusWriter

log = logging.getLogger(__name__)

CLASSES_TTL = 10.0
LEDGER_TTL = 10.0
NAMES_TTL = 30.0
RequestsFn = Callable[[str, str, dict[str, Any] | None, datetime], list[dict[str, Any]]]
"""(namespace, system, system body, now) → the system's requests, decided."""


@dataclass
class Systems:
    settings: Settings
    kube: KubeApi
    emit: EventFn
    fleet: Fleet
    requests: RequestsFn
    """Decides the system's requests (the requests controller) and returns them."""
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    gate: Gate | None = None
    """The alert gate (asked while a window is open); None: no gate at all."""
    cached_systems: Callable[[], Iterable[Mapping[str, Any]]] = lambda: ()
    """Every ManagedSystem as the watch last delivered it (the waves' ledger counts them)."""
    wake: Callable[[tuple[str, str]], None] = lambda key: None
    """Queue a system for a reconcile (the operator's work queue)."""
    inventory: Inventory | None = None
    """The namespaces' workloads and claims, kept by watches (None: ask the API server)."""
    snapshots: Snapshots | None = None
    """The runs' snapshots, kept by their watches (None: retention is left to the runs)."""
    catalog_bodies: Bodies | None = None
    """The ReleaseCatalogs, kept by their watch (None: list them)."""
    class_bodies: Bodies | None = None
    """The VolumeSnapshotClasses, kept by their watch (None: list them)."""
    _ledger_cache: tuple[float, Ledger | None] = (0.0, None)
    _held: dict[tuple[str, str, str], set[tuple[str, str]]] = field(default_factory=dict)
    """A waved release → the systems it holds back (woken when it moves on)."""
    _ledger_lock: threading.Lock = field(default_factory=threading.Lock)
    _runs_changed: float = 0.0
    """When (monotonic) a run last began or ended (the waves' ledger counts runs)."""
    _classes: tuple[float, list[dict[str, Any]]] = (0.0, [])
    _catalogs: tuple[float, tuple[tuple[str, str], ...], Catalogs] = (0.0, (), Catalogs({}))
    _names: dict[tuple[str, str], tuple[float, frozenset[str]]] = field(default_factory=dict)
    _names_locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _skipped: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    """The window each system last skipped, as written: the cache may still hold a body from
    before that write (a system is never reconciled by two workers at once)."""

    @property
    def writer(self) -> StatusWriter:
        return StatusWriter(self.kube, self.emit)

    def reconcile(self, body: dict[str, Any]) -> float:
        """Write the system's status, decide its requests, start its run if due.
        Returns the seconds until the system needs another look."""
        with metrics.RECONCILE_DURATION.labels("ManagedSystem").time():
            try:
                delay = self._reconcile(body)
            except Exception:
                metrics.RECONCILES.labels("ManagedSystem", "error").inc()
                metrics.RECONCILE_ERRORS.labels("ManagedSystem").inc()
                raise
        metrics.RECONCILES.labels("ManagedSystem", "success").inc()
        resync = self.settings.resync_seconds
        if delay >= resync:
            # The safety resync, spread: a fleet synced at once does not come back at once.
            return resync * random.uniform(0.9, 1.0)
        return delay

    def _reconcile(self, body: dict[str, Any]) -> float:
        """observe → decide (``core/system.py``) → write the status once → apply."""
        parsed = parse_system(body.get("spec") or {})
        now = self.now()
        facts = self.observe(body, parsed[0], now)
        decision = decide(body, facts, now, self.timing, parsed)
        self.writer.write("managedsystems", body, decision.status)
        self.apply(body, decision)
        metrics.observe_system(body, parsed[0])
        return decision.requeue

    @property
    def timing(self) -> Timing:
        return Timing(self.settings.resync_seconds, self.settings.alert_gate_interval_seconds)

    def observe(
        self, body: Mapping[str, Any], spec: ManagedSystemSpec | None, now: datetime
    ) -> SystemFacts:
        """Every fact the decision reads, gathered once: the cluster's (:meth:`facts`), the
        system's requests (decided here by the requests controller, against the system as
        stored), its snapshots, and the window this process last recorded as skipped."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        mine = self.fleet.runs_of(ns, name)
        facts = self.facts(ns, name, spec, mine, now, meta.get("labels") or {})
        facts.skipped = self._skipped.get((ns, name))
        if self.snapshots is not None and spec is not None and facts.active_run is None:
            facts.snapshots = self.snapshots.of(ns, builders.label_value(name))
        if not meta.get("deletionTimestamp"):
            facts.requests = self.requests(ns, name, dict(body), now)
        return facts

    def apply(self, body: dict[str, Any], decision: Decision) -> None:
        """Carry out the decision's actions, in order. A system with no run to start stops
        waiting for a slot of the fleet."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        started = False
        for action in decision.actions:
            match action:
                case ReleaseFinalizer():
                    self.kube.set_finalizer(
                        "managedsystems", ns, name, builders.RUN_FINALIZER, False
                    )
                case DeleteRun(name=run):
                    self.kube.delete("updateruns", ns, run)
                case DeleteSnapshot(name=snapshot):
                    log.info(
                        "system %s/%s: snapshot %s is beyond the retention", ns, name, snapshot
                    )
                    self.kube.delete_snapshot(ns, snapshot)
                case SkipWindow():
                    self._skipped[(ns, name)] = dict(action.skipped)
                    self.emit(body, action.type, action.reason, action.message)
                case HoldRun(run=run, why=why):
                    log.info("system %s/%s: run %s held back: %s", ns, name, run, why)
                case StartRun():
                    started = True
                    self._admit(body, action)
        if not started:
            self.fleet.stop_waiting(ns, name)

    def _admit(self, body: dict[str, Any], start: StartRun) -> None:
        """Start the run once the fleet admits it; else it waits for a slot (a freed one
        wakes it, ``Fleet.to_wake``; its window's cutoff ends the wait)."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]

        def create(manifest: dict[str, Any]) -> bool:
            # Held while the run is in progress: a deletion of the system waits for its end.
            self.kube.set_finalizer("managedsystems", ns, name, builders.RUN_FINALIZER, True)
            if not self.kube.create("updateruns", ns, manifest):
                return False
            self.emit(body, "Normal", "RunStarted", start.event)
            return True

        blocked = self.fleet.admit(
            (ns, name), start.customer, start.window, lambda: dict(start.manifest), create
        )
        if blocked:
            log.info("system %s/%s: run %s waits: %s", ns, name, start.start.run, blocked)

    def facts(
        self,
        ns: str,
        name: str,
        spec: ManagedSystemSpec | None,
        mine: list[dict[str, Any]],
        now: datetime,
        labels: Mapping[str, str] | None = None,
    ) -> SystemFacts:
        active = (r for r in mine if (r.get("status") or {}).get("phase") not in TERMINAL)
        facts = SystemFacts(
            active_run=next((r["metadata"]["name"] for r in active), None),
            runs=mine,
            deleted_run=self.fleet.deleted_run(ns, name),
            pod_security=self.settings.pod_security_level,
        )
        if spec is None:
            return facts
        facts.workload_found = self._exists(spec.workload.kind, ns, spec.workload.name)
        if spec.components:
            # The installed versions are read from the workload's containers.
            bound = any(x.container for x in spec.components)
            workload = (
                self._workload(spec.workload.kind, ns, spec.workload.name)
                if bound and facts.workload_found
                else None
            )
            catalogs = self._release_catalogs()
            facts.components = states(spec, catalogs, workload, now)
            if catalogs.rollouts:
                self._waves(facts, catalogs, labels or {}, now, (ns, name))
        facts.missing_claims = [
            v for v in spec.volumes if not self._exists("PersistentVolumeClaim", ns, v)
        ]
        facts.snapshot_class = resolve_snapshot_class(
            self.snapshot_classes(),
            spec.backup.volume_snapshot_class_name,
            self.settings.default_snapshot_class,
        )
        occ = open_window(spec, now)
        if occ is not None:
            ref = window_ref(occ)
            opened = (ref.start, ref.end)
            facts.halted = self.fleet.halted(opened)
            if facts.halted is None and self.gate is not None and facts.active_run is None:
                facts.gate = self.gate.verdict(ns, spec.updates.alert_gate)
        return facts

    def _waves(
        self,
        facts: SystemFacts,
        catalogs: Catalogs,
        labels: Mapping[str, str],
        now: datetime,
        key: tuple[str, str] | None = None,
    ) -> None:
        """The system's wave in each catalog with waves, which of its newest releases they
        hold back (and why), and the filter its targets go through."""
        ledger = self._ledger(catalogs, now)
        facts.waves = [
            {"catalog": name, "wave": wave_name(rollout, wave_of(rollout, labels))}
            for name, rollout in sorted(catalogs.rollouts.items())
        ]
        for state in facts.components:
            if not state.in_scope:
                continue
            newest = {k.version: k for k in (state.security, state.feature) if k is not None}
            for known in newest.values():
                release = (known.component, known.version)
                if not ledger.allows(known.catalog, release, labels):
                    facts.held.append(ledger.why_not(known.catalog, release, labels))
                    progress = ledger.get(known.catalog, release)
                    facts.halted_release |= progress.halted is not None
                    if progress.until is not None:  # the wave soaks: look again then
                        facts.soaked.append(progress.until)
                    if key is not None:  # woken when the release moves on
                        self._held.setdefault((known.catalog, *release), set()).add(key)
        facts.released = ledger.released(labels)

    def ledger_stale(self) -> bool:
        """Systems are held back and a run began or ended since the ledger was built."""
        return bool(self._held) and self._ledger_cache[0] < self._runs_changed

    def refresh_ledger(self) -> None:
        """Build the ledger again and wake the systems whose held release moved on (called
        every LEDGER_TTL seconds while :meth:`ledger_stale`: the held systems sleep, and
        the reconcile of the system whose run ended may have come too soon to rebuild)."""
        catalogs = self._release_catalogs()
        if catalogs.rollouts:
            self._ledger(catalogs, self.now(), force=True)

    def _ledger(self, catalogs: Catalogs, now: datetime, force: bool = False) -> Ledger:
        """How far each waved release has come, built from the cached systems and the fleet's
        runs at most every LEDGER_TTL seconds (one pass over the fleet, shared by all)."""
        with self._ledger_lock:
            built_at, ledger = self._ledger_cache
            if (
                force
                or ledger is None
                or time.monotonic() - built_at > LEDGER_TTL
                or ledger.rollouts is not catalogs.rollouts
            ):
                old = self._ledger_cache[1]
                ledger = build_ledger(
                    catalogs, list(self.cached_systems()), self.fleet.all_runs(), now
                )
                self._ledger_cache = (time.monotonic(), ledger)
                self._wake_held(old, ledger)
            return ledger

    def _wake_held(self, old: Ledger | None, new: Ledger) -> None:
        """Queue the systems a release held back once its progress changed (a wave got
        through, or it halted): they look again at once, not at their next resync."""
        for release in list(self._held):
            catalog, component, version = release
            before = old.get(catalog, (component, version)) if old is not None else None
            if before != new.get(catalog, (component, version)):
                for key in self._held.pop(release):
                    self.wake(key)

    # ---- cached reads ------------------------------------------------------------------
    def _workload(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        """The workload's containers, from the watches' inventory (else a GET)."""
        if self.inventory is not None and self.inventory.answers(kind):
            return self.inventory.workload(kind, ns, name)
        return self.kube.get_workload(kind, ns, name)

    def _exists(self, kind: str, ns: str, name: str) -> bool:
        """Whether a workload or claim exists: the watches' inventory knows (its changes
        queue the systems that name it). Until it has listed: one LIST per kind and
        namespace answers every system there for NAMES_TTL seconds; a name the list lacks
        is confirmed by a GET, as the object may be newer than the list."""
        known = self.inventory.exists(kind, ns, name) if self.inventory is not None else None
        if known is not None:
            return known
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

    def runs_changed(self) -> None:
        """A run began or ended: the waves' ledger built before is out of date."""
        self._runs_changed = time.monotonic()

    def catalogs_changed(self) -> None:
        """A ReleaseCatalog changed (the watch says so): list them again at the next look."""
        _, versions, catalogs = self._catalogs
        self._catalogs = (0.0, versions, catalogs)

    def forget(self, ns: str, name: str) -> None:
        """The system is gone: drop what this controller remembers of it."""
        self._skipped.pop((ns, name), None)

    def _release_catalogs(self) -> Catalogs:
        """The ReleaseCatalogs (as their watch has them, else listed at most every
        CLASSES_TTL seconds), indexed again only when one of them changed."""
        listed_at, versions, catalogs = self._catalogs
        watched = self.catalog_bodies.listed() if self.catalog_bodies is not None else None
        if watched is not None or time.monotonic() - listed_at > CLASSES_TTL:
            bodies = watched if watched is not None else self.kube.release_catalogs()
            now_versions = tuple(
                sorted(
                    (b["metadata"]["name"], b["metadata"].get("resourceVersion", ""))
                    for b in bodies
                )
            )
            if now_versions != versions or not versions:
                catalogs = Catalogs.of(bodies)
                for name, why in catalogs.invalid.items():
                    log.warning("ReleaseCatalog %s is ignored: %s", name, why)
            self._catalogs = (time.monotonic(), now_versions, catalogs)
        return catalogs

    def snapshot_classes(self) -> list[dict[str, Any]]:
        """The cluster's VolumeSnapshotClasses (as their watch has them, else listed at most
        every CLASSES_TTL seconds); the runs read them from here too."""
        watched = self.class_bodies.listed() if self.class_bodies is not None else None
        if watched is not None:
            return watched
        listed_at, classes = self._classes
        if time.monotonic() - listed_at > CLASSES_TTL:
            classes = self.kube.snapshot_classes()
            self._classes = (time.monotonic(), classes)
        return classes
