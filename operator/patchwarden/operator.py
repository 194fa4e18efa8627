"""The kopf wiring: every ``@kopf`` decorator lives here and hands off in a few lines.

* ManagedSystems: the watches (``runtime/reflector.py``) feed the work queue and
  its workers (``runtime/controller.py``), which call the systems controller
  (``controllers/systems.py``) for each due system;
* each unfinished UpdateRun has a kopf daemon that steps it
  (``controllers/runs.py``) until it ends; after a restart it resumes from the
  recorded phase; every run event keeps the fleet registry (``runtime/fleet.py``)
  current and queues the run's system (its ``lastRun``, its requests' states);
* UpdateRequests are decided by the requests controller
  (``controllers/requests.py``) when they change, and cancel their run when
  deleted before it started.

kopf's finalizer and progress annotations (runs and requests only) live under
``patchwarden.io``; peering (``runtime/peering.py``) makes sure two replicas
never act twice. docs/architecture.md draws the layers and one run's data flow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from patchwarden.api.common import GROUP, VERSION
from patchwarden.api.run import TERMINAL
from patchwarden.controllers.requests import Requests
from patchwarden.controllers.runs import Runner
from patchwarden.controllers.systems import LEDGER_TTL, Systems
from patchwarden.core.builders import LABEL_RUN
from patchwarden.core.run import wakes_its_run
from patchwarden.core.scheduler import Limits
from patchwarden.core.settings import Settings
from patchwarden.runtime import metrics, peering
from patchwarden.runtime.alerts import Gate
from patchwarden.runtime.controller import SystemController
from patchwarden.runtime.events import EventPoster
from patchwarden.runtime.fleet import Fleet, WindowPopulation, shares
from patchwarden.runtime.inventory import KINDS, Bodies, Inventory, Snapshots
from patchwarden.runtime.kube import LIST_PAGE, Kube, api_client
from patchwarden.runtime.notify import Notifier
from patchwarden.runtime.reflector import handoff, watches

log = logging.getLogger(__name__)
KEY = "patchwarden"
CONTROLLER = "controller"
WAKEUPS = "run wake-ups"
STEPPING = "run step locks"
DELETION_STEPS = 10
"""Steps a run being deleted takes in one call of its deletion handler before kopf calls it
again (its progress is the run's status)."""
INVENTORY_WAIT_SECONDS = 30.0
"""The system workers wait at most this long at start for the workloads and claims to be
listed."""
WATCHED_WAIT_SECONDS = 15.0
"""A run waiting for its snapshots or Job looks again after this even if no watch event woke it."""
MEMORIES = "kopf memories"
SEEN = "bodies seen"
RELEASE_SECONDS = 30.0
RELEASE_EVENTS = 500
"""kopf's kept bodies are released once RELEASE_EVENTS run or request events came since the
last release (a start listing a year of runs), else at most RELEASE_SECONDS after one."""
WORKER_IDLE_SECONDS = 0.5
"""kopf ends an object's worker (its task, its event queue, the last event's body) this long
after the object's last event; its default, 5 s, kept one for every run and request a start
listed, all at once (docs/scale.md: a start's peak memory with retained runs). A run's
next event simply starts a new worker."""


@dataclass
class App:
    """One operator process: its settings, client, registry and controllers."""

    settings: Settings
    kube: Kube
    fleet: Fleet
    systems: Systems
    requests: Requests
    systems_cache: dict[tuple[str, str], dict[str, Any]] | None = None
    """The work queue's watch-fed ManagedSystems (the runs read them instead of a GET)."""
    notifier: Notifier | None = None
    """Delivers the runs' and requests' CloudEvents (when a webhook is configured)."""

    def runner(self, watched_wait: float | None = None) -> Runner:
        cache = self.systems_cache

        def cached(ns: str, name: str) -> dict[str, Any] | None:
            return cache.get((ns, name)) if cache is not None else None

        return Runner(
            self.kube,
            self.settings,
            self.systems.emit,
            cached_system=cached,
            watched_wait=watched_wait,
            gate=self.systems.gate,
            snapshot_classes=self.systems.snapshot_classes,
        )


def make_app(ours: Settings) -> App:
    """The shared state; the CLI builds it before kopf starts (and creates the peering)."""
    api = api_client(ours.api_workers + ours.run_threads + 2)  # + the peering check, Events
    peering.ensure_peering(api, ours)
    kube = Kube(api, metrics.count_kube_request)
    emit = EventPoster(kube).emit
    fleet = Fleet(
        Limits(ours.max_concurrent_runs, ours.max_runs_per_customer, ours.max_errors_per_window)
    )
    requests = Requests(kube, emit, fleet)
    systems = Systems(ours, kube, emit, fleet, requests.reconcile_for_system, gate=Gate(ours))
    app = App(ours, kube, fleet, systems, requests, notifier=Notifier(ours, kube.annotate))

    # Know every run before the first scheduling decision; the watch keeps it current.
    # Page by page: the registry keeps a summary of each run, not the listed bodies.
    def know(ns: str | None) -> None:
        for page in kube.list_objects("updateruns", ns):
            for run in page:
                fleet.observe_run(run)
        for page in kube.list_objects("updaterequests", ns):
            for request in page:
                fleet.observe_request(request)

    with ThreadPoolExecutor(ours.api_workers) as pool:
        list(pool.map(know, ours.namespaces or [None]))
    return app


def kopf_memories() -> Any | None:
    """kopf's container of what it keeps for each object, made here (and handed to kopf.run)
    so that :func:`release_bodies` can reach it; None if this kopf keeps it elsewhere."""
    try:
        from kopf._core.reactor.inventory import ResourceMemories
    except ImportError:  # pragma: no cover - a kopf that moved it (a unit test pins ours)
        log.warning("kopf's ResourceMemories not found: bodies of ended runs stay in memory")
        return None
    return ResourceMemories()


def release_bodies(memories: Any) -> int:
    """Drop the last body kopf keeps of each object that has no daemon or timer running.

    kopf keeps it for the daemons and timers to read, but keeps it also for every object
    whose daemon never runs: an ended UpdateRun, a decided UpdateRequest: 7.9 KB a retained
    run (tracemalloc, issue 17). kopf sets it again from the object's next event, before it
    spawns a daemon (there is no await between the two), and a daemon paused by peering is
    spawned again only by an event. Returns how many."""
    released = 0
    for memory in memories.iter_all_memories():
        kept = memory.daemons_memory
        if kept.live_fresh_body is not None and not kept.running_daemons:
            kept.live_fresh_body = None
            released += 1
    return released


def takes_snapshots(body: Mapping[str, Any]) -> bool:
    """Whether a cached ManagedSystem takes VolumeSnapshots (its backups are required)."""
    return ((body.get("spec") or {}).get("backup") or {}).get("required", True) is not False


def _quiet_watch_handlers(record: logging.LogRecord) -> bool:
    """Drop kopf's "Handler '…_event' succeeded." line: it comes with every watch event
    (20,000 lines for a sync of 10,000 systems) and says nothing."""
    message = str(record.msg)
    return not (message.startswith("Handler '") and message.endswith("_event' succeeded."))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    # One peering object for the cluster, also when serving namespaces: kopf's default then
    # is one per namespace, each with its keep-alive PATCH every ~50 s (runtime/peering.py).
    settings.peering.clusterwide = True
    settings.watching.server_timeout = 1500  # a watch reconnect per 25 min, not per 5
    # kopf's first LIST of runs and requests a page at a time, not a year of them in one.
    settings.watching.chunk_size = LIST_PAGE
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
    logging.getLogger("kopf.objects").addFilter(_quiet_watch_handlers)
    if KEY not in memo:  # started by kopf's own CLI rather than `patchwarden run`
        memo[KEY] = make_app(Settings.from_env())


@kopf.on.startup()
async def size_thread_pool(memo: Any, **_: Any) -> None:
    """The runs' blocking API calls (and kopf's sync handlers) run in the default pool,
    a thread for each run the fleet limit allows; the system workers have their own."""
    threads = _app(memo).settings.run_threads
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(threads))


