"""Crash anywhere (issue 35): a scenario's run with the operator behind the fault proxy
(tests/faultproxy.py), SIGKILLed at its ``n``-th write — the write landed (``after``) or
never did (``before``) — and a new operator started without the proxy. Then what the
namespace holds is compared with what the same scenario leaves without a crash.

A point's :class:`Outcome` is everything the promise is about: the run's phase, how many
runs, Jobs, pre-update and failed-state snapshots (per claim) and claims exist, the
workload's images and replicas, the finalizers left, what the system's and the request's
status and the operator's metrics say of the run. A watch beside the operators checks
each claim deletion at the moment it is seen: its failed-state snapshot must be ready.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from tests.conftest import Cluster
from tests.faultproxy import Mode, fault_proxy
from tests.helpers import wait_for
from tests.operator_harness import (
    ENDED,
    Operator,
    create,
    free_port,
    get,
    items,
    release_catalog,
    running_operator,
    samples,
    scrape,
    system,
    update_request,
    workload,
)

OLD, NEW = "example.com/shop:1.0.0", "example.com/shop:1.1.0"
SNAPSHOTS = ("snapshot.storage.k8s.io", "v1")
FAIL = {"devcluster.patchwarden.io/outcome": "fail"}
SETTLE_SECONDS = 150
"""How long the restarted operator has to finish what the crash interrupted."""


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    package: str | None
    claims: int
    job: dict[str, str]
    request: bool = False
    """An UpdateRequest starts the run (the system has no update of its own)."""
    delete_run: bool = False
    """The run is deleted once its Job exists (a person, or a GitOps prune)."""


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("succeeds", "SaaS", None, 1, {"devcluster.patchwarden.io/duration": "1s"}),
        Scenario(
            "rolls-back", "SaaS", None, 2, {**FAIL, "devcluster.patchwarden.io/duration": "1s"}
        ),
        Scenario(
            "run-deleted",
            "SaaS",
            None,
            1,
            {"devcluster.patchwarden.io/duration": "30s"},
            delete_run=True,
        ),
        Scenario(
            "request",
            "PaaS",
            "basic",
            1,
            {"devcluster.patchwarden.io/duration": "1s"},
            request=True,
        ),
    )
}


@dataclass(frozen=True)
class Outcome:
    """What a scenario left in its namespace (compared whole, point against baseline)."""

    phase: str
    runs: int
    jobs: int
    backups: tuple[tuple[str, int], ...]
    """Pre-update snapshots per claim."""
    failed_state: tuple[tuple[str, int], ...]
    """Failed-state snapshots (a rollback's copy of what the update wrote) per claim."""
    claims: tuple[str, ...]
    images: tuple[str, ...]
    replicas: int
    finalizers: tuple[str, ...]
    """On the system and the run (if any), by kind."""
    system_last_run: str | None
    request_state: str | None
    metric_runs: tuple[tuple[str, float], ...]
    """``patchwarden_update_runs_total`` for the system by result: whether the killed
    operator (read just before it was killed) or the one that finished counted it. Each
    run's end must be counted (at least once: :func:`_finish`)."""

    def differences(self, other: Outcome) -> list[str]:
        mine, theirs = asdict(self), asdict(other)
        return [f"{k}: {mine[k]!r} (expected {theirs[k]!r})" for k in mine if mine[k] != theirs[k]]


@dataclass
class Point:
    """One crash point's result, a row of the matrix."""

    scenario: str
    n: int | None
    mode: Mode | None
    write: str
    """The write the crash came at (method and path), or "-" for the baseline."""
    outcome: Outcome | None = None
    problems: list[str] = field(default_factory=list)
    writes: int = 0
    """Writes the proxy counted (the baseline: the scenario's whole count)."""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    """What is worth saying and not wrong (an end counted twice)."""
    trace: list[str] = field(default_factory=list)
    """The baseline's writes in order (what each ``n`` means, in a run without a crash)."""

    @property
    def ok(self) -> bool:
        return self.outcome is not None and not self.problems

    def row(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "n": self.n,
            "mode": self.mode,
            "write": self.write,
            "phase": self.outcome.phase if self.outcome else None,
            "ok": self.ok,
            "problems": self.problems,
            "notes": self.notes,
            "seconds": round(self.seconds, 1),
            **({"trace": self.trace} if self.trace else {}),
        }


SAMPLE = 3
"""Crash points per scenario in ``make test``."""


def sample(writes: int, count: int = SAMPLE, every: bool = False) -> list[tuple[int, Mode]]:
    """``count`` crash points of a scenario of ``writes`` writes, evenly spread inside it
    (at a quarter, half and three quarters of the writes for 3), the modes alternating;
    with ``every``, each write in both modes (``make chaos``)."""
    modes: tuple[Mode, Mode] = ("after", "before")
    if every:
        return [(n, m) for n in range(1, writes + 1) for m in modes]
    picks = sorted({max(1, round((i + 1) * writes / (count + 1))) for i in range(count)})
    return [(n, modes[i % 2]) for i, n in enumerate(picks)]


def chosen(spec: str, scenario: str) -> list[tuple[int, Mode]] | None:
    """The points ``PATCHWARDEN_CHAOS`` names for ``scenario`` (``succeeds:14:after,…``, a
    matrix row to reproduce), or None when it names none."""
    found: list[tuple[int, Mode]] = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, n, mode = item.split(":")
        if mode not in ("after", "before"):
            raise ValueError(f"PATCHWARDEN_CHAOS: {item!r}: the mode is after or before")
        if name == scenario:
            found.append((int(n), "after" if mode == "after" else "before"))
    return found or None


# ---- the scenario's objects --------------------------------------------------------------


def setup(cluster: Cluster, ns: str, scenario: Scenario, catalog: str) -> None:
    core, apps = client.CoreV1Api(cluster.api), client.AppsV1Api(cluster.api)
    workload(core, apps, ns, claims=scenario.claims, container={"name": "web", "image": OLD})
    body = system("shop", scenario.model, scenario.package, job=scenario.job)
    body["spec"]["updates"]["catalogs"] = [catalog]
    body["spec"]["updates"]["runJob"] = "WhenNewer"
    body["spec"]["components"] = [
        {
            "name": "shop",
            "container": "web",
            "installedBy": "provider",
            "source": "standard-repository",
        }
    ]
    create(cluster, ns, body)
    if scenario.request:
        create(cluster, ns, update_request("hd-1", "shop", "HD-1"))


@contextmanager
def catalog_for(cluster: Cluster, ns: str) -> Iterator[str]:
    def release(version: str, image: str) -> dict[str, Any]:
        return {
            "version": version,
            "image": image,
            "classes": ["security"],
            "released": "2026-01-05T00:00:00Z",
        }

    with release_catalog(
        cluster, ns, {"shop": [release("1.0.0", OLD), release("1.1.0", NEW)]}
    ) as name:
        yield name


class Actor:
    """What a person does during the scenario, whichever operator is running: delete the
    run once its Job exists."""

    def __init__(self, cluster: Cluster, ns: str, scenario: Scenario) -> None:
        self.cluster, self.ns, self.scenario = cluster, ns, scenario
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._act, daemon=True)

    def __enter__(self) -> Actor:
        if self.scenario.delete_run:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _act(self) -> None:
        custom = client.CustomObjectsApi(self.cluster.api)
        while not self._stop.wait(0.1):
            for run in items(self.cluster, self.ns, "UpdateRun"):
                if ((run.get("status") or {}).get("job") or {}).get("created"):
                    custom.delete_namespaced_custom_object(
                        "patchwarden.io",
                        "v1alpha1",
                        self.ns,
                        "updateruns",
                        run["metadata"]["name"],
                    )
                    self.done.set()
                    return


