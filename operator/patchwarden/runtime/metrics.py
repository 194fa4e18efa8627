"""Every Prometheus metric patchwarden exports, and the endpoint that serves them.

Names are prefixed ``patchwarden_``; counters end in ``_total``, units are in
the names (``_seconds``), and label sets are bounded: namespace,
system, service model, package, result, phase — never a run name or a ticket.
Per-system series are removed when the system goes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from patchwarden.core.times import timestamp

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()

DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
PHASE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)

RUN_DURATION = Histogram(
    "patchwarden_update_run_duration_seconds",
    "Time from a run's start to its end.",
    ["service_model", "result"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
PHASE_DURATION = Histogram(
    "patchwarden_update_run_phase_duration_seconds",
    "Time a run spent in each phase.",
    ["phase"],
    buckets=PHASE_BUCKETS,
    registry=REGISTRY,
)
ALERT_GATE_QUERIES = Counter(
    "patchwarden_alert_gate_queries_total",
    "Queries the alert gate asked its Prometheus endpoint, by outcome (ok, error).",
    ["outcome"],
    registry=REGISTRY,
)
for _outcome in ("ok", "error"):  # both series exist from the start (the alert compares them)
    ALERT_GATE_QUERIES.labels(_outcome)
NOTIFICATIONS = Counter(
    "patchwarden_notifications_total",
    "Notification deliveries, by outcome (delivered; failed: an attempt, retried; gave_up).",
    ["outcome"],
    registry=REGISTRY,
)
for _outcome in ("delivered", "failed", "gave_up"):
    NOTIFICATIONS.labels(_outcome)
NOTIFY_QUEUE = Gauge(
    "patchwarden_notifications_queued",
    "Notifications waiting for delivery (queued or backing off).",
    registry=REGISTRY,
)
NOTIFY_DURATION = Histogram(
    "patchwarden_notification_delivery_duration_seconds",
    "Time of one delivery attempt (the webhook's answer, or the timeout).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "patchwarden_last_successful_update_timestamp_seconds",
    "Unix time of the system's last successful update.",
    ["namespace", "system", "customer", "service_model", "package"],
    registry=REGISTRY,
)
NEXT_WINDOW = Gauge(
    "patchwarden_next_window_start_timestamp_seconds",
    "Unix time the system's next usable maintenance window opens.",
    ["namespace", "system"],
    registry=REGISTRY,
)
END_OF_LIFE = Gauge(
    "patchwarden_component_end_of_life_timestamp_seconds",
    "Unix time of a component's vendor end of life; days left: (this - time()) / 86400.",
    ["namespace", "system", "component", "version"],
    registry=REGISTRY,
)
RECONCILES = Counter(
    "patchwarden_reconcile_total",
    "Reconciliations, by kind and result (success, error).",
    ["kind", "result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "patchwarden_reconcile_errors_total",
    "Reconciliations that failed with an error, by kind.",
    ["kind"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "patchwarden_reconcile_duration_seconds",
    "Time one reconciliation took, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
KUBE_REQUESTS = Counter(
    "patchwarden_kube_requests_total",
    "Requests the operator's own code sent to the Kubernetes API, by verb and resource "
    "(kopf's watch streams and Event posts are not counted).",
    ["verb", "resource"],
    registry=REGISTRY,
)
PENDING_UPDATES = Gauge(
    "patchwarden_pending_updates",
    "Components in scope of the system's contract with a newer acceptable, approved release "
    "of this class.",
    ["namespace", "system", "class"],
    registry=REGISTRY,
)
BEHIND_SINCE = Gauge(
    "patchwarden_component_behind_since_timestamp_seconds",
    "Unix time since when a newer acceptable, approved release of the component exists; "
    "days behind: (time() - this) / 86400.",
    ["namespace", "system", "component"],
    registry=REGISTRY,
)
WORK_QUEUE_BACKLOG = Gauge(
    "patchwarden_work_queue_backlog",
    "ManagedSystems due for a reconcile that no worker has taken yet.",
    registry=REGISTRY,
)


def count_kube_request(verb: str, resource: str) -> None:
    KUBE_REQUESTS.labels(verb, resource).inc()


class FleetCollector(Collector):
    """Gauges that describe the whole fleet, computed when scraped from a copy taken under
    ``lock`` (the workers change the maps while the scrape thread reads them)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.systems: dict[tuple[str, str], tuple[str, str, str, bool]] = {}
        """(namespace, name) → (customer, service model, package, eligible)."""
        self.requests: dict[tuple[str, str], str] = {}
        """(namespace, name) → state."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.lock:
            known = list(self.systems.values())
            states = list(self.requests.items())
        systems = GaugeMetricFamily(
            "patchwarden_systems",
            "Managed systems by service model, package and eligibility.",
            labels=["service_model", "package", "eligible"],
        )
        for (model, package, eligible), count in sorted(
            Tally((m, p, str(e).lower()) for _, m, p, e in known).items()
        ):
            systems.add_metric([model, package, eligible], count)
        yield systems
        requests = GaugeMetricFamily(
            "patchwarden_update_requests",
            "Update requests by namespace and state.",
            labels=["namespace", "state"],
        )
        for (ns, state), count in sorted(Tally((ns, s) for (ns, _), s in states).items()):
            requests.add_metric([ns, state], count)
        yield requests


FLEET = FleetCollector()
REGISTRY.register(FLEET)

RESULTS = ("Succeeded", "RolledBack", "Failed")
ROLLBACK_RESULTS = ("RolledBack", "Failed")


class RunCounts(Collector):
    """Each system's ``patchwarden_update_runs_total`` (by result) and
    ``patchwarden_rollbacks_total`` (by result), kept as five numbers a system and written
    out when scraped. As five labelled children of prometheus_client counters they took
    some 4.6 KB a system (tracemalloc): 140 MB at 30,000 systems. Every series exists
    from the moment the system is seen, at 0: a counter that first appears at 1 gives
    increase() nothing to see, and the first failure no alert. A system whose service
    model or package changes starts new series (from 0), as a new label set would."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.systems: dict[tuple[str, str], tuple[str, str, list[int]]] = {}
        """(namespace, name) → (service model, package, [runs by RESULTS, rollbacks by
        ROLLBACK_RESULTS])."""

    def _counts(self, ns: str, name: str, model: str, package: str) -> list[int]:
        known = self.systems.get((ns, name))
        if known is None or known[:2] != (model, package):
            known = (model, package, [0] * (len(RESULTS) + len(ROLLBACK_RESULTS)))
            self.systems[(ns, name)] = known
        return known[2]

    def seen(self, ns: str, name: str, model: str, package: str) -> None:
        with self.lock:
            self._counts(ns, name, model, package)

    def ended(
        self, ns: str, name: str, model: str, package: str, result: str, rollback: bool
    ) -> None:
        with self.lock:
            counts = self._counts(ns, name, model, package)
            if result in RESULTS:
                counts[RESULTS.index(result)] += 1
            if rollback and result in ROLLBACK_RESULTS:
                counts[len(RESULTS) + ROLLBACK_RESULTS.index(result)] += 1

    def forget(self, ns: str, name: str) -> None:
        with self.lock:
            self.systems.pop((ns, name), None)

    def collect(self) -> Iterator[CounterMetricFamily]:
        with self.lock:
            known = [
                (k, model, package, list(c)) for k, (model, package, c) in self.systems.items()
            ]
        runs = CounterMetricFamily(
            "patchwarden_update_runs",
            "Update runs that ended, by result (Succeeded, RolledBack, Failed).",
            labels=["namespace", "system", "service_model", "package", "result"],
        )
        rollbacks = CounterMetricFamily(
            "patchwarden_rollbacks",
            "Rollbacks that ended, by result (RolledBack: restored; Failed: a person must act).",
            labels=["namespace", "system", "result"],
        )
        for (ns, name), model, package, counts in known:
            for result, count in zip(RESULTS, counts[: len(RESULTS)], strict=True):
                runs.add_metric([ns, name, model, package, result], count)
            for result, count in zip(ROLLBACK_RESULTS, counts[len(RESULTS) :], strict=True):
                rollbacks.add_metric([ns, name, result], count)
        yield runs
        yield rollbacks