@kopf.on.startup()
async def start_controller(memo: Any, **_: Any) -> None:
    """The watches (runtime/reflector.py) that feed the work queue's cache of ManagedSystems and
    wake waiting runs, the queue's workers (runtime/controller.py) and the peering check that
    gates them."""
    app = _app(memo)
    controller = SystemController(
        app.systems.reconcile,
        app.settings.api_workers,
        ThreadPoolExecutor(app.settings.api_workers, thread_name_prefix="system"),
    )
    memo[CONTROLLER] = controller
    metrics.WORK_QUEUE_BACKLOG.set_function(controller.queue.backlog)
    loop = asyncio.get_running_loop()

    def observe(events: list[tuple[str, dict[str, Any]]]) -> None:  # on the event loop
        for kind, body in events:
            controller.observe(kind, body)
            if kind == "DELETED":
                meta = body["metadata"]
                app.fleet.forget_system(meta.get("namespace") or "", meta["name"])
                app.systems.forget(meta.get("namespace") or "", meta["name"])

    app.systems_cache = controller.systems
    systems_cache = controller.systems
    app.fleet.population = WindowPopulation(lambda: systems_cache.values())
    app.systems.cached_systems = lambda: systems_cache.values()

    def wake_system(key: tuple[str, str]) -> None:  # from a worker thread
        loop.call_soon_threadsafe(controller.poke, *key)

    app.systems.wake = wake_system
    wakeups: dict[tuple[str, str], asyncio.Event] = memo.setdefault(WAKEUPS, {})

    def wake(events: list[tuple[str, dict[str, Any]]]) -> None:  # on the event loop
        for event_type, body in events:
            if not wakes_its_run(event_type, body):
                continue
            meta = body["metadata"]
            run = (meta.get("labels") or {}).get(LABEL_RUN)
            event = wakeups.get((meta.get("namespace") or "", run or ""))
            if event is not None:
                event.set()

    catalog_bodies, class_bodies = Bodies(), Bodies()
    app.systems.catalog_bodies, app.systems.class_bodies = catalog_bodies, class_bodies
    app.systems.inventory = inventory = Inventory()
    app.systems.snapshots = snapshots = Snapshots()

    def catalogs(events: list[tuple[str, dict[str, Any]]]) -> None:  # on the event loop
        # A catalog changed (or was listed at start): the targets of systems with components.
        if catalog_bodies.observe(events):
            app.systems.catalogs_changed()
            controller.requeue_if(lambda body: bool((body.get("spec") or {}).get("components")))

    def classes(events: list[tuple[str, dict[str, Any]]]) -> None:  # on the event loop
        # A class came or went (or a default changed): the systems that take snapshots.
        if class_bodies.observe(events):
            controller.requeue_if(takes_snapshots)

    memo["reflectors"] = reflectors = watches(
        app.settings.namespaces,
        handoff(loop, observe),
        handoff(loop, wake),
        handoff(loop, catalogs),
        handoff(loop, classes),
        inventory,
        lambda refs: loop.call_soon_threadsafe(controller.changed, refs),
        snapshots,
    )
    assert [r.what for r in reflectors[:2]] == ["releasecatalogs", "volumesnapshotclasses"]
    catalog_bodies.synced, class_bodies.synced = reflectors[0].synced, reflectors[1].synced
    for reflector in reflectors:
        reflector.start()
    controller.synced = asyncio.Event()

    async def wait_for_inventory() -> None:
        """The workers start once the workloads and claims are listed (a reconcile before
        would ask the API server, and be done again when the list arrives) and the runs'
        snapshots (the retention counts them), or after INVENTORY_WAIT_SECONDS (a watch
        that cannot list: the reconciles ask the API; once the snapshots are listed,
        every system that takes them is looked at again for its retention)."""
        deadline = loop.time() + INVENTORY_WAIT_SECONDS

        def listed() -> bool:
            return all(inventory.answers(k) for k in KINDS) and snapshots.listed()

        while not listed() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        late = not snapshots.listed()
        if not listed():
            log.warning(
                "workloads, claims or snapshots not listed yet; reconciling systems without them"
            )
        assert controller.synced is not None
        controller.synced.set()
        if late:
            while not snapshots.listed():
                await asyncio.sleep(1.0)
            log.info("the runs' snapshots are listed: their systems' retention is looked at")
            controller.requeue_if(takes_snapshots)

    async def refresh_waves() -> None:
        """Held-back systems sleep: while a run began or ended since the waves' ledger was
        built, build it again (every LEDGER_TTL seconds at most) to wake those it lets go."""
        while True:
            await asyncio.sleep(LEDGER_TTL)
            if controller.active.is_set() and app.systems.ledger_stale():
                await loop.run_in_executor(controller.executor, app.systems.refresh_ledger)

    memo["controller_tasks"] = [
        asyncio.create_task(controller.work(), name=f"system worker {i}")
        for i in range(controller.workers)
    ] + [
        asyncio.create_task(refresh_waves(), name="waves ledger"),
        asyncio.create_task(wait_for_inventory(), name="inventory sync"),
        asyncio.create_task(
            peering.watch(app.kube, app.settings, controller.set_active), name="peering check"
        ),
    ]
    if memo.get(MEMORIES) is not None:
        memo["controller_tasks"].append(
            asyncio.create_task(release_kept(memo), name="kopf bodies release")
        )