class ClaimGuard:
    """Watches the namespace's claims: each deletion seen must find the claim's
    failed-state snapshot ready (it is made ready before the deletion is asked for, so a
    look after seeing the deletion finds it ready unless the rule was broken)."""

    def __init__(self, cluster: Cluster, ns: str) -> None:
        self.cluster, self.ns = cluster, ns
        self.violations: list[str] = []
        self.deleted: list[str] = []
        self._stopping = False
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ClaimGuard:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping = True
        self._watch.stop()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            self._watch_claims()
        except Exception as exc:  # the namespace going ends the watch; before that, say so
            if not self._stopping:
                self.violations.append(f"the claims' watch failed: {exc}")

    def _watch_claims(self) -> None:
        core = client.CoreV1Api(self.cluster.api)
        custom = client.CustomObjectsApi(self.cluster.api)
        seen: set[tuple[str, str]] = set()
        for event in self._watch.stream(
            core.list_namespaced_persistent_volume_claim, self.ns, timeout_seconds=600
        ):
            claim = event["object"]
            uid = (claim.metadata.name, claim.metadata.uid)
            if not (event["type"] == "DELETED" or claim.metadata.deletion_timestamp):
                continue
            if uid in seen:
                continue
            seen.add(uid)
            self.deleted.append(claim.metadata.name)
            snaps = custom.list_namespaced_custom_object(*SNAPSHOTS, self.ns, "volumesnapshots")
            ready = [
                s
                for s in snaps["items"]
                if s["metadata"].get("labels", {}).get("patchwarden.io/state")
                and s["spec"]["source"].get("persistentVolumeClaimName") == claim.metadata.name
                and (s.get("status") or {}).get("readyToUse")
            ]
            if not ready:
                self.violations.append(
                    f"claim {claim.metadata.name} deleted with no ready failed-state snapshot"
                )


