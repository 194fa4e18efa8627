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

from patchwarden.api.common import parse_duration
from patchwarden.api.run import TERMINAL, Phase, Target, Trigger
from patchwarden.api.system import ManagedSystemSpec
from patchwarden.core import builders
from patchwarden.core.approval import APPROVE, propose
from patchwarden.core.due import due_run
from patchwarden.core.history import NEVER, prunable, to_prune
from patchwarden.core.policy import assess
from patchwarden.core.releases import Catalogs, states
from patchwarden.core.scheduler import (
    Start,
    decide_start,
    open_window,
)
from patchwarden.core.settings import Settings
from patchwarden.core.status import (
    SystemFacts,
    needs_approval,
    next_usable,
    parse_system,
    requeue_after,
    resolve_snapshot_class,
    system_status,
    window_ref,
)
from patchwarden.core.times import parse_time, utc_text
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
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        now = self.now()
        parsed = parse_system(body.get("spec") or {})
        spec = parsed[0]
        mine = self.fleet.runs_of(ns, name)
        facts = self.facts(ns, name, spec, mine, now, meta.get("labels") or {})
        if spec is not None and needs_approval(spec) and assess(spec).proactive is not None:
            facts.proposal = self._proposal(body, spec, facts, now)
        status, problems = system_status(body, facts, now, parsed)
        self.writer.write("managedsystems", body, status)
        if facts.active_run is None and builders.RUN_FINALIZER in meta.get("finalizers", ()):
            # No run in progress: nothing holds a deletion any more.
            self.kube.set_finalizer("managedsystems", ns, name, builders.RUN_FINALIZER, False)
        if meta.get("deletionTimestamp"):
            # Being deleted: its run (if any) stops or rolls back and its end queues the
            # system again, to let the deletion complete; nothing new starts.
            self.fleet.stop_waiting(ns, name)
            return self.settings.resync_seconds
        if spec is not None:
            # lastRun is written above: a pruned run's outcome stays recorded.
            for run in to_prune(mine, spec.history.successful_runs, spec.history.failed_runs):
                self.kube.delete("updateruns", ns, run)
            if facts.active_run is None:
                self._retain_snapshots(ns, name, spec, mine)
        metrics.observe_system(body, spec)
        requests = self.requests(ns, name, body, now)
        if problems or spec is None:
            self.fleet.stop_waiting(ns, name)
            # What stalls it wakes it when it changes; its next window still moves on.
            return requeue_after(status, facts, self.now(), self.settings.resync_seconds)
        last = (status.get("lastRun") or {}).get("name")
        start = decide_start(name, spec, assess(spec), now, requests, mine, last)
        chosen: list[Target] = []
        if start is not None:
            answer = due_run(
                start, spec, facts.components, facts.released, facts.proposal, needs_approval(spec)
            )
            if answer.skipped:
                self._skip(body, start, answer.skipped, answer.why)
                start = None
            chosen = answer.targets
        gated = facts.gate is not None and facts.gate.blocked
        if start is None or facts.halted is not None or gated:
            self.fleet.stop_waiting(ns, name)  # no run due here: not waiting for a slot
            if start is not None and gated and facts.gate is not None:
                log.info(
                    "system %s/%s: run %s held back: %s", ns, name, start.run, facts.gate.message
                )
                # Asked again at the next interval (the answer is shared that long).
                return min(self.settings.alert_gate_interval_seconds, self.settings.resync_seconds)
        else:
            blocked = self.fleet.admit(
                (ns, name),
                spec.customer,
                (window_ref(start.occurrence).start, window_ref(start.occurrence).end),
                lambda: self._run_manifest(body, spec, start, [t.wire() for t in chosen]),
                lambda manifest: self._create_run(body, start, manifest),
            )
            if blocked:
                # A freed slot wakes it (Fleet.to_wake); its window's cutoff ends the wait.
                log.info("system %s/%s: run %s waits: %s", ns, name, start.run, blocked)
        # While a run is in progress, its end queues the system again.
        return requeue_after(status, facts, self.now(), self.settings.resync_seconds)

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
        facts.released = lambda k: ledger.allows(k.catalog, (k.component, k.version), labels)

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

    def _skip(
        self, body: dict[str, Any], start: Start, reason: str, why: str | None = None
    ) -> None:
        """A window came and its due run does not start: nothing is newer (and no Job does
        the update), or (``why``) its proposal was not approved. No run, no snapshot.
        Recorded in ``status.skippedWindow`` (a request it would have served ends
        Succeeded when nothing was to install) with one Event per window occurrence."""
        skipped = {"name": start.occurrence.window, "start": window_ref(start.occurrence).start}
        if start.request:
            skipped["request"] = start.request
        if why:
            skipped["reason"] = why
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if skipped in ((body.get("status") or {}).get("skippedWindow"), self._skipped.get(key)):
            return
        self.writer.write("managedsystems", body, {"skippedWindow": skipped})
        self._skipped[key] = skipped
        at = f"window {skipped['name']} at {skipped['start']}"
        self.emit(
            body,
            "Warning" if why else "Normal",
            reason,
            f"{at}: {why}; no run started"
            if why
            else f"{at}: every component in scope runs its newest acceptable release; "
            "no run started",
        )

    def _proposal(
        self,
        body: Mapping[str, Any],
        spec: ManagedSystemSpec,
        facts: SystemFacts,
        now: datetime,
    ) -> dict[str, Any] | None:
        """The run proposed for the next window in which the provider would start one on its
        own, with what it would install; None when none would start (approval needs a run
        of the provider's own initiative, and something to do)."""
        meta = body["metadata"]
        occ = next_usable(spec, now)
        if occ is None:
            return None
        at = max(now, occ.start)
        last = ((body.get("status") or {}).get("lastRun") or {}).get("name")
        due = decide_start(meta["name"], spec, assess(spec), at, [], facts.runs, last)
        old = (body.get("status") or {}).get("proposal")
        if due is None or due.trigger == Trigger.REQUEST or due.occurrence.start != occ.start:
            # Its run started (or the window needs none): an approved proposal stays shown.
            return old if old and old.get("start") == utc_text(occ.start) else None
        answer = due_run(due, spec, facts.components, facts.released)  # approval aside
        if answer.skipped:  # nothing to install: nothing to propose
            return None
        approval = spec.updates.approval
        assert approval is not None
        return propose(
            old,
            occ.window,
            occ.start,
            answer.targets,
            parse_duration(approval.before),
            (meta.get("annotations") or {}).get(APPROVE),
            now,
            meta["name"],
        )

    def _run_manifest(
        self,
        body: Mapping[str, Any],
        spec: ManagedSystemSpec,
        start: Start,
        chosen: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """The run that starts (built under the fleet's admission lock: no API call)."""
        manifest = builders.update_run(
            system=body["metadata"]["name"],
            system_uid=body["metadata"]["uid"],
            customer=spec.customer,
            trigger=start.trigger,
            window=window_ref(start.occurrence),
            window_start=start.occurrence.start,
            classes=list(start.classes),
            components=list(assess(spec).components),
            targets=chosen,
            request=start.request,
            template=spec.updates.template,
            ticket=start.ticket,
        )
        manifest["metadata"]["namespace"] = body["metadata"]["namespace"]
        return manifest

    def _create_run(self, body: Mapping[str, Any], start: Start, manifest: dict[str, Any]) -> bool:
        """Create the admitted run (its slot is counted already); False when it existed."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        # Held while the run is in progress: a deletion of the system waits for its end.
        self.kube.set_finalizer("managedsystems", ns, name, builders.RUN_FINALIZER, True)
        if not self.kube.create("updateruns", ns, manifest):
            return False
        self.emit(
            dict(body),
            "Normal",
            "RunStarted",
            f"update run {manifest['metadata']['name']} ({start.trigger.value}) started "
            f"in window {start.occurrence.window}",
        )
        return True

    def _retain_snapshots(
        self, ns: str, name: str, spec: ManagedSystemSpec, runs: list[dict[str, Any]]
    ) -> None:
        """With no run in progress, the system's snapshots beyond ``backup.retain`` go, as
        a successful run prunes them when it ends (``core/history.prunable``, the same rule:
        the newest successful run keeps its own; failed-state snapshots go only once a
        successful run ended ``rollback.keepFailedState`` after they were taken). Runs that
        keep failing, or a history of runs made elsewhere, are bounded too."""
        if self.snapshots is None:
            return
        listed = self.snapshots.of(ns, builders.label_value(name))
        if not listed:
            return
        succeeded = [
            r
            for r in runs
            if (r.get("status") or {}).get("phase") == Phase.SUCCEEDED.value
            and r["status"].get("completionTime")
        ]
        newest = max(succeeded, key=lambda r: r["status"]["completionTime"], default=None)
        keep_run, failed_before = "", NEVER
        if newest is not None:
            keep_run = newest["metadata"]["name"]
            keep = parse_duration(spec.rollback.keep_failed_state)
            failed_before = utc_text(parse_time(newest["status"]["completionTime"]) - keep)
        for snapshot in prunable(listed, keep_run, spec.backup.retain, failed_before):
            log.info("system %s/%s: snapshot %s is beyond the retention", ns, name, snapshot)
            self.kube.delete_snapshot(ns, snapshot)

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