@kopf.on.cleanup()
async def stop_controller(memo: Any, **_: Any) -> None:
    for reflector in memo.get("reflectors", []):
        reflector.stop()
    notifier = _app(memo).notifier
    if notifier is not None:
        await asyncio.get_running_loop().run_in_executor(None, notifier.stop)
    for task in memo.get("controller_tasks", []):
        task.cancel()


async def release_kept(memo: Any) -> None:
    """While runs or requests have events, release the bodies kopf keeps of them (see
    RELEASE_EVENTS; nothing while the fleet is at rest but a look each second)."""
    kept: Kept = memo[SEEN]
    since = 0.0
    while True:
        await asyncio.sleep(1.0)
        since += 1.0
        if kept.events >= RELEASE_EVENTS or (kept.events and since >= RELEASE_SECONDS):
            kept.events, since = 0, 0.0
            released = release_bodies(memo[MEMORIES])
            log.debug("released %d bodies kept by kopf", released)


@dataclass
class Kept:
    """Run and request events since kopf's kept bodies were last released."""

    events: int = 0

    def seen(self) -> None:
        # From the event loop and from kopf's threads for sync handlers: a lost count
        # only delays a release.
        self.events += 1


def _seen(memo: Any) -> None:
    """A run or request had an event: kopf keeps its body (see :func:`release_kept`)."""
    kept = memo.get(SEEN)
    if kept is not None:
        kept.seen()