RUN_COUNTS = RunCounts()
REGISTRY.register(RUN_COUNTS)


_ts = timestamp


Series = tuple[Gauge, tuple[str, ...]]
_SERIES: dict[tuple[str, str], set[Series]] = {}
"""(namespace, name) → the per-system series set for it, so that refreshing or forgetting
one system touches only its own series (not a scan of every system's)."""
_SERIES_LOCK = threading.Lock()


def observe_system(body: dict[str, Any], spec: Any) -> None:
    """Refresh the per-system series from a reconciled system (``spec`` may be None)."""
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    status = body.get("status") or {}
    if spec is None:
        forget_system(ns, name)
        return
    package = spec.package.value if spec.package else ""
    model = spec.service_model.value
    with FLEET.lock:
        FLEET.systems[(ns, name)] = (spec.customer, model, package, bool(status.get("eligible")))
    wanted: dict[tuple[Gauge, tuple[str, ...]], float] = {}
    success = _ts(status.get("lastSuccessfulUpdate"))
    if success is not None:
        wanted[(LAST_SUCCESS, (ns, name, spec.customer, model, package))] = success
    start = _ts((status.get("nextWindow") or {}).get("start"))
    if start is not None:
        wanted[(NEXT_WINDOW, (ns, name))] = start
    found = {c["name"]: c for c in status.get("components") or []}
    for component in spec.components:
        seen = found.get(component.name, {})
        version = seen.get("installed") or component.version or ""
        end = seen.get("endOfLife") or component.end_of_life
        if end is not None:
            day = date.fromisoformat(end) if isinstance(end, str) else end
            eol = datetime.combine(day, time.min, tzinfo=UTC).timestamp()
            wanted[(END_OF_LIFE, (ns, name, component.name, version))] = eol
        behind = _ts(seen.get("behindSince"))
        if behind is not None and seen.get("inScope", True):
            wanted[(BEHIND_SINCE, (ns, name, component.name))] = behind
    pending = status.get("pendingUpdates")
    if pending:  # "security 1, feature 0": the contract's classes, each with its count
        for part in pending.split(", "):
            cls, _, count = part.partition(" ")
            wanted[(PENDING_UPDATES, (ns, name, cls))] = float(count or 0)
    RUN_COUNTS.seen(ns, name, model, package)
    with _SERIES_LOCK:
        for metric, labels in _SERIES.get((ns, name), set()) - wanted.keys():
            metric.remove(*labels)
        for (gauge, labels), value in wanted.items():
            gauge.labels(*labels).set(value)
        _SERIES[(ns, name)] = set(wanted)


