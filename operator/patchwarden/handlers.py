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
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from patchwarden import metrics
from patchwarden.api.common import GROUP, VERSION
from patchwarden.app import App
from patchwarden.controller import SystemController, blocked_by
from patchwarden.kube import Kube
from patchwarden.reflector import Reflector
from patchwarden.scheduler import TERMINAL
from patchwarden.settings import Settings

log = logging.getLogger(__name__)
KEY = "patchwarden"
CONTROLLER = "controller"
PEERING_POLL_SECONDS = 2.0


def _api(connections: int) -> client.ApiClient:
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)


def ensure_peering(api: client.ApiClient, settings: Settings) -> None:
    """Create the kopf peering object(s) the replicas meet in, if missing."""
    custom = client.CustomObjectsApi(api)
    body = {"apiVersion": "kopf.dev/v1", "metadata": {"name": settings.peering_name}}
    try:
        if settings.namespaces:
            for ns in settings.namespaces:
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


def make_app(ours: Settings) -> App:
    """The shared state; the CLI builds it before kopf starts (and creates the peering)."""
    api = _api(ours.api_workers)
    ensure_peering(api, ours)
    kube = Kube(api, metrics.count_kube_request)

    def emit(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        # Posted by our client in the calling thread (the system workers run outside the
        # per-object context kopf's own posting needs); an Event lost is only logged.
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

    app = App(settings=ours, kube=kube, emit=emit)
    # Know every run before the first scheduling decision; the watch keeps it current.
    for ns in ours.namespaces or [None]:
        for run in app.kube.list_objects("updateruns", ns):
            app.observe_run(run)
        for request in app.kube.list_objects("updaterequests", ns):
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
    """Blocking API calls run in threads; as many as there are API connections."""
    workers = _app(memo).settings.api_workers
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(workers))


@kopf.on.startup()
async def start_controller(memo: Any, **_: Any) -> None:
    """The ManagedSystem watches (reflector.py, one per namespace served) that feed the
    controller's cache, its workers (controller.py) and the peering check that gates them."""
    app = _app(memo)
    controller = SystemController(app.reconcile_system, app.settings.api_workers)
    memo[CONTROLLER] = controller
    metrics.WORK_QUEUE_BACKLOG.set_function(controller.queue.backlog)
    loop = asyncio.get_running_loop()

    def observe(events: list[tuple[str, dict[str, Any]]]) -> None:  # on the event loop
        for kind, body in events:
            controller.observe(kind, body)
            if kind == "DELETED":
                app.stop_waiting(body["metadata"].get("namespace") or "", body["metadata"]["name"])

    namespaces = app.settings.namespaces or (None,)
    # Their own connections: a watch holds one for minutes.
    watching = Kube(_api(len(namespaces) + 1), metrics.count_kube_request)
    memo["reflectors"] = reflectors = [
        Reflector(
            watching,
            "managedsystems",
            ns,
            lambda events: loop.call_soon_threadsafe(observe, events),
        )
        for ns in namespaces
    ]
    for reflector in reflectors:
        reflector.start()
    memo["controller_tasks"] = [
        asyncio.create_task(controller.work(), name=f"system worker {i}")
        for i in range(controller.workers)
    ] + [asyncio.create_task(_watch_peering(app, controller), name="peering check")]


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
    port = _app(memo).settings.metrics_port
    if port:
        memo["metrics_server"] = await metrics.serve(port)


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
    cancellation_timeout=10,
    when=lambda status, **_: status.get("phase") not in TERMINAL,
)
async def run_daemon(
    stopped: kopf.DaemonStopped, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    app = _app(memo)
    assert namespace is not None, "UpdateRuns are namespaced"
    runner = app.runner()
    while not stopped:
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
            await stopped.wait(delay)


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
