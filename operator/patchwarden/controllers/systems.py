"""The ManagedSystem controller: observe → decide → write once → apply, like the runs'.

One reconcile of a system: :meth:`Systems.observe` gathers every fact once (from the read
model, ``runtime/view.py``: the workload, its claims, the catalogs, the snapshot classes
and snapshots; from the fleet registry: its runs and requests, which the requests
controller decides here; the waves' ledger, the fleet's error budget and the alert gate),
``core/system.py: decide`` turns them into the status, the actions and the next look,
the status is written once (when it changed) and :meth:`Systems.apply` carries out the
actions (a run starts only when the fleet admits it). It writes only ManagedSystem
statuses (``lastRun`` included, derived from the runs) and their run finalizer.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.rest import ApiException

from patchwarden.api.run import TERMINAL
from patchwarden.api.system import ManagedSystemSpec
from patchwarden.core import builders
from patchwarden.core.history import counted, learned_versions
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
from patchwarden.core.windows import Calendar
from patchwarden.runtime import metrics
from patchwarden.runtime.alerts import Gate
from patchwarden.runtime.fleet import Fleet
from patchwarden.runtime.kube import KubeApi
from patchwarden.runtime.view import ReadModel
from patchwarden.runtime.writer import EventFn, StatusWriter

log = logging.getLogger(__name__)

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
    view: ReadModel
    """The read model (``runtime/view.py``): every cluster fact a reconcile reads."""
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    gate: Gate | None = None
    """The alert gate (asked while a window is open); None: no gate at all."""
    wake: Callable[[tuple[str, str]], None] = lambda key: None
    """Queue a system for a reconcile (the operator's work queue)."""
    calendar: Calendar = field(default_factory=Calendar)
    """The window expansions remembered for the fleet (``core/windows.py``)."""
    notice: Callable[[dict[str, Any]], None] = lambda body: None
    """Hands the reconciled system (its proposal) to the notifier (``runtime/notify.py``)."""
    _ledger: Ledger | None = None
    """How far each waved release has come: built when the catalogs' rollouts change and
    by :meth:`refresh_ledger` after the fleet changed (runs began or ended, systems'
    needs changed), never per reconcile."""
    _held: dict[tuple[str, str, str], set[tuple[str, str]]] = field(default_factory=dict)
    """A waved release → the systems it holds back (woken when it moves on)."""
    _ledger_lock: threading.Lock = field(default_factory=threading.Lock)
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
        self.writer.write("managedsystems", body, decision.status.patch())
        self.notice(body)  # a proposal waiting for its answer is announced
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
        learned = (body.get("status") or {}).get("learnedVersions") or []
        facts = self.facts(ns, name, spec, mine, now, meta.get("labels") or {}, learned)
        facts.skipped = self._skipped.get((ns, name))
        if spec is not None and facts.active_run is None:
            facts.snapshots = self.view.snapshots_of(ns, builders.label_value(name))
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
        learned: list[dict[str, Any]] | None = None,
    ) -> SystemFacts:
        active = (r for r in mine if (r.get("status") or {}).get("phase") not in TERMINAL)
        facts = SystemFacts(
            active_run=next((r["metadata"]["name"] for r in active), None),
            runs=mine,
            deleted_run=self.fleet.deleted_run(ns, name),
            pod_security=self.settings.pod_security_level,
            calendar=self.calendar,
        )
        if spec is None:
            return facts
        found = {w.name: self.view.exists(w.kind, ns, w.name) for w in spec.workload_list()}
        facts.missing_workloads = [
            f"{w.kind} {w.name}" for w in spec.workload_list() if not found[w.name]
        ]
        if spec.components:
            # The installed versions are read from the workloads' containers.
            bound = {w.name for c in spec.components if (w := spec.workload_of(c)) is not None}
            workloads = {
                w.name: self.view.workload(w.kind, ns, w.name) if found[w.name] else None
                for w in spec.workload_list()
                if w.name in bound
            }
            catalogs = self.view.catalogs()
            by_hand = {c.name: c.version for c in spec.components if c.container is None}
            if by_hand:  # what runs installed of them counts (core/history.py)
                known = mine if facts.deleted_run is None else [*mine, facts.deleted_run]
                facts.learned = learned_versions(learned or [], by_hand, known)
            installed = counted(facts.learned, by_hand) if by_hand else None
            facts.components = states(spec, catalogs, workloads, now, installed)
            if catalogs.rollouts:
                self._waves(facts, catalogs, labels or {}, now, (ns, name))
        facts.missing_claims = [
            v for v in spec.volumes if not self.view.exists("PersistentVolumeClaim", ns, v)
        ]
        facts.snapshot_class = resolve_snapshot_class(
            self.view.snapshot_classes(),
            spec.backup.volume_snapshot_class_name,
            self.settings.default_snapshot_class,
        )
        occ = open_window(spec, now, self.calendar)
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
        ledger = self._ledger_of(catalogs, now)
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

    def refresh_ledger(self) -> None:
        """Build the ledger again and wake the systems whose held release moved on: the
        runtime calls it after the fleet changed (``runtime/app.py``), one build at a time
        however many changes came meanwhile."""
        catalogs = self.view.catalogs()
        if catalogs.rollouts:
            self._ledger_of(catalogs, self.now(), force=True)

    def _ledger_of(self, catalogs: Catalogs, now: datetime, force: bool = False) -> Ledger:
        """The ledger (one pass over the fleet, shared by all systems): built again when the
        catalogs' rollouts changed, or when :meth:`refresh_ledger` forces it."""
        with self._ledger_lock:
            ledger = self._ledger
            if force or ledger is None or ledger.rollouts is not catalogs.rollouts:
                recorded = self.view.catalog_records()
                systems, runs = self.view.all_systems(), self.fleet.all_runs()
                ledger = build_ledger(catalogs, systems, runs, now, recorded)
                old, self._ledger = self._ledger, ledger
                self._wake_held(old, ledger)
                self._record(ledger, recorded)
            return ledger

    def _record(self, ledger: Ledger, recorded: Mapping[str, list[dict[str, Any]]]) -> None:
        """Write each waved catalog's rollout record where it changed (this is its one
        writer): a wave's success and a halt outlive the runs that made them."""
        for name, records in ledger.records.items():
            if name not in recorded or records == recorded[name]:
                continue
            try:
                self.kube.patch_status("releasecatalogs", "", name, {"rollout": records})
            except ApiException as exc:  # deleted meanwhile; any other answer: the next build
                log.warning("ReleaseCatalog %s: its rollout record not written: %s", name, exc)

    def _wake_held(self, old: Ledger | None, new: Ledger) -> None:
        """Queue the systems a release held back once its progress changed (a wave got
        through, or it halted): they look again at once, not at their next resync."""
        for release in list(self._held):
            catalog, component, version = release
            before = old.get(catalog, (component, version)) if old is not None else None
            if before != new.get(catalog, (component, version)):
                for key in self._held.pop(release):
                    self.wake(key)

    def forget(self, ns: str, name: str) -> None:
        """The system is gone: drop what this controller remembers of it."""
        self._skipped.pop((ns, name), None)
