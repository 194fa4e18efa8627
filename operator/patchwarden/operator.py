"""The kopf wiring: every ``@kopf`` decorator lives here and hands off in a few lines.

Everything that runs beside kopf is one object, :class:`patchwarden.app.Runtime`: the
client, the fleet registry, the read model, the controllers, the watches, the system
workers, the peering check and the metrics server, with ``start()``/``stop()`` called
from kopf's startup and cleanup. kopf itself runs

* each unfinished UpdateRun's daemon, which steps it (``controllers/runs.py``) until it
  ends; after a restart it resumes from the recorded phase; every run event keeps the
  fleet registry current and queues the run's system;
* the UpdateRequests' handlers: decided by the requests controller
  (``controllers/requests.py``) when they change, and their run cancelled when deleted
  before it started.

kopf's finalizer and progress annotations (runs and requests only) live under
``patchwarden.io``; peering (``runtime/peering.py``) makes sure two replicas never act
twice. docs/architecture.md draws the layers, the threads and one run's data flow.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import urllib3
from kubernetes.client.rest import ApiException

from patchwarden.api.common import GROUP, VERSION
from patchwarden.api.run import TERMINAL
from patchwarden.app import Runtime
from patchwarden.core.settings import Settings
from patchwarden.runtime import metrics
from patchwarden.runtime.kube import LIST_PAGE, REQUEST_TIMEOUT

log = logging.getLogger(__name__)
KEY = "patchwarden"
DELETION_STEPS = 10
"""Steps a run being deleted takes in one call of its deletion handler before kopf calls it
again (its progress is the run's status)."""
PAUSED_RETRY_SECONDS = 2.0
"""When a handler of a paused replica is retried."""
WORKER_IDLE_SECONDS = 0.5
"""kopf ends an object's worker (its task, its event queue, the last event's body) this long
after the object's last event; its default, 5 s, kept one for every run and request a start
listed, all at once (docs/scale.md: a start's peak memory with retained runs). A run's
next event simply starts a new worker."""


def _quiet_watch_handlers(record: logging.LogRecord) -> bool:
    """Drop kopf's "Handler '…_event' succeeded." line: it comes with every watch event
    (20,000 lines for a sync of 10,000 systems) and says nothing."""
    message = str(record.msg)
    return not (message.startswith("Handler '") and message.endswith("_event' succeeded."))


def _runtime(memo: Any) -> Runtime:
    runtime = memo[KEY]
    assert isinstance(runtime, Runtime)
    return runtime


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
    # kopf's own requests (finalizers, peering keep-alives) end as the operator's do, not
    # after kopf's default of 5 minutes (runtime/kube.py: REQUEST_TIMEOUT).
    settings.networking.connect_timeout, settings.networking.request_timeout = REQUEST_TIMEOUT
    # kopf's first LIST of runs and requests a page at a time, not a year of them in one.
    settings.watching.chunk_size = LIST_PAGE
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
    logging.getLogger("kopf.objects").addFilter(_quiet_watch_handlers)
    if KEY not in memo:  # started by kopf's own CLI rather than `patchwarden run`
        runtime = Runtime(Settings.from_env())
        runtime.know_the_fleet()
        memo[KEY] = runtime
    # A dead replica's entry expires this long after its last renewal: the takeover time.
    settings.peering.lifetime = _runtime(memo).settings.peering_lifetime_seconds


@kopf.on.startup()
async def start(memo: Any, **_: Any) -> None:
    await _runtime(memo).start()


@kopf.on.cleanup()
async def stop(memo: Any, **_: Any) -> None:
    await _runtime(memo).stop()


@kopf.on.event(GROUP, VERSION, "updateruns")
async def run_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    _runtime(memo).run_event(kwargs.get("type"), body)


@kopf.daemon(
    GROUP,
    VERSION,
    "updateruns",
    id="run",
    # Stopped (the operator exits, or peering pauses it), a run finishes its step and returns;
    # cancelled only if it has not within 5 s (kopf's "Daemon 'run' is cancelled" warning).
    cancellation_backoff=5,
    cancellation_timeout=10,
    # An ended run is stepped once more until its end is counted (status.counted).
    when=lambda status, **_: status.get("phase") not in TERMINAL or status.get("counted") is False,
)
async def run_daemon(
    stopped: kopf.DaemonStopped, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    """Step the run until it ends. A step that returns 0 goes on with the run as it just
    wrote it; after a wait the run is read afresh. A wait ends early when the watch sees one
    of the run's snapshots or its Job change."""
    runtime = _runtime(memo)
    assert namespace is not None, "UpdateRuns are namespaced"
    await runtime.synced.wait()  # the read model (snapshot classes, systems) has listed
    runner = runtime.runner()
    key, wake = (namespace, name), asyncio.Event()
    runtime.wakeups[key] = wake
    lock = runtime.step_lock(key)
    try:
        run: dict[str, Any] | None = None
        while not stopped:
            if not runtime.controller.active.is_set():
                # Paused by the peering decision kopf does not make: this replica's own
                # entry not renewed in time (runtime/peering.py: fenced).
                await _pause(stopped, runtime.controller.active, runtime.settings.run_poll_seconds)
                run = None
                continue
            wake.clear()  # before the read: a change after it wakes the wait below
            if run is None:
                run = await asyncio.to_thread(runtime.kube.get, "updateruns", namespace, name)
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
                delay = runtime.settings.run_poll_seconds
            except urllib3.exceptions.HTTPError as exc:  # no answer within REQUEST_TIMEOUT
                log.warning("run %s/%s: %s, retrying", namespace, name, exc)
                delay = runtime.settings.run_poll_seconds
            if delay is None:
                runtime.controller.poke(namespace, run["spec"]["systemRef"]["name"])
                return
            if delay:
                run = None
                await _pause(stopped, wake, delay)
    finally:
        if runtime.wakeups.get(key) is wake:
            del runtime.wakeups[key]


@kopf.on.delete(
    GROUP,
    VERSION,
    "updateruns",
    id="stop",
    # A run in progress, or ended and not yet counted (status.counted), is taken to its end.
    when=lambda status, **_: status.get("phase") not in TERMINAL or status.get("counted") is False,
)
async def run_deleted(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """A run in progress that is deleted (by hand, or with its system in a foreground
    deletion) is taken to its end first: rolled back if the workload may have changed,
    else cancelled. kopf's finalizer holds the run until this returns; the daemon has
    stopped (the lock waits for its step in flight)."""
    runtime = _runtime(memo)
    assert namespace is not None, "UpdateRuns are namespaced"
    await runtime.synced.wait()
    runner = runtime.runner()
    lock = runtime.step_lock((namespace, name))
    for _step in range(DELETION_STEPS):
        _acting(runtime)
        body = await asyncio.to_thread(runtime.kube.get, "updateruns", namespace, name)
        if body is None:
            return
        try:
            async with lock:
                delay = await asyncio.to_thread(runner.step, body)
        except ApiException as exc:
            raise kopf.TemporaryError(
                f"run {name}: API error {exc.status}: {exc.reason}",
                delay=runtime.settings.run_poll_seconds,
            ) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise kopf.TemporaryError(
                f"run {name}: {exc}", delay=runtime.settings.run_poll_seconds
            ) from exc
        if delay is None:
            runtime.controller.poke(namespace, body["spec"]["systemRef"]["name"])
            return
        if delay:
            raise kopf.TemporaryError(f"run {name} is stopping", delay=delay)
    raise kopf.TemporaryError(f"run {name} is stopping", delay=0.1)


def _acting(runtime: Runtime) -> None:
    """A handler that writes goes on only while this replica may act: kopf pauses its
    handlers for a peer that outranks it, not for its own entry going unrenewed (cut off:
    runtime/peering.py: fenced); then kopf retries the handler later."""
    if not runtime.controller.active.is_set():
        raise kopf.TemporaryError(
            "this replica is not acting now (peering); retried", delay=PAUSED_RETRY_SECONDS
        )


async def _pause(stopped: kopf.DaemonStopped, wake: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less when the daemon is stopped or ``wake`` is set."""
    waits = {asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(wake.wait())}
    _, pending = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


@kopf.on.event(GROUP, VERSION, "updaterequests")
def request_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    _runtime(memo).request_event(kwargs.get("type"), body)


@kopf.on.create(GROUP, VERSION, "updaterequests")
@kopf.on.update(GROUP, VERSION, "updaterequests", field="spec")
@kopf.on.resume(GROUP, VERSION, "updaterequests")
async def request_changed(body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime, snapshot = _runtime(memo), dict(body)
    _acting(runtime)
    await asyncio.to_thread(runtime.requests.reconcile_alone, snapshot)
    runtime.controller.poke(body.metadata.namespace, body.spec["systemRef"]["name"])


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
    _acting(_runtime(memo))
    snapshot = dict(body)
    await asyncio.to_thread(_runtime(memo).requests.reconcile_alone, snapshot)


@kopf.on.delete(GROUP, VERSION, "updaterequests", optional=True)
async def request_deleted(body: kopf.Body, memo: Any, **_: Any) -> None:
    _acting(_runtime(memo))
    snapshot = dict(body)
    await asyncio.to_thread(_runtime(memo).requests.cancel, snapshot)
    metrics.observe_request(body.metadata.namespace or "", body.metadata.name or "", None)


def run(settings: Settings, verbose: bool = False) -> None:
    """Run the operator in the foreground until it is stopped."""
    kopf.configure(verbose=verbose)
    runtime = Runtime(settings)
    runtime.know_the_fleet()  # every run known before the first scheduling decision
    memo = kopf.Memo()
    memo[KEY] = runtime
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=False,
        priority=settings.priority,
        identity=settings.identity,  # type: ignore[arg-type]
        peering_name=settings.peering_name,
        memo=memo,
        memories=runtime.memories,
    )
