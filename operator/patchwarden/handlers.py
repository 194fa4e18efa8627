"""The kopf wiring: every ``@kopf`` decorator lives here and hands off in a few lines.

* each ManagedSystem has a daemon: it reconciles the system (status,
  conditions, its requests) and starts its update run when one is due, then
  sleeps until the next window start, the resync interval, or a change;
* each unfinished UpdateRun has a daemon that drives it step by step
  (``runner.py``); after a restart it resumes from the recorded phase;
* UpdateRequests are decided when they change, and cancel their run when
  deleted before it started.

kopf's finalizer and progress annotations live under ``patchwarden.io``;
peering (``settings.peering_name``) makes sure two replicas never act twice.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from patchwarden import metrics
from patchwarden.api.common import GROUP, VERSION
from patchwarden.app import App
from patchwarden.kube import Kube
from patchwarden.scheduler import TERMINAL
from patchwarden.settings import Settings

log = logging.getLogger(__name__)
KEY = "patchwarden"
_pokes: dict[tuple[str, str], asyncio.Event] = {}


def _api(connections: int) -> client.ApiClient:
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)


def _emit(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """Post a Kubernetes Event about ``body`` (any object with apiVersion, kind, metadata)."""
    post = kopf.warn if type_ == "Warning" else kopf.info
    post(kopf.Body(cast(kopf.RawBody, body)), reason=reason, message=message[:1000])


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
    app = App(settings=ours, kube=Kube(api), emit=_emit)
    # Know every run before the first scheduling decision; the watch keeps it current.
    for ns in ours.namespaces or [None]:
        for run in app.kube.list_objects("updateruns", ns):
            app.observe_run(run)
        for request in app.kube.list_objects("updaterequests", ns):
            app.observe_request(request)
    return app


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    if KEY not in memo:  # started by kopf's own CLI rather than `patchwarden run`
        memo[KEY] = make_app(Settings.from_env())


@kopf.on.startup()
async def size_thread_pool(memo: Any, **_: Any) -> None:
    """Blocking API calls run in threads; as many as there are API connections."""
    workers = _app(memo).settings.api_workers
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(workers))


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
def run_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """Keep the App's registry of runs (which the fleet limits read) in step with the cluster."""
    if kwargs.get("type") == "DELETED":
        _app(memo).forget_run(body.metadata.namespace or "", body.metadata.name or "")
    elif body.get("spec"):
        _app(memo).observe_run(dict(body))


def _poke(namespace: str | None, name: str) -> None:
    event = _pokes.get((namespace or "", name))
    if event is not None:
        event.set()


@kopf.daemon(GROUP, VERSION, "managedsystems", id="system", cancellation_timeout=10)
async def system_daemon(stopped: kopf.DaemonStopped, body: kopf.Body, memo: Any, **_: Any) -> None:
    app = _app(memo)
    key = (body.metadata.namespace or "", body.metadata.name or "")
    poke = _pokes.setdefault(key, asyncio.Event())
    try:
        while not stopped:
            poke.clear()
            snapshot = dict(body)
            try:
                delay = await asyncio.to_thread(app.reconcile_system, snapshot)
            except ApiException as exc:
                log.warning(
                    "system %s/%s: API error %s, retrying: %s", *key, exc.status, exc.reason
                )
                delay = 5.0
            await _sleep(stopped, poke, delay)
    finally:
        _pokes.pop(key, None)


async def _sleep(stopped: kopf.DaemonStopped, poke: asyncio.Event, delay: float) -> None:
    waits = {asyncio.ensure_future(stopped.wait(delay)), asyncio.ensure_future(poke.wait())}
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


@kopf.on.delete(GROUP, VERSION, "managedsystems", optional=True)
def system_deleted(namespace: str | None, name: str, **_: Any) -> None:
    metrics.forget_system(namespace or "", name)


@kopf.on.update(GROUP, VERSION, "managedsystems", field="spec")
def system_changed(namespace: str | None, name: str, **_: Any) -> None:
    _poke(namespace, name)


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
            _poke(namespace, run["spec"]["systemRef"]["name"])
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
    _poke(body.metadata.namespace, body.spec["systemRef"]["name"])


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
