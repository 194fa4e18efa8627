"""The kopf wiring: every ``@kopf`` decorator lives here and hands off in a few lines.

* ManagedSystems: a watch of our own (``reflector.py``) feeds ``controller.py``
  (a cache, a delay queue and ``PATCHWARDEN_API_WORKERS`` workers): each
  reconcile writes the status and conditions, decides the system's requests,
  starts its update run when one is due, and says when to look again (the next
  window start, the resync interval); a spec change or a finished run queues
  the system at once;
* each unfinished UpdateRun has a daemon that drives it step by step
  (``runner.py``); after a restart it resumes from the recorded phase;
* UpdateRequests are decided when they change, and cancel their run when
  deleted before it started.

kopf's finalizer and progress annotations (runs and requests only) live under
``patchwarden.io``; peering (``settings.peering_name``) makes sure two
replicas never act twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from patchwarden import metrics
from patchwarden.api.common import GROUP, VERSION
from patchwarden.app import App
from patchwarden.builders import LABEL_RUN
from patchwarden.controller import SystemController, blocked_by
from patchwarden.kube import SNAPSHOTS, Kube
from patchwarden.reflector import Deliver, Reflector, lister
from patchwarden.scheduler import TERMINAL
from patchwarden.settings import Settings

log = logging.getLogger(__name__)
KEY = "patchwarden"
CONTROLLER = "controller"
PEERING_POLL_SECONDS = 2.0
WAKEUPS = "run wake-ups"
WATCHED_WAIT_SECONDS = 15.0
"""A run waiting for its snapshots or Job looks again after this even if no watch event woke it."""


def _api(connections: int) -> client.ApiClient:
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)


def ensure_peering(api: client.ApiClient, settings: Settings) -> None:
    """Create the kopf peering object(s) the replicas meet in, if missing (one per
    namespace served, in parallel: a replica serving 50 namespaces starts at once)."""
    custom = client.CustomObjectsApi(api)
    body = {"apiVersion": "kopf.dev/v1", "metadata": {"name": settings.peering_name}}

    def create(ns: str | None) -> None:
        try:
            if ns is not None:
                custom.create_namespaced_custom_object(
                    "kopf.dev", "v1", ns, "kopfpeerings", {**body, "kind": "KopfPeering"}
                )
            else:
                custom.create_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", {**body, "kind": "ClusterKopfPeering"}
                )
        except ApiException as exc:
            if exc.status != 409:
                raise

    with ThreadPoolExecutor(settings.api_workers) as pool:
        list(pool.map(create, settings.namespaces or [None]))


def make_app(ours: Settings) -> App:
    """The shared state; the CLI builds it before kopf starts (and creates the peering)."""
    api = _api(ours.api_workers + ours.run_threads + 2)  # + the peering check, Events
    ensure_peering(api, ours)
    kube = Kube(api, metrics.count_kube_request)

    # Events are posted in the order made, by one thread of their own: a step never waits
    # for one (they are on no run's critical path), and one lost is only logged.
    poster = ThreadPoolExecutor(1, thread_name_prefix="events")

    def post(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            kube.post_event(body, type_, reason, message)
        except Exception as exc:  # an API error or a dropped connection: never fail a step
            log.warning(
                "event %s about %s/%s not posted: %s",
                reason,
                body["metadata"].get("namespace"),
                body["metadata"].get("name"),
                getattr(exc, "reason", None) or exc,
            )

    def emit(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        about = {k: body.get(k) for k in ("apiVersion", "kind")}
        poster.submit(post, {**about, "metadata": dict(body["metadata"])}, type_, reason, message)

    app = App(settings=ours, kube=kube, emit=emit)
    # Know every run before the first scheduling decision; the watch keeps it current.
    namespaces = ours.namespaces or [None]
    with ThreadPoolExecutor(ours.api_workers) as pool:
        runs = pool.map(lambda ns: app.kube.list_objects("updateruns", ns), namespaces)
        requests = pool.map(lambda ns: app.kube.list_objects("updaterequests", ns), namespaces)
        for run in (r for found in runs for r in found):
            app.observe_run(run)
        for request in (r for found in requests for r in found):
            app.observe_request(request)
    return app


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
    settings.watching.server_timeout = 300
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
    """The watches (reflector.py) that feed the controller's cache of ManagedSystems and
    wake waiting runs, the controller's workers (controller.py) and the peering check that
    gates them."""
    app = _app(memo)
    controller = SystemController(
        app.reconcile_system,
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
                app.stop_waiting(body["metadata"].get("namespace") or "", body["metadata"]["name"])

    app.system_cache = controller.systems
    wakeups: dict[tuple[str, str], asyncio.Event] = memo.setdefault(WAKEUPS, {})

    def wake(events: list[tuple[str, dict[str, Any]]]) -> None:  # on the event loop
        for _, body in events:
            meta = body["metadata"]
            run = (meta.get("labels") or {}).get(LABEL_RUN)
            event = wakeups.get((meta.get("namespace") or "", run or ""))
            if event is not None:
                event.set()

    def feed(fn: Callable[[list[tuple[str, dict[str, Any]]]], None]) -> Deliver:
        def deliver(events: list[tuple[str, dict[str, Any]]]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the operator exits
                loop.call_soon_threadsafe(fn, events)

        return deliver

    memo["reflectors"] = reflectors = _watches(app.settings, feed(observe), feed(wake))
    for reflector in reflectors:
        reflector.start()
    memo["controller_tasks"] = [
        asyncio.create_task(controller.work(), name=f"system worker {i}")
        for i in range(controller.workers)
    ] + [asyncio.create_task(_watch_peering(app, controller), name="peering check")]


def _watches(settings: Settings, systems: Deliver, run_objects: Deliver) -> list[Reflector]:
    """Per namespace served: ManagedSystems (to ``systems``), and the runs' snapshots and
    Jobs (to ``run_objects``: a change wakes the run that waits for it)."""
    namespaces = settings.namespaces or (None,)
    # Their own connections: a watch holds one for minutes.
    kube = Kube(_api(3 * len(namespaces) + 1), metrics.count_kube_request)
    found = []
    for ns in namespaces:
        where = ns or "every namespace"
        found += [
            Reflector(lister(kube, "managedsystems", ns), f"managedsystems in {where}", systems),
            Reflector(
                lister(kube, "volumesnapshots", ns, SNAPSHOTS, LABEL_RUN),
                f"volumesnapshots in {where}",
                run_objects,
            ),
            Reflector(
                lister(kube, "jobs", ns, ("batch", "v1"), LABEL_RUN),
                f"jobs in {where}",
                run_objects,
            ),
        ]
    return found


async def _watch_peering(app: App, controller: SystemController) -> None:
    """Let the workers run only while no live peer outranks this replica (kopf's rule)."""
    s = app.settings
    while True:
        try:
            peers = await asyncio.to_thread(app.kube.peers, s.peering_name, s.namespaces)
            blockers = blocked_by(peers, s.identity, s.priority, datetime.now(UTC))
            controller.set_active(
                not blockers,
                f"peers {', '.join(blockers)} outrank this replica"
                if blockers
                else "this replica holds the peering",
            )
        except Exception as exc:  # an API error or a dropped connection: keep the last answer
            log.warning("peering check failed, trying again: %s", getattr(exc, "reason", exc))
        await asyncio.sleep(PEERING_POLL_SECONDS)


@kopf.on.cleanup()
async def stop_controller(memo: Any, **_: Any) -> None:
    for reflector in memo.get("reflectors", []):
        reflector.stop()
    for task in memo.get("controller_tasks", []):
        task.cancel()


def _controller(memo: Any) -> SystemController:
    controller = memo[CONTROLLER]
    assert isinstance(controller, SystemController)
    return controller


@kopf.on.startup()
async def serve_metrics(memo: Any, **_: Any) -> None:
    settings = _app(memo).settings
    if settings.metrics_port:
        memo["metrics_server"] = await metrics.serve(
            settings.metrics_port, settings.metrics_address or None
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
    """Keep the App's registry of runs (which the fleet limits read) in step with the cluster;
    when a run in progress ends or goes, wake the systems waiting for its slot."""
    app = _app(memo)
    if kwargs.get("type") == "DELETED":
        freed = app.forget_run(body.metadata.namespace or "", body.metadata.name or "")
    elif body.get("spec"):
        freed = app.observe_run(dict(body))
    else:
        return
    if freed:
        for key in app.waiters_to_wake():
            _controller(memo).poke(*key)


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
    try:
        run: dict[str, Any] | None = None
        while not stopped:
            wake.clear()  # before the read: a change after it wakes the wait below
            if run is None:
                run = await asyncio.to_thread(app.kube.get, "updateruns", namespace, name)
                if run is None:
                    return
            try:
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


async def _pause(stopped: kopf.DaemonStopped, wake: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less when the daemon is stopped or ``wake`` is set."""
    waits = {asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(wake.wait())}
    _, pending = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


@kopf.on.event(GROUP, VERSION, "updaterequests")
def request_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """Keep the App's registry of requests (each system's reconcile reads it) current."""
    if kwargs.get("type") == "DELETED":
        _app(memo).forget_request(body.metadata.namespace or "", body.metadata.name or "")
    elif body.get("spec"):
        _app(memo).observe_request(dict(body))


@kopf.on.create(GROUP, VERSION, "updaterequests")
@kopf.on.update(GROUP, VERSION, "updaterequests", field="spec")
@kopf.on.resume(GROUP, VERSION, "updaterequests")
async def request_changed(body: kopf.Body, memo: Any, **_: Any) -> None:
    snapshot = dict(body)
    await asyncio.to_thread(_app(memo).reconcile_request_alone, snapshot)
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
    await asyncio.to_thread(_app(memo).reconcile_request_alone, snapshot)


@kopf.on.delete(GROUP, VERSION, "updaterequests", optional=True)
async def request_deleted(body: kopf.Body, memo: Any, **_: Any) -> None:
    snapshot = dict(body)
    await asyncio.to_thread(_app(memo).cancel_request, snapshot)
    metrics.observe_request(body.metadata.namespace or "", body.metadata.name or "", None)
