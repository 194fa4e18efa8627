"""Benchmark: fleet sync and a window storm against the API server's own limit.

    make bench                                  # 2,000 systems, a storm of 500 (a few minutes)
    make bench SYSTEMS=10000                    # the full fleet
    .venv/bin/python bench/bench.py --systems 200 --storm-systems 100   # about a minute

Runs against the local control plane (brought up if needed; kwok runs the
pods, so Jobs complete). Three parts:

1. **fleet sync** — N SaaS ManagedSystems (one weekly window), each with its
   Deployment (scaled to zero), spread over namespaces, created before the
   operator starts; the time from the
   operator's start until every status shows ``observedGeneration ==
   metadata.generation`` and a ``nextWindow`` (as a watch sees them); the operator's peak RSS
   (VmHWM); API requests per system counted at the client (the operator's
   ``patchwarden_kube_requests_total``) and, as a cross-check, at the server
   (``apiserver_request_total`` delta minus the benchmark's own polls).
   With ``--idle-seconds T`` the synced fleet is then left alone for T seconds (no
   window opens, nothing changes): the operator's CPU, requests and writes meanwhile
   (``idle``). With ``--restart`` a new operator process then starts over the same
   fleet: the time until /readyz says it can decide and until its first reconcile, and
   its writes, requests and CPU in its first minute, against a plain client's paged
   LIST of the systems (``restart``).
2. **window storm** — M systems, each with a Deployment and a claim, due in
   one one-off window that opens at a chosen instant, fleet limit L: the
   delay from window open to each Job's creation (as the benchmark's watch
   sees it), the time until every run Succeeded, and the most runs observed
   in progress at once (must never exceed L).
3. **the limit** — the same writes done directly with the Python client at
   the same concurrency: the N status patches the operator made in the sync
   (the same bodies, onto the same systems with their status cleared); for each storm
   run its record, status patches, snapshot and Job (``raw_storm``), and the same
   runs again waiting, as a run must, for each snapshot to be ready and each Job
   to complete (``raw_storm_runs``: the simplest client that does the runs).
   Writes per second, and the operator's time against each raw time. With
   ``--notify-delay S`` the storm runs again with notifications to a loopback webhook
   that takes S seconds per event: events per second, and the storm's figures beside
   the first's.
4. **targets** (``--targets N``, no cluster needed) — resolving what a run would
   install: a ReleaseCatalog of 50 components x 20 releases (40 in dpkg order, 10
   SemVer, some digest-pinned) indexed once, then for N systems with 5 components
   bound to containers each, the installed versions read from their images and
   the targets chosen (``core/releases.py: states, targets`` — the code the
   systems controller runs per reconcile). Against the same work without the
   index (the catalog parsed and ordered again per system, on a sample).
5. **waves** (``--waves N``, no cluster needed) — the waves' ledger
   (``core/waves.py: build``) over N stored systems (5 bound components each, in 3
   waves by label) and a run per tenth of them, against the same catalog with a
   rollout: the time of one build (the operator builds it after a fleet change, at most
   every 5 s), and each system's lookups of its releases. Against
   building it per system (no shared ledger), on a sample.

Prints a table and writes bench/results.json (inputs, figures, machine,
versions). Each part starts its own operator process with a fresh peering
name, so no earlier process can pause it. The storm runs before the sync: the
sync's Deployments keep the controller manager busy for minutes afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

from kubernetes import client, config

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "operator"))

from patchwarden.api.run import Trigger  # noqa: E402
from patchwarden.api.system import ManagedSystemSpec, WindowRef  # noqa: E402
from patchwarden.app import LEDGER_PACE_SECONDS  # noqa: E402
from patchwarden.core import builders  # noqa: E402
from patchwarden.runtime.kube import SNAPSHOTS, Kube  # noqa: E402
from patchwarden.runtime.reflector import Reflector, lister  # noqa: E402
from patchwarden_dev.devcluster import DevCluster, release_finalizers, resolve_tools  # noqa: E402

GROUP, VERSION = "patchwarden.io", "v1alpha1"
WRITES = {"POST", "PATCH", "PUT", "DELETE"}
ACTIVE_PHASES = {"Pending", "Snapshotting", "Recording", "Updating", "Verifying", "RollingBack"}


# ---- inputs --------------------------------------------------------------------------
def sync_system(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ManagedSystem",
        "metadata": {"name": name},
        "spec": {
            "customer": f"c{int(name[1:]) % 100}",
            "serviceModel": "SaaS",
            "workload": {"kind": "Deployment", "name": name},
            "backup": {"required": False},
            "updates": {
                "template": {"spec": {"containers": [{"name": "u", "image": "x"}]}},
                "runJob": "EveryWindow",
                "bakeTime": "0s",
            },
            "maintenance": {
                "timeZone": "Europe/Berlin",
                "windows": [{"name": "sunday", "cron": "0 23 * * 0", "duration": "4h"}],
            },
        },
    }


def storm_system(name: str, opens: datetime) -> dict[str, Any]:
    body = sync_system(name)
    body["spec"].update(
        {
            "volumes": [name],
            "backup": {"required": True},
            "updates": {
                "expectedDuration": "5m",
                "verifyTimeout": "2m",
                "bakeTime": "0s",  # the figures compare with earlier ones, which had none
                "runJob": "EveryWindow",
                "template": {"spec": {"containers": [{"name": "u", "image": "upd:1"}]}},
            },
            "maintenance": {
                "windows": [
                    {
                        "name": "storm",
                        "once": opens.isoformat().replace("+00:00", "Z"),
                        "duration": "2h",
                    }
                ]
            },
        }
    )
    return body


def claim(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def deployment(name: str, replicas: int = 1, claim: bool = True) -> dict[str, Any]:
    volumes = [{"name": "d", "persistentVolumeClaim": {"claimName": name}}] if claim else []
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}], "volumes": volumes},
            },
        },
    }


# ---- helpers -------------------------------------------------------------------------
class Bench:
    def __init__(self, dev: DevCluster, parallelism: int, profile: Path | None) -> None:
        self.dev, self.profile = dev, profile
        self.api = config.new_client_from_config(str(dev.kubeconfig))
        self.api.configuration.connection_pool_maxsize = max(parallelism, 50) * 2
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.run_id = uuid.uuid4().hex[:6]
        self.namespaces: list[str] = []
        self.cluster_wide = False

    def make_namespaces(self, part: str, count: int) -> list[str]:
        names = [f"bench-{self.run_id}-{part}-{i}" for i in range(count)]
        for ns in names:
            self.core.create_namespace({"metadata": {"name": ns}})
        self.namespaces += names
        return names

    def clear_leftovers(self, timeout: float) -> None:
        """Delete the namespaces of earlier runs and wait until they are gone: their
        deletion would otherwise load the API server during this run's measurements."""

        def leftovers() -> list[str]:
            return [
                n.metadata.name
                for n in self.core.list_namespace().items
                if n.metadata.name.startswith("bench-")
            ]

        self.delete_namespaces(leftovers(), "earlier benchmark namespaces", timeout)

    def delete_namespaces(self, names: list[str], what: str, timeout: float) -> None:
        """Delete ``names`` and wait until they are gone."""
        for ns in names:
            self.dev.kubectl("delete", "ns", ns, "--wait=false", "--ignore-not-found")
            # A benchmark stopped midway leaves runs (and, before 0.2, systems) with kopf's
            # finalizer and no operator to remove it: the namespace would never go.
            release_finalizers(self.custom, ns)
        wanted = set(names)

        def gone() -> bool:
            return not wanted & {n.metadata.name for n in self.core.list_namespace().items}

        wait_until(f"{what} deleted", gone, timeout, 2)

    def retire(self, namespaces: list[str], timeout: float) -> None:
        """A part is measured: delete its namespaces before the next part. Its running
        Deployments would otherwise hold slots of kwok's node (1,000 pods): a storm after
        another would find no room for its Jobs' pods (they stay Pending: "Too many pods")."""
        self.delete_namespaces(namespaces, "the part's namespaces", timeout)
        self.namespaces = [ns for ns in self.namespaces if ns not in namespaces]

    def cleanup(self) -> None:
        for ns in self.namespaces:
            self.dev.kubectl("delete", "ns", ns, "--wait=false", "--ignore-not-found")

    def server_requests(self) -> float:
        text = self.dev.kubectl("get", "--raw", "/metrics")
        return sum(
            float(m.group(1))
            for m in re.finditer(r"^apiserver_request_total\{[^}]*\} (\S+)$", text, re.M)
        )

    def start_operator(self, part: str, namespaces: list[str], env: dict[str, str]) -> Operator:
        port = free_port()
        full = {
            **os.environ,
            "KUBECONFIG": str(self.dev.kubeconfig),
            "PYTHONPATH": str(REPO / "operator"),
            "PATCHWARDEN_METRICS_PORT": str(port),
            "PATCHWARDEN_PEERING_NAME": f"bench-{self.run_id}-{part}",
            # The chart's default serves the whole cluster (each watch once); a namespaced
            # install holds each of them once per namespace, and so does the operator here
            # unless --cluster-wide (the cluster holds nothing else: leftovers are cleared).
            "PATCHWARDEN_NAMESPACES": "" if self.cluster_wide else ",".join(namespaces),
            **env,
        }
        log = (REPO / "bench" / f"operator-{part}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "patchwarden", "run"],
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        spy = None
        if self.profile:
            out = self.profile.with_name(f"{self.profile.stem}-{part}{self.profile.suffix}")
            spy = subprocess.Popen(
                [
                    *(str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw"),
                    *("--rate", "50", "--nonblocking", "-o", str(out), "--pid", str(process.pid)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return Operator(process, port, spy)


CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-controller", "kube-scheduler", "kwok-controller")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def control_plane_cpu() -> dict[str, float]:
    """CPU seconds used so far by each local control-plane process (by its /proc name)."""
    found: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            name = (proc / "comm").read_text().strip()
            if name in CONTROL_PLANE:
                found[name] = found.get(name, 0.0) + process_cpu_seconds(int(proc.name))
        except OSError:  # the process ended meanwhile
            continue
    return found


def cpu_used_since(before: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 1) for k, v in sorted(control_plane_cpu().items())}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    def __init__(
        self, process: subprocess.Popen[bytes], port: int, spy: subprocess.Popen[bytes] | None
    ) -> None:
        self.process, self.port, self.spy = process, port, spy
        self.started = time.monotonic()

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        """User + system CPU time the operator process used so far."""
        return process_cpu_seconds(self.process.pid)

    def ready(self) -> bool:
        """Whether /readyz answers 200 (the operator can decide)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:  # not listening yet, or 503 (HTTPError is an OSError)
            return False

    def metric(self, name: str) -> float:
        """The sum of every series of counter ``name`` the operator exposes (0 while it does
        not listen yet)."""
        try:
            url = f"http://127.0.0.1:{self.port}/metrics"
            text = urllib.request.urlopen(url, timeout=10).read()
        except OSError:
            return 0.0
        pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$"
        return sum(float(m.group(1)) for m in re.finditer(pattern, text.decode(), re.M))

    def requests(self, verbs: Iterable[str] | None = None) -> float:
        """The operator's own count of its API requests (patchwarden_kube_requests_total)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10).read()
        wanted = set(verbs) if verbs else None
        total = 0.0
        for m in re.finditer(
            r'^patchwarden_kube_requests_total\{resource="[^"]*",verb="([A-Z]+)"\} (\S+)$',
            text.decode(),
            re.M,
        ):
            if wanted is None or m.group(1) in wanted:
                total += float(m.group(2))
        return total

    def cost(self) -> dict[str, float]:
        """What the process has cost so far: CPU, its requests and writes, peak memory."""
        return {
            "cpu_seconds": round(self.cpu_seconds(), 1),
            "requests": int(self.requests()),
            "writes": int(self.requests(WRITES)),
            "peak_rss_mb": round(self.peak_rss_mb(), 1),
        }

    def stop(self) -> None:
        if self.spy is not None:  # py-spy writes its profile when interrupted
            self.spy.send_signal(signal.SIGINT)
            self.spy.wait(timeout=60)
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def parallel(threads: int, fn: Callable[[Any], Any], items: Iterable[Any]) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, items))
    return time.monotonic() - started


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def spread(values: list[float]) -> dict[str, float | None]:
    rounded = lambda v: None if v is None else round(v, 2)  # noqa: E731
    return {
        "p50": rounded(percentile(values, 50)),
        "p99": rounded(percentile(values, 99)),
        "max": rounded(max(values) if values else None),
        "mean": rounded(statistics.fmean(values) if values else None),
    }


def wait_until(what: str, check: Callable[[], bool], timeout: float, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


# ---- part 1: fleet sync ----------------------------------------------------------------
def fleet_sync(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    namespaces = b.make_namespaces("sync", args.namespaces)
    names = [(namespaces[i % len(namespaces)], f"s{i}") for i in range(args.systems)]
    # Each system's Deployment exists (scaled to zero: no pods), as in a real fleet. The
    # controller manager creates their ReplicaSets meanwhile (the dev cluster lets it send
    # 100 requests/s); the operator starts once it is done.
    parallel(
        args.parallelism,
        lambda k: b.apps.create_namespaced_deployment(
            k[0], deployment(k[1], replicas=0, claim=False)
        ),
        names,
    )
    create = parallel(
        args.parallelism,
        lambda k: b.custom.create_namespaced_custom_object(
            GROUP, VERSION, k[0], "managedsystems", sync_system(k[1])
        ),
        names,
    )
    replicasets = settle(b, namespaces)
    # One watch, not LISTs of every system in a loop: polling 10,000 objects twice a second
    # loaded the API server (and these 2 cores) more than the operator did.
    namespaces_set, synced, ready = set(namespaces), set(), threading.Event()
    statuses: dict[tuple[str, str], dict[str, Any]] = {}
    first: list[float] = []

    def follow(events: list[tuple[str, dict[str, Any]]]) -> None:
        for _, item in events:
            meta = item["metadata"]
            if meta["namespace"] not in namespaces_set:
                continue
            s = item.get("status") or {}
            key = (meta["namespace"], meta["name"])
            if s.get("observedGeneration") == meta.get("generation") and s.get("nextWindow"):
                synced.add(key)
                statuses[key] = s
                if not first:
                    first.append(time.monotonic())
            else:
                synced.discard(key)
        if len(synced) == args.systems:
            ready.set()

    before = b.server_requests()
    # The operator's own watch code: one JSON parse per event (the client's Watch parses each
    # three times, CPU these 2 cores would miss in the measurement).
    own: list[str] = []  # the watch's own requests (LIST pages, WATCHes), not the operator's
    kube = Kube(config.new_client_from_config(str(b.dev.kubeconfig)), lambda v, r: own.append(v))
    watcher = Reflector(lister(kube, "managedsystems", None), "bench", follow)
    watcher.start()
    cpu_before = control_plane_cpu()
    op = b.start_operator("sync", namespaces, {})
    seconds = None
    steady: dict[str, Any] = {}
    try:
        if ready.wait(args.timeout):
            seconds = time.monotonic() - op.started
        done = len(synced)
        watcher.stop()
        rss, cpu = op.peak_rss_mb(), op.cpu_seconds()
        control_plane = cpu_used_since(cpu_before)
        client_requests = op.requests()
        server = b.server_requests() - before - len(own) - 1
        if args.idle_seconds and seconds is not None:
            steady["idle"] = idle(b, op, namespaces, args.idle_seconds)
    finally:
        op.stop()
    if args.restart and seconds is not None:
        steady["restart"] = restart(b, namespaces, args)
    # The limit: the very status writes the operator made, from a plain client at the same
    # parallelism, onto the same systems with their status cleared first.
    parallel(
        args.parallelism,
        lambda k: b.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, k[0], "managedsystems", k[1], {"status": None}
        ),
        statuses,
    )
    # The same watch as during the operator's sync follows the raw writes: its events cost
    # the API server (and these 2 cores) as much in both.
    seen = [0]
    observer = Reflector(
        lister(kube, "managedsystems", None),
        "bench raw",
        lambda events: seen.__setitem__(0, seen[0] + len(events)),
    )
    observer.start()
    observer.synced.wait(args.timeout)
    cpu_before = control_plane_cpu()
    raw = parallel(
        args.parallelism,
        lambda k: b.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, k[0], "managedsystems", k[1], {"status": statuses[k]}
        ),
        statuses,
    )
    raw_control_plane = cpu_used_since(cpu_before)
    observer.stop()
    return {
        "systems": args.systems,
        "namespaces": args.namespaces,
        "create_seconds": round(create, 2),
        "replicasets_settled_after_create_seconds": round(replicasets, 1),
        "sync_seconds": round(seconds, 2) if seconds else None,
        "systems_synced": done,
        "start_to_first_synced_seconds": round(first[0] - op.started, 2) if first else None,
        "operator_peak_rss_mb": round(rss, 1),
        "operator_cpu_seconds": round(cpu, 1),
        "control_plane_cpu_seconds": control_plane,
        "requests_per_system_client": round(client_requests / args.systems, 2),
        "requests_per_system_server": round(server / args.systems, 2),
        "raw_status_writes_seconds": round(raw, 2),
        "raw_status_writes_per_second": round(len(statuses) / raw, 1),
        "raw_control_plane_cpu_seconds": raw_control_plane,
        "ratio_operator_to_raw": round(seconds / raw, 2) if seconds else None,
        **steady,
    }


def settle(b: Bench, namespaces: list[str]) -> float:
    """Wait until the controller manager has created every Deployment's ReplicaSet and
    observed its status; return the seconds it took. Each is a Deployment status change the
    operator's watches receive: left to run during a measurement, that backlog (at the
    controller manager's default 20 requests/s, 2,576 of 10,000 in 5.5 minutes) is
    measured as the operator's cost. Both the operator's sync and the raw writes run
    after it."""
    started = time.monotonic()

    def count(list_fn: Callable[..., Any]) -> int:
        """How many, from one item per namespace (remainingItemCount): cheap to ask."""
        total = 0
        for ns in namespaces:
            page = json.loads(list_fn(ns, limit=1, _preload_content=False).data)
            total += len(page["items"]) + (page["metadata"].get("remainingItemCount") or 0)
        return total

    deployments = count(b.apps.list_namespaced_deployment)
    wait_until(
        "every Deployment's ReplicaSet created",
        lambda: count(b.apps.list_namespaced_replica_set) >= deployments,
        1800,
        every=10,
    )

    def settled() -> bool:
        return all(
            (d.status.observed_generation or 0) >= d.metadata.generation
            for ns in namespaces
            for d in b.apps.list_namespaced_deployment(ns).items
        )

    wait_until("every Deployment's status observed", settled, 600, every=10)
    return time.monotonic() - started


SCRAPE_SECONDS = 30.0
"""How often the idle part reads /metrics, as a Prometheus scraping the operator would."""


def idle(b: Bench, op: Operator, namespaces: list[str], seconds: float) -> dict[str, Any]:
    """The synced fleet left alone (no window opens, nothing changes) for ``seconds``, read
    by a Prometheus every SCRAPE_SECONDS as a monitored operator is: the operator's CPU,
    requests and writes meanwhile, as its own counters and /proc say (the benchmark's own
    reads of those counters come before and after the measured time)."""

    settle(b, namespaces)  # (fleet_sync did; a no-op unless something changed since)
    time.sleep(30.0)
    reconciles = lambda: op.metric("patchwarden_reconcile_total")  # noqa: E731
    req0, writes0, rec0 = op.requests(), op.requests(WRITES), reconciles()
    server0, cpu0 = b.server_requests(), op.cpu_seconds()
    started = time.monotonic()
    scrapes = 0
    while (left := seconds - (time.monotonic() - started)) > 0:
        time.sleep(min(SCRAPE_SECONDS, left))
        if time.monotonic() - started < seconds:
            urllib.request.urlopen(f"http://127.0.0.1:{op.port}/metrics", timeout=30).read()
            scrapes += 1
    took = time.monotonic() - started
    cpu = op.cpu_seconds() - cpu0
    requests = op.requests() - req0
    server = b.server_requests() - server0 - 1  # less this benchmark's own /metrics read
    return {
        "seconds": round(took, 1),
        "metrics_scrapes": scrapes,
        "cpu_seconds": round(cpu, 2),
        "cpu_share_of_one_core": f"{cpu / took:.2%}",
        "requests": int(requests),
        "requests_per_second": round(requests / took, 3),
        "server_requests_per_second": round(server / took, 3),
        "writes": int(op.requests(WRITES) - writes0),
        "reconciles": int(reconciles() - rec0),
        # (The safety resync comes later: 5.4 h after the sync at the earliest.)
    }


def restart(b: Bench, namespaces: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """A new operator process over the synced fleet: how soon it serves (/readyz: the first
    decision possible), and what it writes and costs in its first minute. Against the
    plain client's LIST of the same systems (the least a new process must read)."""
    started = time.monotonic()
    pages, token = 0, None
    while True:
        listed = b.custom.list_cluster_custom_object(
            GROUP, VERSION, "managedsystems", limit=500, **({"_continue": token} if token else {})
        )
        pages += 1
        token = listed["metadata"].get("continue")
        if not token:
            break
    raw_list = time.monotonic() - started
    # The control plane's own rate with no operator running (kwok's node, the controller
    # manager's leases): the idle's server-side figure less this is the operator's.
    server0, began = b.server_requests(), time.monotonic()
    time.sleep(60.0)
    without = (b.server_requests() - server0 - 1) / (time.monotonic() - began)
    op = b.start_operator("restart", namespaces, {})
    try:
        serving = decided = None
        while time.monotonic() - op.started < args.timeout:
            if serving is None and op.ready():
                serving = time.monotonic() - op.started
            # The first system reconciled: its first decision made (a /metrics read costs
            # the operator a little: twice a second).
            if serving is not None and op.metric("patchwarden_reconcile_total") >= 1:
                decided = time.monotonic() - op.started
                break
            time.sleep(0.05 if serving is None else 0.5)
        time.sleep(max(0.0, 60.0 - (time.monotonic() - op.started)))
        minute = time.monotonic() - op.started
        return {
            "serving_seconds": round(serving, 2) if serving is not None else None,
            "first_reconcile_seconds": round(decided, 2) if decided is not None else None,
            "raw_list_seconds": round(raw_list, 2),
            "raw_list_pages": pages,
            "server_requests_per_second_without_operator": round(without, 3),
            "first_minute_writes": int(op.requests(WRITES)),
            "first_minute_requests": int(op.requests()),
            "first_minute_cpu_seconds": round(op.cpu_seconds(), 1),
            "first_minute_seconds": round(minute, 1),
            "peak_rss_mb": round(op.peak_rss_mb(), 1),
        }
    finally:
        op.stop()


# ---- part 2: the window storm ------------------------------------------------------------
def watch_everywhere(
    b: Bench,
    plural: str,
    group: tuple[str, str],
    deliver: Callable[[list[tuple[str, dict[str, Any]]]], None],
    selector: str | None = None,
) -> Reflector:
    """A started watch of ``plural`` in every namespace, with the operator's own reflector
    (one JSON parse per event; relists after 410)."""
    reflector = Reflector(
        lister(Kube(b.api), plural, None, group, selector), f"bench {plural}", deliver
    )
    reflector.start()
    return reflector


class RunWatch:
    """Watches UpdateRuns, snapshots and Jobs in the storm namespaces: first-seen times,
    snapshot readiness and concurrency."""

    def __init__(self, b: Bench, namespaces: set[str]) -> None:
        self.namespaces = namespaces
        self.lock = threading.Lock()
        self.phase: dict[str, str] = {}
        self.created: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.jobs: dict[str, float] = {}
        self.snapshots: dict[str, float] = {}
        self.snapshots_ready: dict[str, float] = {}
        self.phase_seen: dict[tuple[str, str], float] = {}
        self.most_active = 0
        self.watches = [
            watch_everywhere(b, "updateruns", (GROUP, VERSION), self._runs),
            watch_everywhere(b, "jobs", ("batch", "v1"), self._jobs, "patchwarden.io/run"),
            watch_everywhere(b, "volumesnapshots", SNAPSHOTS, self._snapshots),
        ]

    def stop(self) -> None:
        for w in self.watches:
            w.stop()

    def _ours(self, events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        """(namespace/name, object) of the events in the storm namespaces."""
        return [
            (f"{o['metadata']['namespace']}/{o['metadata']['name']}", o)
            for _, o in events
            if o["metadata"]["namespace"] in self.namespaces
        ]

    def _jobs(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        now = time.time()
        with self.lock:
            for key, _ in self._ours(events):
                self.jobs.setdefault(key, now)

    def _snapshots(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        now = time.time()
        with self.lock:
            for key, obj in self._ours(events):
                self.snapshots.setdefault(key, now)
                if (obj.get("status") or {}).get("readyToUse"):
                    self.snapshots_ready.setdefault(key, now)

    def _runs(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        now = time.time()
        with self.lock:
            for key, obj in self._ours(events):
                self.created.setdefault(key, now)
                phase = (obj.get("status") or {}).get("phase") or "Pending"
                self.phase[key] = phase
                self.phase_seen.setdefault((key, phase), now)
                if phase not in ACTIVE_PHASES:
                    self.ended.setdefault(key, now)
                active = sum(1 for p in self.phase.values() if p in ACTIVE_PHASES)
                self.most_active = max(self.most_active, active)

    def succeeded(self) -> int:
        with self.lock:
            return sum(1 for p in self.phase.values() if p == "Succeeded")

    def finished(self) -> int:
        with self.lock:
            return sum(1 for p in self.phase.values() if p not in ACTIVE_PHASES)


class SlowReceiver:
    """A webhook on loopback that takes ``delay`` seconds to answer each notification and
    counts the CloudEvents it got (by id) and when."""

    def __init__(self, delay: float) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.delay, self.arrivals, self.lock = delay, {}, threading.Lock()
        got = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(got.delay)
                with got.lock:
                    got.arrivals.setdefault(body["id"], time.time())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def storm(b: Bench, args: argparse.Namespace, notify_delay: float | None = None) -> dict[str, Any]:
    count, limit = args.storm_systems, args.storm_limit
    part = "storm" if notify_delay is None else "storm-notify"
    namespaces = b.make_namespaces(part, args.storm_namespaces)
    receiver = SlowReceiver(notify_delay) if notify_delay is not None else None
    names = [(namespaces[i % len(namespaces)], f"w{i}") for i in range(count)]
    prepared = time.monotonic()
    parallel(
        args.parallelism,
        lambda k: (
            b.core.create_namespaced_persistent_volume_claim(k[0], claim(k[1])),
            b.apps.create_namespaced_deployment(k[0], deployment(k[1])),
        ),
        names,
    )

    def ready() -> bool:
        bound = sum(
            1
            for ns in namespaces
            for c in b.core.list_namespaced_persistent_volume_claim(ns).items
            if c.status.phase == "Bound"
        )
        available = sum(
            1
            for ns in namespaces
            for d in b.apps.list_namespaced_deployment(ns).items
            if (d.status.ready_replicas or 0) >= 1
        )
        return bound == count and available == count

    wait_until("storm workloads ready", ready, args.timeout, every=2)
    workloads_seconds = time.monotonic() - prepared

    # The window opens `lead` seconds after the systems exist: time for the operator to sync.
    opens = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=args.storm_lead)
    parallel(
        args.parallelism,
        lambda k: b.custom.create_namespaced_custom_object(
            GROUP, VERSION, k[0], "managedsystems", storm_system(k[1], opens)
        ),
        names,
    )
    watcher = RunWatch(b, set(namespaces))
    notify = {"PATCHWARDEN_NOTIFY_URL": receiver.url} if receiver is not None else {}
    op = b.start_operator(
        part,
        namespaces,
        {
            "PATCHWARDEN_MAX_CONCURRENT_RUNS": str(limit),
            "PATCHWARDEN_MAX_RUNS_PER_CUSTOMER": str(limit),
            "PATCHWARDEN_MAX_ERRORS_PER_WINDOW": str(count),
            "PATCHWARDEN_RUN_POLL_SECONDS": "1",
            **notify,
        },
    )
    try:
        if datetime.now(UTC) > opens - timedelta(seconds=2):
            raise RuntimeError(f"--storm-lead {args.storm_lead} s is too short to set up")
        while (opens - datetime.now(UTC)).total_seconds() > 1:
            time.sleep(0.05)
        requests_before, writes_before = op.requests(), op.requests(WRITES)
        while datetime.now(UTC) < opens:
            time.sleep(0.01)
        t0 = opens.timestamp()
        wait_until("every storm run ended", lambda: watcher.finished() >= count, args.timeout, 0.5)
        all_done = max(watcher.ended.values()) - t0
        rss, cpu = op.peak_rss_mb(), op.cpu_seconds()
        writes = op.requests(WRITES) - writes_before
        requests = op.requests() - requests_before
        notified: dict[str, Any] = {}
        if receiver is not None:
            # Every run owes two events (started, succeeded): wait for them, then the rate.
            expected = 2 * count
            wait_until(
                "every notification delivered",
                lambda: len(receiver.arrivals) >= expected,
                args.timeout,
                0.5,
            )
            with receiver.lock:
                times = sorted(receiver.arrivals.values())
            notified = {
                "notify_receiver_delay_seconds": notify_delay,
                "notifications_received": len(times),
                "notifications_per_second": round(len(times) / max(times[-1] - t0, 1e-9), 1),
                "last_notification_after_all_ended_seconds": round(
                    times[-1] - max(watcher.ended.values()), 1
                ),
            }
    finally:
        watcher.stop()
        op.stop()
        if receiver is not None:
            receiver.stop()
    with watcher.lock:
        job_delays = [t - t0 for t in watcher.jobs.values()]
        first_wave = sorted(job_delays)[:limit]
        created = sorted(watcher.created.values())
        ends = sorted(watcher.ended.values())
        # How soon a freed slot is filled: each run created after the first wave, against the
        # latest run end before it.
        refill = []
        for t in created[limit:]:
            before = [e for e in ends if e <= t]
            if before:
                refill.append(t - before[-1])
        phases = dict(watcher.phase)
        # How long the (kwok-played) snapshotter took: created → readyToUse, as watched.
        snapshot_ready = [
            watcher.snapshots_ready[k] - t
            for k, t in watcher.snapshots.items()
            if k in watcher.snapshots_ready
        ]
        # Where the first wave's time goes: open → each phase first seen, median over the wave.
        wave = sorted(watcher.created, key=watcher.created.__getitem__)[:limit]
        first_wave_phases = {
            phase: round(statistics.median(ts), 2)
            for phase in ("Pending", "Snapshotting", "Recording", "Updating", "Verifying")
            if (
                ts := [
                    watcher.phase_seen[(k, phase)] - t0
                    for k in wave
                    if (k, phase) in watcher.phase_seen
                ]
            )
        }
    b.retire(namespaces, args.timeout)
    return {
        "systems": count,
        "namespaces": len(namespaces),
        "limit": limit,
        "lead_seconds": args.storm_lead,
        "workloads_ready_seconds": round(workloads_seconds, 1),
        "runs_seen": len(phases),
        "runs_succeeded": sum(1 for p in phases.values() if p == "Succeeded"),
        "runs_not_succeeded": sorted({p for p in phases.values() if p != "Succeeded"}),
        "jobs_seen": len(job_delays),
        "open_to_job_seconds": spread(job_delays),
        "open_to_job_first_wave_seconds": spread(first_wave),
        "first_wave_open_to_phase_median_seconds": first_wave_phases,
        "snapshot_created_to_ready_seconds": spread(snapshot_ready),
        "slot_freed_to_next_run_seconds": spread(refill),
        "open_to_all_ended_seconds": round(all_done, 1),
        "most_runs_at_once": watcher.most_active,
        "limit_held": watcher.most_active <= limit,
        "operator_peak_rss_mb": round(rss, 1),
        "operator_cpu_seconds": round(cpu, 1),
        "operator_requests_from_open": round(requests),
        "operator_writes_from_open": round(writes),
        "operator_writes_per_run": round(writes / count, 1),
        **notified,
    }


class Ready:
    """Watches snapshots and Jobs in some namespaces; ``wait(kind, ns, name)`` returns when
    the snapshot is readyToUse or the Job complete (a plain client's way to wait)."""

    def __init__(self, b: Bench, namespaces: set[str]) -> None:
        self.namespaces = namespaces
        self.done: dict[tuple[str, str, str], threading.Event] = {}
        self.lock = threading.Lock()
        self.watches = [
            watch_everywhere(b, "volumesnapshots", SNAPSHOTS, self._seen("snapshot")),
            watch_everywhere(b, "jobs", ("batch", "v1"), self._seen("job")),
        ]

    def stop(self) -> None:
        for w in self.watches:
            w.stop()

    def _event(self, key: tuple[str, str, str]) -> threading.Event:
        with self.lock:
            return self.done.setdefault(key, threading.Event())

    def _seen(self, kind: str) -> Callable[[list[tuple[str, dict[str, Any]]]], None]:
        def deliver(events: list[tuple[str, dict[str, Any]]]) -> None:
            for _, obj in events:
                meta, status = obj["metadata"], obj.get("status") or {}
                if meta["namespace"] not in self.namespaces:
                    continue
                ready = status.get("readyToUse") or any(
                    c.get("type") == "Complete" and c.get("status") == "True"
                    for c in status.get("conditions") or []
                )
                if ready:
                    self._event((kind, meta["namespace"], meta["name"])).set()

        return deliver

    def wait(self, kind: str, ns: str, name: str, timeout: float) -> None:
        if not self._event((kind, ns, name)).wait(timeout):
            raise TimeoutError(f"{kind} {ns}/{name} not ready within {timeout:.0f} s")


def direct_run(
    name: str, uid: str, spec: ManagedSystemSpec, window: WindowRef, opens: datetime
) -> dict[str, Any]:
    """The UpdateRun the operator would make for the system in that window (its builder)."""
    return builders.update_run(
        system=name,
        system_uid=uid,
        customer=spec.customer,
        trigger=Trigger.SCHEDULE,
        window=window,
        window_start=opens,
        classes=["security"],
        components=[],
    )


def direct_job(run: str, run_uid: str, name: str, spec: ManagedSystemSpec) -> dict[str, Any]:
    """The run's update Job, as the operator would make it (its builder)."""
    return builders.update_job(
        run=run,
        run_uid=run_uid,
        system=name,
        spec=spec,
        classes=["security"],
        ticket=None,
        deadline_seconds=3600,
    )


def raw_storm(
    b: Bench, args: argparse.Namespace, run_patches: int, waits: bool = False
) -> dict[str, Any]:
    """The storm's writes from a plain client, `limit` at a time, built by patchwarden's own
    builders: per system its run record, ``run_patches`` status patches of the run, a
    snapshot, the Job, and a status patch of the system. With ``waits``, each also waits,
    as a run must, for its snapshot to be ready before the Job and for the Job to complete
    before the last patches: the same runs, done by the simplest possible client."""
    count, limit = args.storm_systems, args.storm_limit
    namespaces = b.make_namespaces("rawruns" if waits else "raw", args.storm_namespaces)
    names = [(namespaces[i % len(namespaces)], f"r{i}") for i in range(count)]
    opens = datetime(2026, 11, 29, 22, tzinfo=UTC)
    window = WindowRef(
        name="storm",
        start=opens.isoformat(),
        end=(opens + timedelta(hours=2)).isoformat(),
        cutoff=(opens + timedelta(hours=1)).isoformat(),
    )
    systems = {}
    for ns, name in names:
        body = storm_system(name, opens)
        created = b.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, "managedsystems", body
        )
        systems[(ns, name)] = (
            created["metadata"]["uid"],
            ManagedSystemSpec.model_validate(body["spec"]),
        )
    ready = Ready(b, set(namespaces)) if waits else None

    def patch_run(ns: str, run_name: str, steps: range) -> None:
        for i in steps:
            b.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, "updateruns", run_name, {"status": {"message": f"step {i}"}}
            )

    def one(k: tuple[str, str]) -> int:
        ns, name = k
        uid, spec = systems[k]
        run = direct_run(name, uid, spec, window, opens)
        created = b.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "updateruns", run)
        run_name = run["metadata"]["name"]
        half = run_patches // 2
        patch_run(ns, run_name, range(half // 2))
        snapshot = builders.volume_snapshot(
            run=run_name, system=name, claim=name, snapshot_class="standard-snapshots"
        )
        b.custom.create_namespaced_custom_object(*SNAPSHOTS, ns, "volumesnapshots", snapshot)
        if ready is not None:
            ready.wait("snapshot", ns, snapshot["metadata"]["name"], args.timeout)
        patch_run(ns, run_name, range(half // 2, half))
        job = direct_job(run_name, created["metadata"]["uid"], name, spec)
        b.batch.create_namespaced_job(ns, job)
        if ready is not None:
            ready.wait("job", ns, job["metadata"]["name"], args.timeout)
        patch_run(ns, run_name, range(half, run_patches))
        b.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, "managedsystems", name, {"status": {"observedGeneration": 1}}
        )
        return 4 + run_patches

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(limit) as pool:
            writes = sum(pool.map(one, names))
    finally:
        if ready is not None:
            ready.stop()
    seconds = time.monotonic() - started
    if ready is None:  # let the controller manager finish these Jobs before the next part

        def complete() -> bool:
            jobs = [j for ns in namespaces for j in b.batch.list_namespaced_job(ns).items]
            return all((j.status.succeeded or 0) + (j.status.failed or 0) > 0 for j in jobs)

        wait_until("the raw storm's Jobs complete", complete, args.timeout, every=2)
    # Its runs were never stepped: a cluster-wide operator in a later part would take them.
    b.retire(namespaces, args.timeout)
    return {
        "writes": writes,
        "run_status_patches_each": run_patches,
        "waits_for_snapshots_and_jobs": waits,
        "seconds": round(seconds, 2),
        "writes_per_second": round(writes / seconds, 1),
    }


# ---- targets ---------------------------------------------------------------------------
def catalog_body(components: int, releases: int) -> dict[str, Any]:
    comps = []
    for c in range(components):
        semver = c % 5 == 4
        rels = []
        for r in range(releases):
            major, minor = 10 + r // 10, r % 10
            version = f"{major}.{minor}.0" if semver else f"{major}.{minor}-1+deb12u{r % 3}"
            image = f"registry.example.com/c{c}:{version.replace('+', '_')}"
            if r % 7 == 0:
                image = f"registry.example.com/c{c}@sha256:{(c * 100 + r):064x}"
            rels.append(
                {
                    "version": version,
                    "image": image,
                    "classes": ["security"] if r % 2 else ["security", "feature"],
                    "released": f"2026-{1 + r % 12:02d}-01T00:00:00Z",
                    "advisories": [f"CVE-2026-{c:03d}{r:02d}"],
                }
            )
        comps.append(
            {"name": f"c{c}", "versionScheme": "SemVer" if semver else "Debian", "releases": rels}
        )
    return {"metadata": {"name": "bench", "resourceVersion": "1"}, "spec": {"components": comps}}


def targets_part(args: argparse.Namespace) -> dict[str, Any]:
    import resource

    from patchwarden.api.system import ManagedSystemSpec
    from patchwarden.core.releases import Catalogs, states, targets

    body = catalog_body(50, 20)
    releases = [c["releases"] for c in body["spec"]["components"]]
    systems = []
    for i in range(args.targets):
        picked = [(i * 7 + k * 11) % 50 for k in range(5)]
        spec = ManagedSystemSpec.model_validate(
            {
                "customer": f"c{i % 100}",
                "serviceModel": "SaaS",
                "workload": {"kind": "Deployment", "name": f"w{i}"},
                "updates": {"approveAfter": "72h"},
                "components": [
                    {
                        "name": f"c{c}",
                        "container": f"k{c}",
                        "track": ("major", "minor", "any")[i % 3],
                        "installedBy": "provider",
                        "source": "standard-repository",
                    }
                    for c in picked
                ],
            }
        )
        containers = [
            {"name": f"k{c}", "image": releases[c][(i + c) % 20]["image"]} for c in picked
        ]
        # The system's workloads by name, as the read model gives them to states().
        workload = {f"w{i}": {"spec": {"template": {"spec": {"containers": containers}}}}}
        systems.append((spec, workload))
    now = datetime(2026, 11, 28, tzinfo=UTC)
    started = time.perf_counter()
    catalogs = Catalogs.of([body])
    catalogs.lines(None)
    indexed = time.perf_counter() - started
    started = time.perf_counter()
    chosen = 0
    for spec, workload in systems:
        chosen += len(targets(states(spec, catalogs, workload, now), ["security", "feature"]))
    resolved = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    sample = systems[: max(1, min(200, len(systems)))]
    started = time.perf_counter()
    for spec, workload in sample:
        fresh = Catalogs.of([body])  # no index shared between systems
        targets(states(spec, fresh, workload, now), ["security", "feature"])
    unindexed = (time.perf_counter() - started) / len(sample)
    return {
        "catalog": "50 components x 20 releases",
        "systems": len(systems),
        "components_per_system": 5,
        "index_build_ms": round(indexed * 1000, 1),
        "resolve_seconds": round(resolved, 2),
        "per_system_us": round(resolved / len(systems) * 1e6, 1),
        "targets_chosen": chosen,
        "process_peak_rss_mb": round(peak / 2**20, 1),
        "unindexed_per_system_ms": round(unindexed * 1000, 1),
        "unindexed_seconds_for_all": round(unindexed * len(systems), 1),
    }


# ---- waves -----------------------------------------------------------------------------
def waves_part(args: argparse.Namespace) -> dict[str, Any]:
    from patchwarden.core.releases import Catalogs
    from patchwarden.core.waves import build

    body = catalog_body(50, 20)
    body["spec"]["rollout"] = {
        "waves": [
            {"name": "canary", "selector": {"matchLabels": {"ring": "canary"}}, "soak": "24h"},
            {"name": "early", "selector": {"matchLabels": {"ring": "early"}}},
        ]
    }
    catalogs = Catalogs.of([body])
    releases = [c["releases"] for c in body["spec"]["components"]]
    systems, runs = [], []
    for i in range(args.waves):
        picked = [(i * 7 + k * 11) % 50 for k in range(5)]
        ring = "canary" if i % 50 == 0 else "early" if i % 5 == 0 else "other"
        systems.append(
            {
                "metadata": {"namespace": f"ns{i % 50}", "name": f"s{i}", "labels": {"ring": ring}},
                "spec": {
                    "serviceModel": "SaaS",
                    "updates": {"approveAfter": "72h"},
                    "components": [
                        {"name": f"c{c}", "track": ("major", "minor", "any")[i % 3]} for c in picked
                    ],
                },
                "status": {
                    "eligible": True,
                    "components": [
                        {
                            "name": f"c{c}",
                            "inScope": True,
                            "installed": releases[c][(i + c) % 20]["version"],
                        }
                        for c in picked
                    ],
                },
            }
        )
        if i % 10 == 0:
            c = picked[0]
            runs.append(
                {
                    "metadata": {"namespace": f"ns{i % 50}", "name": f"s{i}-run"},
                    "spec": {
                        "systemRef": {"name": f"s{i}"},
                        "targets": [{"component": f"c{c}", "to": releases[c][19]["version"]}],
                    },
                    "status": {"phase": "Succeeded", "completionTime": "2026-11-27T00:00:00Z"},
                }
            )
    now = datetime(2026, 11, 28, tzinfo=UTC)
    started = time.perf_counter()
    ledger = build(catalogs, systems, runs, now)
    built = time.perf_counter() - started
    started = time.perf_counter()
    allowed = 0
    for system in systems:
        labels = system["metadata"]["labels"]
        for comp in system["status"]["components"]:
            line = catalogs.lines(None)[comp["name"]]
            newest = line.releases[-1]
            allowed += ledger.allows(newest.catalog, (comp["name"], newest.version), labels)
    looked = time.perf_counter() - started
    sample = max(1, min(20, len(systems)))
    started = time.perf_counter()
    for _ in range(sample):
        build(catalogs, systems, runs, now)  # what each reconcile would cost unshared
    unshared = (time.perf_counter() - started) / sample
    return {
        "catalog": "50 components x 20 releases, 2 waves + rest",
        "systems": len(systems),
        "runs": len(runs),
        "releases_tracked": len(ledger.progress),
        "ledger_build_ms": round(built * 1000, 1),
        "cpu_share_at_one_build_per_pace": f"{built / LEDGER_PACE_SECONDS:.1%}",
        "lookups_per_system_us": round(looked / len(systems) * 1e6, 1),
        "newest_releases_allowed": allowed,
        "unshared_seconds_per_fleet_pass": round(unshared * len(systems), 1),
    }


# ---- part: a year of history -------------------------------------------------------------
HISTORY_KINDS = (
    ("updateruns", (GROUP, VERSION)),
    ("jobs", ("batch", "v1")),
    ("volumesnapshots", SNAPSHOTS),
)


def history_system(name: str) -> dict[str, Any]:
    """A system whose runs take a snapshot of its one claim; its window opens only on 29
    February (never while the benchmark runs); failed-state snapshots are kept a minute (a
    week of this simulated year lasts some 20 s)."""
    body = sync_system(name)
    body["spec"].update(
        {
            "volumes": [name],
            "backup": {"required": True},
            "rollback": {"keepFailedState": "1m"},
            "maintenance": {
                "timeZone": "Europe/Berlin",
                "windows": [{"name": "leap", "cron": "0 3 29 2 *", "duration": "4h"}],
            },
        }
    )
    return body


def fails(week: int, index: int) -> bool:
    """A quarter of the simulated runs roll back: 13 of each system's 52."""
    return (week + index) % 4 == 0


def count_objects(b: Bench, namespaces: list[str], plural: str, group: tuple[str, str]) -> int:
    """How many there are, from one LIST of one item per namespace (remainingItemCount)."""
    total = 0
    for ns in namespaces:
        if plural == "jobs":
            page = b.batch.list_namespaced_job(ns, limit=1, _preload_content=False)
        else:
            page = b.custom.list_namespaced_custom_object(
                *group, ns, plural, limit=1, _preload_content=False
            )
        listed = json.loads(page.data)
        total += len(listed["items"]) + (listed["metadata"].get("remainingItemCount") or 0)
    return total


def per_system(b: Bench, namespaces: list[str], plural: str, group: tuple[str, str]) -> list[int]:
    """Each system's count of ``plural`` (by the label ``patchwarden.io/system``)."""
    counts: dict[tuple[str, str], int] = {}
    for ns in namespaces:
        token = None
        while True:
            more = {"_continue": token} if token else {}
            if plural == "jobs":
                raw = b.batch.list_namespaced_job(ns, limit=500, _preload_content=False, **more)
            else:
                raw = b.custom.list_namespaced_custom_object(
                    *group, ns, plural, limit=500, _preload_content=False, **more
                )
            page = json.loads(raw.data)
            for item in page["items"]:
                system = (item["metadata"].get("labels") or {}).get(builders.LABEL_SYSTEM, "")
                counts[(ns, system)] = counts.get((ns, system), 0) + 1
            token = page["metadata"].get("continue")
            if not token:
                break
    return sorted(counts.values())


def pass_over(
    b: Bench, part: str, namespaces: list[str], systems: int, timeout: float
) -> dict[str, Any]:
    """An operator started over the systems as they are: when it serves (/readyz), when it
    has reconciled every system once, and its first minute (CPU, requests, writes), its peak
    memory then; stopped after that minute."""
    op = b.start_operator(part, namespaces, {})
    try:
        serving = reconciled = None
        while time.monotonic() - op.started < timeout and reconciled is None:
            if serving is None and op.ready():
                serving = time.monotonic() - op.started
            if serving is not None and op.metric("patchwarden_reconcile_total") >= systems:
                reconciled = time.monotonic() - op.started
            # A /metrics read costs the operator CPU (per-system series): once a second.
            time.sleep(1.0 if serving is not None else 0.1)
        time.sleep(max(0.0, 60.0 - (time.monotonic() - op.started)))
        return {
            "serving_seconds": round(serving, 2) if serving is not None else None,
            "every_system_reconciled_seconds": round(reconciled, 2) if reconciled else None,
            "first_minute": op.cost(),
        }
    finally:
        op.stop()


def history_part(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """A simulated year of weekly windows: for each system, 52 ended runs (a quarter rolled
    back), each with its suspended Job (owned by the run, as the operator makes it) and its
    snapshot, plus a failed-state snapshot for each rollback, all made directly while no
    operator runs (a running one would take a new run for its own). Then an operator over
    it: how long until runs, Jobs and snapshots are back within the limits, and what that
    start costs; and the steady state against the same fleet with no history at all."""
    count, weeks = args.history, args.history_weeks
    namespaces = b.make_namespaces("history", args.history_namespaces)
    names = [(namespaces[i % len(namespaces)], f"h{i}") for i in range(count)]
    parallel(
        args.parallelism,
        lambda k: b.core.create_namespaced_persistent_volume_claim(k[0], claim(k[1])),
        names,
    )
    parallel(
        args.parallelism,
        lambda k: b.apps.create_namespaced_deployment(k[0], deployment(k[1], replicas=0)),
        names,
    )
    systems: dict[tuple[str, str], tuple[str, ManagedSystemSpec]] = {}

    def make_system(k: tuple[str, str]) -> None:
        body = history_system(k[1])
        made = b.custom.create_namespaced_custom_object(
            GROUP, VERSION, k[0], "managedsystems", body
        )
        systems[k] = (made["metadata"]["uid"], ManagedSystemSpec.model_validate(body["spec"]))

    parallel(args.parallelism, make_system, names)
    settle(b, namespaces)
    # The same fleet with no history: its first sync, then a restart (the steady state).
    first = b.start_operator("history-sync", namespaces, {})
    try:
        wait_until(
            "every system reconciled",
            lambda: first.metric("patchwarden_reconcile_total") >= count,
            args.timeout,
            every=1.0,
        )
        synced = time.monotonic() - first.started
        time.sleep(10.0)  # its status writes land
    finally:
        first.stop()
    without = pass_over(b, "history-none", namespaces, count, args.timeout)

    year = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0)
    year -= timedelta(weeks=weeks)

    def one(item: tuple[int, tuple[str, str], int]) -> int:
        week, (ns, name), index = item
        uid, spec = systems[(ns, name)]
        opens = year + timedelta(weeks=week)
        window = WindowRef(
            name="weekly",
            start=opens.isoformat(),
            end=(opens + timedelta(hours=4)).isoformat(),
            cutoff=(opens + timedelta(hours=3)).isoformat(),
        )
        run = direct_run(name, uid, spec, window, opens)
        run_name = run["metadata"]["name"]
        backup = builders.volume_snapshot(
            run=run_name, system=name, claim=name, snapshot_class="standard-snapshots"
        )
        b.custom.create_namespaced_custom_object(*SNAPSHOTS, ns, "volumesnapshots", backup)
        made = b.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "updateruns", run)
        job = direct_job(run_name, made["metadata"]["uid"], name, spec)
        job["spec"]["suspend"] = True  # its pod never runs: 52,000 pods would not fit kwok
        b.batch.create_namespaced_job(ns, job)
        writes = 4
        phase = "Succeeded"
        if fails(week, index):
            phase = "RolledBack"
            failed = builders.volume_snapshot(
                run=run_name,
                system=name,
                claim=name,
                snapshot_class="standard-snapshots",
                failed_state=True,
            )
            b.custom.create_namespaced_custom_object(*SNAPSHOTS, ns, "volumesnapshots", failed)
            writes += 1
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        status = {"phase": phase, "startTime": now, "completionTime": now, "message": "simulated"}
        b.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, "updateruns", run_name, {"status": status}
        )
        return writes

    started, writes = time.monotonic(), 0
    for week in range(weeks):
        items = [(week, k, i) for i, k in enumerate(names)]
        with ThreadPoolExecutor(args.parallelism) as pool:
            writes += sum(pool.map(one, items))
    made = {plural: count_objects(b, namespaces, plural, g) for plural, g in HISTORY_KINDS}
    made_seconds = time.monotonic() - started
    # What the limits leave: the newest 3 successes and the newest 10 rollbacks of each
    # system's runs (their Jobs with them); the snapshots of the newest 3 runs (retain) and
    # of the newest success, and failed-state ones younger than the newest success less 1m.
    runs_bound = sum(
        min(sum(not fails(w, i) for w in range(weeks)), 3)
        + min(sum(fails(w, i) for w in range(weeks)), 10)
        for i in range(count)
    )
    op = b.start_operator("history-year", namespaces, {})
    try:
        serving, snaps_before = None, -1

        def within() -> bool:
            """Runs and Jobs within their bound; the snapshots, whose bound depends on when
            each was made (``keepFailedState`` is an age), no longer falling while no system
            waits for a reconcile."""
            nonlocal serving, snaps_before
            if serving is None and op.ready():
                serving = time.monotonic() - op.started
            runs = count_objects(b, namespaces, "updateruns", (GROUP, VERSION))
            jobs = count_objects(b, namespaces, "jobs", ("batch", "v1"))
            snaps = count_objects(b, namespaces, "volumesnapshots", SNAPSHOTS)
            still, snaps_before = snaps == snaps_before, snaps
            idle = serving is not None and op.metric("patchwarden_work_queue_backlog") == 0
            return runs <= runs_bound and jobs <= runs_bound and still and idle

        wait_until("the history within its limits", within, args.timeout * 3, every=5)
        bounded = time.monotonic() - op.started
        pruned = op.cost()
    finally:
        op.stop()
    left = {plural: per_system(b, namespaces, plural, g) for plural, g in HISTORY_KINDS}
    after = pass_over(b, "history-after", namespaces, count, args.timeout)
    return {
        "systems": count,
        "weeks": weeks,
        "namespaces": len(namespaces),
        "no_history_first_sync_seconds": round(synced, 2),
        "no_history_restart": without,
        "year_made_seconds": round(made_seconds, 1),
        "year_writes": writes,
        "year_objects": made,
        "year_start_serving_seconds": round(serving, 2) if serving is not None else None,
        "year_start_within_limits_seconds": round(bounded, 1),
        "year_start": pruned,
        "runs_bound": runs_bound,
        "left_per_system_max": {plural: max(c, default=0) for plural, c in left.items()},
        "left_total": {plural: sum(c) for plural, c in left.items()},
        "pruned_history_restart": after,
    }


# ---- main ------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=2000, help="fleet sync size (default 2000)")
    parser.add_argument("--namespaces", type=int, default=50, help="for the fleet (default 50)")
    parser.add_argument("--parallelism", type=int, default=16, help="raw client threads (16)")
    parser.add_argument("--storm-systems", type=int, default=500, help="default 500")
    parser.add_argument("--storm-namespaces", type=int, default=10, help="default 10")
    parser.add_argument("--storm-limit", type=int, default=50, help="max concurrent runs (50)")
    parser.add_argument("--storm-lead", type=float, default=45, help="s until the window opens")
    parser.add_argument(
        "--notify-delay",
        type=float,
        default=None,
        help="also run the storm with notifications to a receiver taking this many s per event",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=0,
        help="after the sync, leave the fleet alone this long: the operator's idle cost",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="after the sync, start a new operator: time to serving, first-minute writes",
    )
    parser.add_argument(
        "--cluster-wide",
        action="store_true",
        help="the operator serves the whole cluster (the chart's default), not each namespace",
    )
    parser.add_argument("--skip-sync", action="store_true")
    parser.add_argument("--skip-storm", action="store_true")
    parser.add_argument(
        "--targets", type=int, default=0, help="systems for the target-resolution part (0: skip)"
    )
    parser.add_argument(
        "--waves", type=int, default=0, help="systems for the waves-ledger part (0: skip)"
    )
    parser.add_argument(
        "--history", type=int, default=0, help="systems for the year-of-history part (0: skip)"
    )
    parser.add_argument("--history-weeks", type=int, default=52, help="default 52")
    parser.add_argument("--history-namespaces", type=int, default=10, help="default 10")
    parser.add_argument("--timeout", type=float, default=900, help="per part, seconds")
    parser.add_argument(
        "--profile",
        type=Path,
        help="record each operator with py-spy (raw collapsed stacks) to FILE-<part>.txt",
    )
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results.json")
    args = parser.parse_args()
    offline: dict[str, Any] = {}
    if args.targets:
        offline["targets"] = targets_part(args)
    if args.waves:
        offline["waves"] = waves_part(args)
    if offline:
        show(offline)
        if args.skip_sync and args.skip_storm:
            args.output.write_text(json.dumps(offline, indent=2) + "\n")
            print(f"written: {args.output}")
            return 0

    dev = DevCluster(state_dir=REPO / ".cluster", tools_dir=resolve_tools(REPO))
    dev.up()
    dev.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    b = Bench(dev, args.parallelism, args.profile)
    b.cluster_wide = args.cluster_wide
    b.clear_leftovers(args.timeout)
    results: dict[str, Any] = {
        "inputs": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cores": os.cpu_count(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(),
            "kopf": version("kopf"),
            "kubernetes_client": version("kubernetes"),
            "kube_apiserver": dev.kubectl("version", "-o", "json")
            .split('"gitVersion": "')[2]
            .split('"')[0],
        },
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        **offline,
    }
    ok = True
    try:
        # The storm first: the sync's Deployments keep the controller manager busy creating
        # their ReplicaSets (at its 20 requests/s) for minutes, and the storm's Jobs need it.
        if not args.skip_storm:
            results["storm"] = s = storm(b, args)
            ok &= s["limit_held"] and s["runs_succeeded"] == s["systems"]
            # As many status patches per run as the operator made beyond the 4 other writes.
            patches = max(1, round(s["operator_writes_per_run"]) - 4)
            # The runs first: the writes-only part leaves its Jobs for the controller manager
            # to run, which would slow any Jobs after it (it waits for them, untimed, at its end).
            for part, waits in (("raw_storm_runs", True), ("raw_storm", False)):
                results[part] = r = raw_storm(b, args, patches, waits)
                r["ratio_operator_to_raw"] = round(s["open_to_all_ended_seconds"] / r["seconds"], 2)
            if args.notify_delay is not None:
                results["storm_notify"] = n = storm(b, args, args.notify_delay)
                ok &= n["limit_held"] and n["runs_succeeded"] == n["systems"]
            show(results)
        if args.history:
            results["history"] = h = history_part(b, args)
            ok &= h["left_total"]["updateruns"] <= h["runs_bound"]
            show(results)
            b.retire([ns for ns in b.namespaces if "-history-" in ns], args.timeout)
        if not args.skip_sync:
            results["fleet_sync"] = fleet_sync(b, args)
            ok &= results["fleet_sync"]["sync_seconds"] is not None
            show(results)
    finally:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        b.cleanup()
    print(f"written: {args.output}")
    return 0 if ok else 1


def show(results: dict[str, Any]) -> None:
    parts = (
        "targets",
        "waves",
        "storm",
        "storm_notify",
        "raw_storm_runs",
        "raw_storm",
        "history",
        "fleet_sync",
    )
    for part in parts:
        if part not in results:
            continue
        print(f"\n{part}")
        for key, value in results[part].items():
            print(f"  {key:<34} {value}")


if __name__ == "__main__":
    sys.exit(main())