# ---- what a scenario left ----------------------------------------------------------------


def scrape_runs(port: int, ns: str) -> tuple[tuple[str, float], ...]:
    """The runs of ``ns`` the operator on ``port`` counted, by result."""
    found: dict[str, float] = {}
    for (name, labels), count in samples(scrape(port)).items():
        tags = dict(labels)
        if name == "patchwarden_update_runs_total" and tags.get("namespace") == ns:
            found[tags["result"]] = found.get(tags["result"], 0.0) + count
    return tuple(sorted(found.items()))


def outcome(cluster: Cluster, ns: str, metrics_port: int) -> Outcome:
    apps = client.AppsV1Api(cluster.api)
    core = client.CoreV1Api(cluster.api)
    custom = client.CustomObjectsApi(cluster.api)
    runs = items(cluster, ns, "UpdateRun")
    snaps = custom.list_namespaced_custom_object(*SNAPSHOTS, ns, "volumesnapshots")["items"]
    kinds: dict[bool, Counter[str]] = {True: Counter(), False: Counter()}
    for s in snaps:
        failed = bool(s["metadata"].get("labels", {}).get("patchwarden.io/state"))
        kinds[failed][s["spec"]["source"].get("persistentVolumeClaimName", "?")] += 1
    deployment = apps.read_namespaced_deployment("app", ns)
    msys = get(cluster, ns, "ManagedSystem", "shop")
    finalizers = [f"system:{f}" for f in msys["metadata"].get("finalizers") or []]
    for run in runs:
        finalizers += [f"run:{f}" for f in run["metadata"].get("finalizers") or []]
    requests = items(cluster, ns, "UpdateRequest")
    return Outcome(
        phase=str((runs[0].get("status") or {}).get("phase")) if runs else "deleted",
        runs=len(runs),
        jobs=len(client.BatchV1Api(cluster.api).list_namespaced_job(ns).items),
        backups=tuple(sorted(kinds[False].items())),
        failed_state=tuple(sorted(kinds[True].items())),
        claims=tuple(
            sorted(c.metadata.name for c in core.list_namespaced_persistent_volume_claim(ns).items)
        ),
        images=tuple(c.image for c in deployment.spec.template.spec.containers),
        replicas=int(deployment.spec.replicas or 0),
        finalizers=tuple(sorted(finalizers)),
        system_last_run=((msys.get("status") or {}).get("lastRun") or {}).get("result"),
        request_state=(requests[0].get("status") or {}).get("state") if requests else None,
        metric_runs=scrape_runs(metrics_port, ns),
    )