def _controller(memo: Any) -> SystemController:
    controller = memo[CONTROLLER]
    assert isinstance(controller, SystemController)
    return controller


@kopf.on.startup()
async def serve_metrics(memo: Any, **_: Any) -> None:
    settings = _app(memo).settings

    def ready() -> str | None:
        """Serving once the ManagedSystems are listed (the runs were listed before kopf
        started) and the workers started (the workloads and claims listed): the first
        decision is possible."""
        listing = [
            r.what
            for r in memo.get("reflectors", [])
            if r.what.startswith("managedsystems") and not r.synced.is_set()
        ]
        if listing:
            return f"listing {', '.join(listing)}"
        synced = memo[CONTROLLER].synced if CONTROLLER in memo else None
        if synced is None or not synced.is_set():
            return "listing the workloads and claims"
        return None

    if settings.metrics_port:
        memo["metrics_server"] = await metrics.serve(
            settings.metrics_port, settings.metrics_address or None, ready
        )


@kopf.on.cleanup()
async def stop_metrics(memo: Any, **_: Any) -> None:
    server = memo.get("metrics_server")
    if server is not None:
        await server.cleanup()


def _app(memo: Any) -> App:
    app = memo[KEY]
    assert isinstance(app, App)
    return app


@kopf.on.event(GROUP, VERSION, "updateruns")
async def run_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """Keep the fleet registry (the limits, lastRun and the requests' states read it) in
    step with the cluster: a run that is new, started or ended queues its system (its
    lastRun, its request's state); a run in progress that ended or went wakes the systems
    waiting for its slot."""
    app, controller = _app(memo), _controller(memo)
    ns, name = body.metadata.namespace or "", body.metadata.name or ""
    _seen(memo)
    if app.notifier is not None:
        if kwargs.get("type") == "DELETED":
            app.notifier.forget("updateruns", ns, name)
        else:
            app.notifier.observe("updateruns", body)
    if kwargs.get("type") == "DELETED":
        _step_locks(memo).pop((ns, name), None)
        gone = app.fleet.forget_run(ns, name)
        news = freed = gone is not None and (gone.get("status") or {}).get("phase") not in TERMINAL
    elif body.get("spec"):
        news, freed = app.fleet.observe_run(dict(body))
    else:
        return
    if news:
        app.systems.runs_changed()
        controller.poke(ns, body.spec["systemRef"]["name"])
        if (body.get("status") or {}).get("phase") == "Failed":
            _wake_if_halted(app, controller, body)
    if freed:
        for key in app.fleet.to_wake():
            controller.poke(*key)


