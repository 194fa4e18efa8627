"""The runtime object: everything that runs beside kopf, built in one place, with start/stop.

kopf runs the UpdateRuns (a daemon each) and the UpdateRequests (event handlers); the
ManagedSystems are reconciled by the work queue's workers (``runtime/controller.py``)
that the watches (``runtime/reflector.py``) feed. :class:`Runtime` owns all of it:
the client, the fleet registry, the read model (``runtime/view.py``), the controllers,
the watches, the workers, the waves' ledger, the peering check, the metrics server,
the notifier and the release of kopf's kept bodies. ``operator.py`` holds the kopf
decorators and hands off to it. docs/architecture.md draws the threads and tasks.

Nothing reads the read model before every watch has listed once: the system workers,
the ledger and the run daemons wait for :attr:`Runtime.synced`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from patchwarden.api.run import TERMINAL
from patchwarden.controllers.requests import Requests
from patchwarden.controllers.runs import Runner
from patchwarden.controllers.systems import Systems
from patchwarden.core.builders import LABEL_RUN
from patchwarden.core.run import wakes_its_run
from patchwarden.core.scheduler import Limits
from patchwarden.core.settings import Settings
from patchwarden.kopf_memory import Kept, kopf_memories, release_bodies
from patchwarden.runtime import metrics, peering
from patchwarden.runtime.alerts import Gate
from patchwarden.runtime.clock import Clock
from patchwarden.runtime.controller import Key, SystemController
from patchwarden.runtime.events import EventPoster
from patchwarden.runtime.fleet import Fleet, WindowPopulation, shares
from patchwarden.runtime.kube import Kube, api_client
from patchwarden.runtime.notify import NAMESPACE_SECRET, Notifier, target_of
from patchwarden.runtime.queue import DelayQueue
from patchwarden.runtime.reflector import Reflector, handoff, watches
from patchwarden.runtime.view import View

log = logging.getLogger(__name__)
Events = list[tuple[str, dict[str, Any]]]

WATCHED_WAIT_SECONDS = 15.0
"""A run waiting for its snapshots or Job looks again after this even if no watch event woke it."""
LEDGER_PACE_SECONDS = 5.0
"""The waves' ledger is built again at most this often while the fleet keeps changing (the
changes meanwhile are taken by the next build)."""
LISTING_LOG_SECONDS = 30.0
"""While the watches have not all listed, what they still list is logged this often."""


def takes_snapshots(body: Mapping[str, Any]) -> bool:
    """Whether a cached ManagedSystem takes VolumeSnapshots (its backups are required)."""
    return ((body.get("spec") or {}).get("backup") or {}).get("required", True) is not False


def _needs(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a system the waves' ledger counts (its wave, its components, its versions)."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    spec = body.get("spec") or {}
    return meta.get("labels"), spec.get("components"), status.get("components")


class Runtime:
    """One operator process: see the module."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock = clock or Clock()
        api = api_client(settings.api_workers + settings.run_threads + 2)  # + peering, Events
        peering.ensure_peering(api, settings)
        self.kube = Kube(api, metrics.count_kube_request)
        self.emit = EventPoster(self.kube).emit
        cache: dict[Key, dict[str, Any]] = {}
        self.view = View(cache)
        self.population = WindowPopulation()
        self.fleet = Fleet(
            Limits(
                settings.max_concurrent_runs,
                settings.max_runs_per_customer,
                settings.max_errors_per_window,
            ),
            population=self.population,
        )
        self.requests = Requests(self.kube, self.emit, self.fleet, clock.now)
        self.gate = Gate(settings, clock.monotonic)
        self.systems = Systems(
            settings,
            self.kube,
            self.emit,
            self.fleet,
            self.requests.reconcile_for_system,
            self.view,
            clock.now,
            gate=self.gate,
            wake=self._wake_system,
        )
        self.controller = SystemController(
            self.systems.reconcile,
            settings.api_workers,
            ThreadPoolExecutor(settings.api_workers, thread_name_prefix="system"),
            queue=DelayQueue(clock.monotonic),
            systems=cache,
        )
        self.notifier = Notifier(
            settings,
            self.kube.annotate,
            clock.monotonic,
            clock.now,
            namespace_target=lambda ns: target_of(self.kube.secret(ns, NAMESPACE_SECRET)),
        )
        self.systems.notice = lambda body: self.notifier.observe("managedsystems", body)
        self.memories = kopf_memories()
        self.kept = Kept()
        self.wakeups: dict[Key, asyncio.Event] = {}
        """A run's daemon waits on its event; a watch event of its snapshots or Job sets it."""
        self.step_locks: dict[Key, asyncio.Lock] = {}
        """One lock per run: its daemon and its deletion handler never step it at once."""
        self.synced = asyncio.Event()
        self.ledger_dirty = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.reflectors: list[Reflector] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.metrics_server: web.AppRunner | None = None

    def know_the_fleet(self) -> None:
        """List every run and request before the first decision (the watches of kopf keep
        them current). Page by page: the registry keeps a summary of each run."""

        def know(ns: str | None) -> None:
            for page in self.kube.list_objects("updateruns", ns):
                for run in page:
                    self.fleet.observe_run(run)
            for page in self.kube.list_objects("updaterequests", ns):
                for request in page:
                    self.fleet.observe_request(request)

        with ThreadPoolExecutor(self.settings.api_workers) as pool:
            list(pool.map(know, self.settings.namespaces or [None]))

    def runner(self) -> Runner:
        cache = self.controller.systems
        return Runner(
            self.kube,
            self.settings,
            self.emit,
            self.clock.now,
            system_of=lambda ns, name: cache.get((ns, name)),
            watched_wait=WATCHED_WAIT_SECONDS,
            gate=self.gate,
            snapshot_classes=self.view.snapshot_classes,
        )

    # ---- start and stop ----------------------------------------------------------------
    async def start(self) -> None:
        """On kopf's loop: the blocking-call pool, the watches, the workers (once the
        watches listed), the ledger, the peering check, the metrics server."""
        loop = self.loop = asyncio.get_running_loop()
        # The runs' blocking API calls (and kopf's sync handlers) run in the default pool, a
        # thread for each run the fleet limit allows; the system workers have their own.
        loop.set_default_executor(ThreadPoolExecutor(self.settings.run_threads))
        metrics.WORK_QUEUE_BACKLOG.set_function(self.controller.queue.backlog)
        self.controller.synced = self.synced
        self.reflectors = watches(
            self.settings.namespaces,
            handoff(loop, self._systems_changed),
            handoff(loop, self._run_objects_changed),
            handoff(loop, self._catalogs_changed),
            handoff(loop, self._classes_changed),
            self.view.inventory,
            lambda refs: loop.call_soon_threadsafe(self.controller.changed, refs),
            self.view.snapshots,
        )
        assert [r.what for r in self.reflectors[:2]] == ["releasecatalogs", "volumesnapshotclasses"]
        self.view.catalog_bodies.synced = self.reflectors[0].synced
        self.view.class_bodies.synced = self.reflectors[1].synced
        for reflector in self.reflectors:
            reflector.start()
        self.tasks = [
            asyncio.create_task(self.controller.work(), name=f"system worker {i}")
            for i in range(self.controller.workers)
        ]
        self.tasks += [
            asyncio.create_task(self._wait_for_sync(), name="watches listed"),
            asyncio.create_task(self._keep_ledger(), name="waves ledger"),
            asyncio.create_task(
                peering.watch(self.kube, self.settings, self.controller.set_active, self.clock.now),
                name="peering check",
            ),
        ]
        if self.memories is not None:
            self.tasks.append(asyncio.create_task(self._release_kept(), name="kopf bodies"))
        if self.settings.metrics_port:
            self.metrics_server = await metrics.serve(
                self.settings.metrics_port, self.settings.metrics_address or None, self.ready
            )

    async def stop(self) -> None:
        for reflector in self.reflectors:
            reflector.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.notifier.stop)
        for task in self.tasks:
            task.cancel()
        if self.metrics_server is not None:
            await self.metrics_server.cleanup()

    def listing(self) -> list[str]:
        """The watches that have not listed yet (each once is enough); the read model is
        fed by them, and is asked too in case one of its parts has no watch."""
        return [r.what for r in self.reflectors if not r.synced.is_set()] or self.view.listing()

    def ready(self) -> str | None:
        """Why the operator cannot decide yet (None: it can): the watches have not all
        listed (the runs were listed before kopf started)."""
        if not self.synced.is_set():
            return "listing " + (", ".join(self.listing()) or "…")
        return None

    async def _wait_for_sync(self) -> None:
        """Set :attr:`synced` once every watch has listed (client-go's WaitForCacheSync);
        until then say, now and then, what is still listing."""
        waited = 0.0
        while self.listing():
            await asyncio.sleep(0.05)
            waited += 0.05
            if waited >= LISTING_LOG_SECONDS:
                log.warning("still listing %s: no system is reconciled before", self.listing())
                waited = 0.0
        self.synced.set()
        self.ledger_dirty.set()

    async def _keep_ledger(self) -> None:
        """Build the waves' ledger again after the fleet changed (a run began or ended, a
        catalog or a system's needs changed): one build at a time, however many changes
        came meanwhile; it wakes the held-back systems whose release moved on."""
        await self.synced.wait()
        loop = asyncio.get_running_loop()
        while True:
            await self.ledger_dirty.wait()
            self.ledger_dirty.clear()
            began = loop.time()
            await loop.run_in_executor(self.controller.executor, self.systems.refresh_ledger)
            # Paced: a build over 10,000 systems takes 0.25 s (docs/scale.md) and a storm
            # of runs changes the fleet many times a second.
            await asyncio.sleep(max(0.0, LEDGER_PACE_SECONDS - (loop.time() - began)))

    async def _release_kept(self) -> None:
        """While runs or requests have events, release the bodies kopf keeps of them
        (``kopf_memory.py``; nothing while the fleet is at rest but a look each second)."""
        while True:
            await asyncio.sleep(1.0)
            if self.kept.due(1.0):
                log.debug("released %d bodies kept by kopf", release_bodies(self.memories))

    # ---- the watches' events (on the event loop) ---------------------------------------
    def _systems_changed(self, events: Events) -> None:
        cache = self.controller.systems
        for kind, body in events:
            meta = body["metadata"]
            key = (meta.get("namespace") or "", meta["name"])
            old = cache.get(key)
            self.controller.observe(kind, body)
            self.population.observe(key, None if kind == "DELETED" else body)
            if kind == "DELETED":
                self.fleet.forget_system(*key)
                self.systems.forget(*key)
            if old is None or kind == "DELETED" or _needs(old) != _needs(body):
                self.ledger_dirty.set()

    def _run_objects_changed(self, events: Events) -> None:
        for event_type, body in events:
            if not wakes_its_run(event_type, body):
                continue
            meta = body["metadata"]
            run = (meta.get("labels") or {}).get(LABEL_RUN)
            event = self.wakeups.get((meta.get("namespace") or "", run or ""))
            if event is not None:
                event.set()

    def _catalogs_changed(self, events: Events) -> None:
        # A catalog changed (or was listed at start): the targets of systems with components.
        specs = self.view.catalog_bodies.generations()
        if self.view.catalog_bodies.observe(events):
            self.ledger_dirty.set()  # its rollout's record, too: a halt lifted by hand
            if self.view.catalog_bodies.generations() != specs:
                self.controller.requeue_if(lambda b: bool((b.get("spec") or {}).get("components")))

    def _classes_changed(self, events: Events) -> None:
        # A class came or went (or a default changed): the systems that take snapshots.
        if self.view.class_bodies.observe(events):
            self.controller.requeue_if(takes_snapshots)

    def _wake_system(self, key: Key) -> None:  # from a worker thread
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.controller.poke, *key)

    # ---- kopf's events of runs and requests (on the event loop) ------------------------
    def run_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Keep the fleet registry (the limits, lastRun and the requests' states read it) in
        step with the cluster: a run that is new, started or ended queues its system (its
        lastRun, its request's state) and the ledger's build; a run in progress that ended
        or went wakes the systems waiting for its slot."""
        meta = body["metadata"]
        ns, name = meta.get("namespace") or "", meta["name"]
        self.kept.seen()
        if event_type == "DELETED":
            self.notifier.forget("updateruns", ns, name)
            self.step_locks.pop((ns, name), None)
            gone = self.fleet.forget_run(ns, name)
            news = freed = (
                gone is not None and (gone.get("status") or {}).get("phase") not in TERMINAL
            )
        elif body.get("spec"):
            self.notifier.observe("updateruns", body)
            news, freed = self.fleet.observe_run(dict(body))
        else:
            return
        if news:
            self.ledger_dirty.set()
            self.controller.poke(ns, body["spec"]["systemRef"]["name"])
            if (body.get("status") or {}).get("phase") == "Failed":
                self._wake_if_halted(body)
        if freed:
            for key in self.fleet.to_wake():
                self.controller.poke(*key)

    def _wake_if_halted(self, run: Mapping[str, Any]) -> None:
        """A run failed: if that spent its window's error budget, every system sharing the
        window says so now (``UpdatesHalted``), not at its next look."""
        window = (run.get("spec") or {}).get("window") or {}
        span = (str(window.get("start") or ""), str(window.get("end") or ""))
        if not span[0] or self.fleet.halted(span) is None:
            return
        for key, body in list(self.controller.systems.items()):
            if shares(body, span):
                self.controller.poke(*key)

    def request_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Keep the fleet registry of requests (each system's reconcile reads it) current,
        and notify a request's decision."""
        meta = body["metadata"]
        ns, name = meta.get("namespace") or "", meta["name"]
        self.kept.seen()
        if event_type == "DELETED":
            self.fleet.forget_request(ns, name)
            self.notifier.forget("updaterequests", ns, name)
        elif body.get("spec"):
            self.fleet.observe_request(dict(body))
            self.notifier.observe("updaterequests", body)

    def step_lock(self, key: Key) -> asyncio.Lock:
        return self.step_locks.setdefault(key, asyncio.Lock())