def unsettled(cluster: Cluster, ns: str, scenario: Scenario, actor: Actor) -> str:
    """What keeps the scenario from having come to rest ("" once it has): its run ended
    (or, deleted, went), the system saw so and holds no run finalizer, a request saw its
    run end."""
    runs = items(cluster, ns, "UpdateRun")
    msys = get(cluster, ns, "ManagedSystem", "shop")
    if "patchwarden.io/active-run" in (msys["metadata"].get("finalizers") or []):
        return "the system still holds patchwarden.io/active-run"
    last = ((msys.get("status") or {}).get("lastRun") or {}).get("result")
    if scenario.delete_run:
        if not actor.done.is_set():
            return "the run not deleted yet"
        return f"{len(runs)} runs left" if runs else ""
    phases = [(r.get("status") or {}).get("phase") for r in runs]
    if len(runs) != 1 or phases[0] not in ENDED:
        return f"runs in {phases}"
    held = runs[0]["metadata"].get("finalizers")
    if held or (runs[0].get("status") or {}).get("counted") is False:
        # kopf releases its finalizer once the run's daemon has ended (the end counted) and
        # it has seen the run again: a moment after the end, which a look can fall into.
        # One never released ends the wait as a problem (SETTLE_SECONDS).
        return f"the run ended, its end not counted yet or finalizers {held} still held"
    if last != phases[0]:
        return f"the system's lastRun is {last}, the run {phases[0]}"
    if scenario.request:
        state = (items(cluster, ns, "UpdateRequest")[0].get("status") or {}).get("state")
        if state != phases[0]:
            return f"the request is {state}, its run {phases[0]}"
    return ""


def wait_settled(cluster: Cluster, ns: str, scenario: Scenario, actor: Actor) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while why := unsettled(cluster, ns, scenario, actor):
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled after {SETTLE_SECONDS}s: {why}")
        time.sleep(0.2)


# ---- one point ---------------------------------------------------------------------------


def run_point(
    cluster: Cluster,
    ns: str,
    directory: Path,
    scenario: Scenario,
    n: int | None,
    mode: Mode = "after",
) -> Point:
    """The scenario with a crash at write ``n`` (None: the baseline, no crash)."""
    started = time.monotonic()
    point = Point(scenario.name, n, mode if n else None, "-")
    port, first_port = free_port(), free_port()
    with (
        catalog_for(cluster, ns) as catalog,
        ClaimGuard(cluster, ns) as guard,
        fault_proxy(cluster.kubeconfig, directory, n, mode) as (proxy, proxied),
    ):
        op = Operator(
            cluster,
            ns,
            directory / "operator.log",
            {"KUBECONFIG": str(proxied), "PATCHWARDEN_METRICS_PORT": str(first_port)},
        )
        op.start()
        counted_first: tuple[tuple[str, float], ...] = ()
        try:
            with Actor(cluster, ns, scenario) as actor:
                setup(cluster, ns, scenario, catalog)
                if n is None:
                    wait_settled(cluster, ns, scenario, actor)
                elif not proxy.tripped.wait(SETTLE_SECONDS):
                    point.problems.append(f"never reached write {n} ({proxy.count} seen)")
                # What the first operator counted, read before it dies (its traffic to the
                # API server stopped; its metrics endpoint still answers).
                counted_first = _scrape_or_nothing(first_port, ns)
                if n is not None:
                    op.kill()
                    if proxy.writes and proxy.tripped.is_set():
                        point.write = _generic(str(next(w for w in proxy.writes if w.n == n)), ns)
                point.writes = proxy.count
                if n is None:
                    point.trace = [_generic(str(w), ns) for w in proxy.writes]
                op.stop()
                (directory / "after").mkdir(exist_ok=True)
                with running_operator(
                    cluster,
                    ns,
                    directory / "after",
                    PATCHWARDEN_METRICS_PORT=str(port),
                    # Outranks the killed one at once (its peering record lives on 60 s).
                    PATCHWARDEN_PRIORITY="5000",
                ):
                    _finish(cluster, ns, scenario, actor, point, port, counted_first)
        finally:
            op.stop()
        point.problems += guard.violations
    point.seconds = time.monotonic() - started
    return point