def forget_system(ns: str, name: str) -> None:
    with FLEET.lock:
        FLEET.systems.pop((ns, name), None)
    RUN_COUNTS.forget(ns, name)
    with _SERIES_LOCK:
        for metric, labels in _SERIES.pop((ns, name), set()):
            metric.remove(*labels)


def observe_request(ns: str, name: str, state: str | None) -> None:
    with FLEET.lock:
        if state is None:
            FLEET.requests.pop((ns, name), None)
        else:
            FLEET.requests[(ns, name)] = state


def observe_phase(phase: str, seconds: float) -> None:
    PHASE_DURATION.labels(phase).observe(max(0.0, seconds))


def observe_run_end(run: dict[str, Any], status: dict[str, Any], model: str, package: str) -> None:
    ns, system = run["metadata"]["namespace"], run["spec"]["systemRef"]["name"]
    result = status["phase"]
    RUN_COUNTS.ended(ns, system, model, package, result, status.get("restore") is not None)
    start, end = _ts(status.get("startTime")), _ts(status.get("completionTime"))
    if start is not None and end is not None:
        RUN_DURATION.labels(model, result).observe(max(0.0, end - start))
    if result == "Succeeded" and end is not None:
        LAST_SUCCESS.labels(ns, system, run["spec"].get("customer", ""), model, package).set(end)


async def serve(
    port: int, host: str | None = None, ready: Callable[[], str | None] = lambda: None
) -> web.AppRunner:
    """/metrics (Prometheus text format), /healthz and /readyz on ``port`` of ``host``
    (default: every interface). ``ready`` says why the operator cannot decide yet (None:
    it can): /readyz answers 503 with that until then."""

    async def metrics(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)

    async def readyz(_: web.Request) -> web.Response:
        why = ready()
        if why is None:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=f"{why}\n")

    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host=host, port=port).start()
    log.info("serving /metrics and /healthz on %s:%d", host or "*", port)
    return runner