def _wake_if_halted(app: App, controller: SystemController, run: Mapping[str, Any]) -> None:
    """A run failed: if that spent its window's error budget, every system sharing the
    window says so now (``UpdatesHalted``), not at its next look."""
    window = (run.get("spec") or {}).get("window") or {}
    span = (str(window.get("start") or ""), str(window.get("end") or ""))
    if not span[0] or app.fleet.halted(span) is None:
        return
    for key, body in list(controller.systems.items()):
        if shares(body, span):
            controller.poke(*key)


@kopf.daemon(
    GROUP,
    VERSION,
    "updateruns",
    id="run",
    # Stopped (the operator exits, or peering pauses it), a run finishes its step and returns;
    # cancelled only if it has not within 5 s (kopf's "Daemon 'run' is cancelled" warning).
    cancellation_backoff=5,
    cancellation_timeout=10,
    when=lambda status, **_: status.get("phase") not in TERMINAL,
)
async def run_daemon(
    stopped: kopf.DaemonStopped, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    """Step the run until it ends. A step that returns 0 goes on with the run as it just
    wrote it; after a wait the run is read afresh. A wait ends early when the watch sees one
    of the run's snapshots or its Job change."""
    app = _app(memo)
    assert namespace is not None, "UpdateRuns are namespaced"
    runner = app.runner(watched_wait=WATCHED_WAIT_SECONDS)
    key, wake = (namespace, name), asyncio.Event()
    wakeups: dict[tuple[str, str], asyncio.Event] = memo.setdefault(WAKEUPS, {})
    wakeups[key] = wake
    lock = _step_locks(memo).setdefault(key, asyncio.Lock())
    try:
        run: dict[str, Any] | None = None
        while not stopped:
            wake.clear()  # before the read: a change after it wakes the wait below
            if run is None:
                run = await asyncio.to_thread(app.kube.get, "updateruns", namespace, name)
                if run is None:
                    return
            if run["metadata"].get("deletionTimestamp"):
                return  # the deletion handler (run_deleted) takes the run to its end
            try:
                async with lock:
                    delay = await asyncio.to_thread(runner.step, run)
            except ApiException as exc:
                log.warning(
                    "run %s/%s: API error %s, retrying: %s", namespace, name, exc.status, exc.reason
                )
                delay = app.settings.run_poll_seconds
            if delay is None:
                _controller(memo).poke(namespace, run["spec"]["systemRef"]["name"])
                return
            if delay:
                run = None
                await _pause(stopped, wake, delay)
    finally:
        if wakeups.get(key) is wake:
            del wakeups[key]


@kopf.on.delete(
    GROUP,
    VERSION,
    "updateruns",
    id="stop",
    when=lambda status, **_: status.get("phase") not in TERMINAL,
)
async def run_deleted(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """A run in progress that is deleted (by hand, or with its system in a foreground
    deletion) is taken to its end first: rolled back if the workload may have changed,
    else cancelled. kopf's finalizer holds the run until this returns; the daemon has
    stopped (the lock waits for its step in flight)."""
    app = _app(memo)
    assert namespace is not None, "UpdateRuns are namespaced"
    runner = app.runner(watched_wait=WATCHED_WAIT_SECONDS)
    lock = _step_locks(memo).setdefault((namespace, name), asyncio.Lock())
    for _step in range(DELETION_STEPS):
        body = await asyncio.to_thread(app.kube.get, "updateruns", namespace, name)
        if body is None:
            return
        try:
            async with lock:
                delay = await asyncio.to_thread(runner.step, body)
        except ApiException as exc:
            raise kopf.TemporaryError(
                f"run {name}: API error {exc.status}: {exc.reason}",
                delay=app.settings.run_poll_seconds,
            ) from exc
        if delay is None:
            _controller(memo).poke(namespace, body["spec"]["systemRef"]["name"])
            return
        if delay:
            raise kopf.TemporaryError(f"run {name} is stopping", delay=delay)
    raise kopf.TemporaryError(f"run {name} is stopping", delay=0.1)


def _step_locks(memo: Any) -> dict[tuple[str, str], asyncio.Lock]:
    """One lock per run: its daemon and its deletion handler never step it at once."""
    locks: dict[tuple[str, str], asyncio.Lock] = memo.setdefault(STEPPING, {})
    return locks


async def _pause(stopped: kopf.DaemonStopped, wake: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less when the daemon is stopped or ``wake`` is set."""
    waits = {asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(wake.wait())}
    _, pending = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


@kopf.on.event(GROUP, VERSION, "updaterequests")
def request_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """Keep the fleet registry of requests (each system's reconcile reads it) current, and
    notify a request's decision."""
    app, ns, name = _app(memo), body.metadata.namespace or "", body.metadata.name or ""
    _seen(memo)
    if kwargs.get("type") == "DELETED":
        app.fleet.forget_request(ns, name)
        if app.notifier is not None:
            app.notifier.forget("updaterequests", ns, name)
    elif body.get("spec"):
        app.fleet.observe_request(dict(body))
        if app.notifier is not None:
            app.notifier.observe("updaterequests", body)


@kopf.on.create(GROUP, VERSION, "updaterequests")
@kopf.on.update(GROUP, VERSION, "updaterequests", field="spec")
@kopf.on.resume(GROUP, VERSION, "updaterequests")
async def request_changed(body: kopf.Body, memo: Any, **_: Any) -> None:
    snapshot = dict(body)
    await asyncio.to_thread(_app(memo).requests.reconcile_alone, snapshot)
    _controller(memo).poke(body.metadata.namespace, body.spec["systemRef"]["name"])


@kopf.timer(
    GROUP,
    VERSION,
    "updaterequests",
    interval=60,
    idle=30,
    when=lambda status, **_: status.get("state") in (None, "Pending", "Rejected"),
)
async def request_resync(body: kopf.Body, memo: Any, **_: Any) -> None:
    """A request rejected for a missing system is accepted once the system appears."""
    snapshot = dict(body)
    await asyncio.to_thread(_app(memo).requests.reconcile_alone, snapshot)


@kopf.on.delete(GROUP, VERSION, "updaterequests", optional=True)
async def request_deleted(body: kopf.Body, memo: Any, **_: Any) -> None:
    snapshot = dict(body)
    await asyncio.to_thread(_app(memo).requests.cancel, snapshot)
    metrics.observe_request(body.metadata.namespace or "", body.metadata.name or "", None)


def run(settings: Settings, verbose: bool = False) -> None:
    """Run the operator in the foreground until it is stopped."""
    kopf.configure(verbose=verbose)
    memo = kopf.Memo()
    memo[KEY] = make_app(settings)
    # Shared by every object's copy of the memo: set from their handlers.
    memo[MEMORIES], memo[SEEN] = kopf_memories(), Kept()
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=False,
        priority=settings.priority,
        identity=settings.identity,  # type: ignore[arg-type]
        peering_name=settings.peering_name,
        memo=memo,
        memories=memo[MEMORIES],
    )