def _generic(write: str, ns: str) -> str:
    return write.replace(f"/namespaces/{ns}/", "/namespaces/NS/")


def _scrape_or_nothing(port: int, ns: str) -> tuple[tuple[str, float], ...]:
    try:
        return scrape_runs(port, ns)
    except OSError:
        return ()  # it had not started serving (a crash at its first writes)


def _finish(
    cluster: Cluster,
    ns: str,
    scenario: Scenario,
    actor: Actor,
    point: Point,
    port: int,
    counted_first: tuple[tuple[str, float], ...],
) -> None:
    try:
        wait_settled(cluster, ns, scenario, actor)
    except AssertionError as exc:
        point.problems.append(str(exc).splitlines()[0][:300])
    found = wait_for(
        lambda: _outcome_with_metrics(cluster, ns, port),
        timeout=30,
        what="the operator's metrics",
    )
    # A run's end is counted at least once, by whichever operator got there: both
    # processes' counts. Twice only when the first died between counting it and recording
    # so (status.counted); the first's count then dies with it unless a scrape came between.
    total = Counter(dict(counted_first))
    total.update(dict(found.metric_runs))
    if any(v > 1 for v in total.values()):
        point.notes.append(f"counted {dict(total)} (first operator {dict(counted_first)})")
    point.outcome = replace(
        found, metric_runs=tuple(sorted((k, min(v, 1.0)) for k, v in total.items()))
    )


def _outcome_with_metrics(cluster: Cluster, ns: str, port: int) -> Outcome | None:
    try:
        found = outcome(cluster, ns, port)
    except OSError:
        return None  # not serving yet
    return found if found.metric_runs else None


def compare(point: Point, baseline: Point) -> Point:
    if point.outcome is not None and baseline.outcome is not None:
        point.problems += point.outcome.differences(baseline.outcome)
    return point


def matrix_text(points: list[Point]) -> str:
    lines = [f"{'scenario':<12} {'n':>3} {'mode':<6} {'phase':<11} ok  write"]
    for p in points:
        lines.append(
            f"{p.scenario:<12} {p.n or '-':>3} {p.mode or '-':<6} "
            f"{(p.outcome.phase if p.outcome else '?'):<11} {'yes' if p.ok else 'NO ':<3} "
            f"{p.write}" + ("".join(f"\n    ! {x}" for x in p.problems))
        )
    return "\n".join(lines)


def write_matrix(path: Path, points: list[Point], extra: dict[str, Any]) -> None:
    crashes = [p for p in points if p.n]
    body = {
        **extra,
        "crash_points": len(crashes),
        "as_expected": sum(p.ok for p in crashes),
        "rows": [p.row() for p in points],
    }
    path.write_text(json.dumps(body, indent=1) + "\n")


# ---- a takeover, a replica cut off ----------------------------------------------------------


@dataclass
class Takeover:
    """Two replicas, the active one SIGKILLed (or cut off) at a chosen write: what the
    standby did, and what the active one tried meanwhile."""

    outcome: Outcome | None = None
    seconds: float | None = None
    """From the kill (or cut) to the standby's first write (None: it never wrote)."""
    written_while_active: list[str] = field(default_factory=list)
    """The standby's writes before the active one was killed or cut off: two writers."""
    killed_at: str = "-"
    held: list[tuple[float, str]] = field(default_factory=list)
    """Cut off: the writes the active replica tried afterwards (never forwarded), seconds
    after the cut."""
    fenced: bool = False
    """Cut off: the active replica said it stopped acting (its entry not renewed)."""
    after_heal: Outcome | None = None
    """Cut off: what the namespace holds once the active replica reconnected and acted again."""
    problems: list[str] = field(default_factory=list)


def peers(cluster: Cluster, ns: str) -> int:
    """How many replicas have an entry in the namespace's peering object (the harness's)."""
    custom = client.CustomObjectsApi(cluster.api)
    try:
        body = custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", f"pw-{ns}")
    except client.ApiException:
        return 0
    return len(body.get("status") or {})


def takeover(
    cluster: Cluster,
    ns: str,
    directory: Path,
    kill_after: Callable[[str, str], bool],
    lifetime: int,
    cut_off: bool = False,
) -> Takeover:
    """``rolls-back`` with an active replica (the higher priority) and a standby, each
    behind its own proxy: the active one's stops all traffic after the first write
    ``kill_after`` (method, path) names, and the replica is SIGKILLed — or, ``cut_off``,
    left running, cut off from the API server, until the standby has finished; then its
    traffic flows again. The standby's proxy passes everything and times its writes. Both
    renew their peering entries with ``lifetime``."""
    scenario = SCENARIOS["rolls-back"]
    result = Takeover()
    ports = {"active": free_port(), "standby": free_port()}
    for name in ports:
        (directory / name).mkdir(exist_ok=True)
    with (
        catalog_for(cluster, ns) as catalog,
        ClaimGuard(cluster, ns) as guard,
        fault_proxy(cluster.kubeconfig, directory / "active", trip_on=kill_after) as (
            tripping,
            to_active,
        ),
        fault_proxy(cluster.kubeconfig, directory / "standby") as (timing, to_standby),
    ):

        def replica(name: str, kubeconfig: Path, priority: int) -> Operator:
            return Operator(
                cluster,
                ns,
                directory / name / "operator.log",
                {
                    "KUBECONFIG": str(kubeconfig),
                    "PATCHWARDEN_PRIORITY": str(priority),
                    "PATCHWARDEN_METRICS_PORT": str(ports[name]),
                    "PATCHWARDEN_PEERING_LIFETIME_SECONDS": str(lifetime),
                },
            )

        active = replica("active", to_active, 2000)
        standby = replica("standby", to_standby, 1000)
        try:
            # The standby starts once the active one is in the peering object: it pauses
            # from its start, as a second replica of a running operator does.
            active.start()
            wait_for(lambda: peers(cluster, ns) >= 1, timeout=60, what="the active replica")
            standby.start()
            wait_for(lambda: peers(cluster, ns) >= 2, timeout=60, what="the standby replica")
            with Actor(cluster, ns, scenario) as actor:
                setup(cluster, ns, scenario, catalog)
                if not tripping.tripped.wait(SETTLE_SECONDS):
                    result.problems.append("the active replica never made the write to stop at")
                counted_first = _scrape_or_nothing(ports["active"], ns)
                stopped = time.monotonic()
                if not cut_off:
                    active.kill()
                tripped = [w for w in tripping.writes if w.n == tripping.trip_at]
                result.killed_at = _generic(str(tripped[0]), ns) if tripped else "-"
                result.written_while_active = [
                    _generic(str(w), ns) for w in timing.writes if w.at < stopped
                ]
                point = Point(scenario.name, None, None, result.killed_at)
                _finish(cluster, ns, scenario, actor, point, ports["standby"], counted_first)
                result.outcome, result.problems = point.outcome, result.problems + point.problems
                later = [w.at for w in timing.writes if w.at >= stopped]
                result.seconds = min(later) - stopped if later else None
                if cut_off:
                    result.held = [(w.at - stopped, _generic(str(w), ns)) for w in tripping.held]
                    result.fenced = "was not renewed for" in active.output()
                    acted = active.output().count("reconciling systems")
                    tripping.heal()
                    wait_for(
                        lambda: active.output().count("reconciling systems") > acted,
                        timeout=lifetime * 4,
                        what="the reconnected replica to act again",
                    )
                    log = active.output()
                    fence = log.find("was not renewed for")
                    if fence < 0 or "renewed after a fence" not in log[fence:]:
                        result.problems.append("acted again without waiting for the standby")
                    result.after_heal = replace(
                        outcome(cluster, ns, ports["active"]), metric_runs=()
                    )
        finally:
            active.stop()
            standby.stop()
        result.problems += guard.violations
    return result
