"""``patchwarden plan``: what would happen to each system, offline.

Reads ManagedSystems, UpdateRequests, ReleaseCatalogs and the systems' workloads
(Deployments, StatefulSets) from YAML, and answers for each system its next windows,
whether an update would run in each, why, and what it would install. The JSON form
is a contract documented in docs/plan.md.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from pydantic import ValidationError

from patchwarden.api.catalog import ReleaseCatalog
from patchwarden.api.common import GROUP, describe_errors, parse_duration
from patchwarden.api.maintenance import Cadence
from patchwarden.api.request import RequestState, UpdateRequest
from patchwarden.api.run import Target, Trigger
from patchwarden.api.system import ManagedSystem, ManagedSystemSpec, RunJob
from patchwarden.core.history import counted
from patchwarden.core.policy import Assessment, assess, decide_request, installed_classes
from patchwarden.core.releases import Catalogs, Known, end_of_life_passed, states
from patchwarden.core.scheduler import Start, decide_start
from patchwarden.core.status import SystemFacts, needs_approval
from patchwarden.core.system import Decision, SkipWindow, Timing, decide
from patchwarden.core.times import utc_text
from patchwarden.core.waves import build as build_ledger
from patchwarden.core.waves import wave_name, wave_of
from patchwarden.core.windows import Calendar, Occurrence, cadence_period, next_windows


class PlanInputError(ValueError):
    """Input that cannot be planned; the message names the document and the field."""


def _describe(doc: Any) -> str:
    if not isinstance(doc, dict) or "kind" not in doc:
        return ""
    meta = doc.get("metadata") or {}
    return f" ({doc.get('kind')} {meta.get('namespace', 'default')}/{meta.get('name', '?')})"


WORKLOADS = ("Deployment", "StatefulSet")
MODELS: dict[str, type[ManagedSystem] | type[UpdateRequest] | type[ReleaseCatalog]] = {
    "ManagedSystem": ManagedSystem,
    "UpdateRequest": UpdateRequest,
    "ReleaseCatalog": ReleaseCatalog,
}


@dataclass
class Inputs:
    """What ``plan`` reads: the systems, the requests, the catalogs, and the workloads
    (for the versions their containers run); other Kubernetes objects are ignored."""

    systems: list[ManagedSystem] = field(default_factory=list)
    requests: list[UpdateRequest] = field(default_factory=list)
    catalogs: list[dict[str, Any]] = field(default_factory=list)
    workloads: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    """(namespace, kind, name) → the workload."""

    def add(self, other: Inputs) -> None:
        self.systems += other.systems
        self.requests += other.requests
        self.catalogs += other.catalogs
        self.workloads.update(other.workloads)


def load(text: str, source: str = "input") -> Inputs:
    """Parse and validate every YAML document; the first problem raises PlanInputError."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise PlanInputError(f"{source}: not valid YAML: {exc}") from exc
    found = Inputs()
    for index, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        where = f"{source}: document {index}{_describe(doc)}"
        kind = doc.get("kind") if isinstance(doc, dict) else None
        api_version = str(doc.get("apiVersion", "")) if isinstance(doc, dict) else ""
        model = MODELS.get(str(kind))
        if model is None:
            if api_version and not api_version.startswith(f"{GROUP}/"):
                if kind in WORKLOADS:
                    meta = doc.get("metadata") or {}
                    key = (meta.get("namespace", "default"), str(kind), meta.get("name", ""))
                    found.workloads[key] = {**doc, "kind": kind}
                continue  # a Namespace, a claim …: applied with the examples, not planned
            raise PlanInputError(
                f"{where}: kind must be ManagedSystem, UpdateRequest or ReleaseCatalog (or a "
                f"Kubernetes object with its apiVersion, which is skipped), not {kind!r}"
            )
        try:
            obj = model.model_validate(doc)
        except ValidationError as exc:
            raise PlanInputError(f"{where}: {describe_errors(exc)[0]}") from exc
        if not obj.metadata.get("name"):
            raise PlanInputError(f"{where}: metadata.name is required")
        if isinstance(obj, ReleaseCatalog):
            found.catalogs.append(obj.model_dump(by_alias=True, mode="json"))
            continue
        obj.metadata.setdefault("namespace", "default")
        if isinstance(obj, ManagedSystem):
            found.systems.append(obj)
        else:
            found.requests.append(obj)
    return found


def _key(obj: ManagedSystem | UpdateRequest) -> tuple[str, str]:
    return obj.metadata["namespace"], obj.metadata["name"]


_utc = utc_text


@dataclass
class _Request:
    request: UpdateRequest
    accepted: bool
    reason: str
    window: Occurrence | None = None


@dataclass
class SystemPlan:
    system: ManagedSystem
    assessment: Assessment
    windows: list[tuple[Occurrence, bool, str]] = field(default_factory=list)
    requests: list[_Request] = field(default_factory=list)
    installs: dict[datetime, list[dict[str, Any]] | None] = field(default_factory=dict)
    """Window start → the targets a run there would install (None: not known offline,
    the workload is not in the input)."""
    warnings: list[str] = field(default_factory=list)
    waves: list[dict[str, Any]] = field(default_factory=list)
    """Its wave in each catalog with waves, and the waves before it (``after``)."""

    def as_json(self) -> dict[str, Any]:
        spec = self.system.spec
        ns, name = _key(self.system)
        return {
            "namespace": ns,
            "name": name,
            "serviceModel": spec.service_model.value,
            "package": spec.package.value if spec.package else None,
            "responsibility": {
                "planning": self.assessment.planning.value,
                "execution": self.assessment.execution.value,
            },
            "eligible": self.assessment.eligible,
            "reason": self.assessment.reason,
            "windows": [
                {
                    "name": o.window,
                    "start": _utc(o.start),
                    "end": _utc(o.end),
                    "cutoff": _utc(o.cutoff),
                    "update": update,
                    "why": why,
                    "targets": self.installs.get(o.start, []),
                }
                for o, update, why in self.windows
            ],
            "warnings": self.warnings,
            "waves": self.waves,
            "requests": [
                {
                    "name": r.request.metadata["name"],
                    "ticket": r.request.spec.ticket,
                    "accepted": r.accepted,
                    "reason": r.reason,
                    "window": _utc(r.window.start) if r.window else None,
                }
                for r in self.requests
            ],
        }


def _why_not_usable(occ: Occurrence, expected: timedelta) -> str:
    if occ.frozen_by is not None:
        return f"frozen: freeze {occ.frozen_by!r} overlaps this window"
    return (
        "cutoff: the window is shorter than the expected duration of an update and the time "
        f"reserved for its rollback ({expected})"
    )


OFFLINE = Timing(resync=86400.0, gate_interval=60.0)
"""The decision's intervals do not matter offline: only what it does is read."""
SNAPSHOT_CLASS = "(the cluster's)"
"""Offline the snapshot classes are not known: the plan takes it that the system's exists."""


@dataclass
class _Simulation:
    """One system as the operator would find it at each window: the runs it would have made
    by then (ended), the versions they installed, and the waves as they stand now."""

    system: ManagedSystem
    body: dict[str, Any]
    installed: ManagedSystemSpec
    workloads: dict[str, dict[str, Any] | None]
    """The workloads whose containers run components, by name (None: not in the input)."""
    catalogs: Catalogs
    released: Callable[[Known], bool] | None
    calendar: Calendar
    runs: list[dict[str, Any]] = field(default_factory=list)
    served: dict[str, Occurrence] = field(default_factory=dict)
    """Cadence period → the window that served it."""

    @property
    def missing(self) -> list[str]:
        """The workloads whose containers run components and that are not in the input."""
        bound = {
            w.name: w for c in self.installed.components if (w := self.installed.workload_of(c))
        }
        return [f"{w.kind} {w.name}" for n, w in bound.items() if self.workloads.get(n) is None]

    @property
    def known(self) -> bool:
        """Whether the installed versions are known (every workload whose containers run a
        component is in the input)."""
        return not self.missing

    def decide(self, at: datetime, waiting: list[_Request]) -> tuple[Decision, SystemFacts]:
        """The operator's own decision (``core/system.py``) at ``at``, on these facts. The
        customer's approval is taken as given: the plan says by when it is needed."""
        facts = SystemFacts(
            snapshot_class=SNAPSHOT_CLASS,
            runs=self.runs,
            requests=_as_stored(waiting),
            released=self.released,
            calendar=self.calendar,
        )
        if self.installed.components and self.known:
            facts.components = states(self.installed, self.catalogs, self.workloads, at)
        approval = self.installed.updates.approval
        spec = self.installed
        if approval is not None and approval.required:
            updates = spec.updates.model_copy(update={"approval": None})
            spec = spec.model_copy(update={"updates": updates})
        return decide(self.body, facts, at, OFFLINE, (spec, None)), facts


def plan_system(
    system: ManagedSystem,
    requests: list[UpdateRequest],
    start: datetime,
    count: int,
    catalogs: Catalogs | None = None,
    workloads: Mapping[str, dict[str, Any] | None] | None = None,
    released: Callable[[Known], bool] | None = None,
    calendar: Calendar | None = None,
) -> SystemPlan:
    """The system's next ``count`` windows and what the operator would do in each: its own
    decision (:func:`patchwarden.core.system.decide`) on the runs it would have made by
    then, at the window's first instant and at each accepted request's notBefore inside it.
    ``released``: what the waves let through (``core/waves.py``), as they stand at ``start``."""
    spec = system.spec
    result = SystemPlan(system, assess(spec))
    for req in requests:
        answer = decide_request(spec, req.spec)
        result.requests.append(_Request(req, answer.accepted, answer.reason))
    catalogs = catalogs or Catalogs({})
    labels = system.metadata.get("labels") or {}
    for catalog, rollout in sorted(catalogs.rollouts.items()):
        mine = wave_of(rollout, labels)
        before = [w.name for w in rollout.waves[:mine]]
        result.waves.append({"catalog": catalog, "wave": wave_name(rollout, mine), "after": before})
    body = system.model_dump(by_alias=True, mode="json", exclude_none=True)
    body["metadata"].setdefault("uid", "")
    # A window skipped already is skipped again here: the plan says what happens, not
    # whether its Event is new.
    (body.get("status") or {}).pop("skippedWindow", None)
    # What update runs installed of components described by hand counts (docs/gitops.md).
    by_hand = {c.name: c.version for c in spec.components if c.container is None}
    learned = counted((body.get("status") or {}).get("learnedVersions") or [], by_hand)
    installed = spec.model_copy(
        update={
            "components": [
                c.model_copy(update={"version": learned[c.name][0]}) if c.name in learned else c
                for c in spec.components
            ]
        }
    )
    sim = _Simulation(
        system, body, installed, dict(workloads or {}), catalogs, released, calendar or Calendar()
    )
    result.warnings = _warnings(sim, start)
    for occ in next_windows(spec.maintenance, spec.reserved(), start, count, sim.calendar):
        result.windows.append(_window(result, sim, occ, start))
    return result


def _warnings(sim: _Simulation, start: datetime) -> list[str]:
    spec = sim.installed
    if not sim.known:
        return [
            f"{', '.join(sim.missing)} {'is' if len(sim.missing) == 1 else 'are'} not in the "
            "input: the versions their containers run, and so what each window installs, are "
            "unknown"
        ]
    classes = installed_classes(assess(spec))
    return [
        f"{state.component.name} {state.installed} is past its end of life "
        f"({state.end_of_life}) and its track offers no newer release the contract installs"
        for state in states(spec, sim.catalogs, sim.workloads, start)
        if spec.components and end_of_life_passed(state, start.date(), classes)
    ]


def _window(
    result: SystemPlan, sim: _Simulation, occ: Occurrence, start: datetime
) -> tuple[Occurrence, bool, str]:
    """Whether a run starts in ``occ`` and why (recording what it would install)."""
    spec, assessment = sim.installed, result.assessment
    begins = occ.latest_start(start)
    if not assessment.eligible:
        return occ, False, assessment.reason
    if begins is None:
        why = _why_not_usable(occ, spec.reserved()) if not occ.usable else "the cutoff has passed"
        return occ, False, why
    waiting = [r for r in result.requests if r.accepted and r.window is None]
    not_before = {r.request.spec.not_before for r in waiting}
    instants = sorted({begins} | {t for t in not_before if t and begins < t <= occ.cutoff})
    for instant in instants:
        decision, facts = sim.decide(instant, waiting)
        if decision.started() or decision.skipped() or decision.problems:
            break
    if decision.problems:
        return occ, False, "stalled: " + "; ".join(decision.problems)
    started, skip = decision.started(), decision.skipped()
    if skip is not None and sim.known:
        why = _nothing_to_install(result, occ, skip, facts, waiting)
        if spec.updates.template:
            why += "; the update Job runs only with something newer (updates.runJob: WhenNewer)"
        return occ, False, why
    chosen = started.start if started is not None else None
    if skip is not None:  # versions unknown offline: the operator installs what is newer
        name, stored = sim.system.metadata["name"], _as_stored(waiting)
        chosen = decide_start(name, spec, assessment, instant, stored, sim.runs, None, sim.calendar)
    if chosen is None:
        tz = ZoneInfo(spec.maintenance.time_zone)
        return occ, False, _why_no_run(spec, assessment, tz, begins, sim.served)
    if spec.components and sim.known:
        done = list(started.targets) if started is not None else []
        result.installs[occ.start] = [t.wire() for t in done]
        # Later windows start from what this one installed.
        sim.installed, sim.workloads = _installed(sim.installed, sim.workloads, done)
    elif not sim.known:
        result.installs[occ.start] = None
    return occ, True, _why_run(sim, chosen, waiting, begins)


def _nothing_to_install(
    result: SystemPlan,
    occ: Occurrence,
    skip: SkipWindow,
    facts: SystemFacts,
    waiting: list[_Request],
) -> str:
    result.installs[occ.start] = []
    held = sorted(
        f"{k.component} {k.version}"
        for state in facts.components
        for k in (state.security, state.feature)
        if k is not None and facts.released is not None and not facts.released(k)
    )
    why = "up to date: nothing newer to install, no run starts"
    if held:
        why = f"nothing the waves let through to install (held: {', '.join(held)}), no run starts"
    request = skip.skipped.get("request")
    if request:  # the operator ends it Succeeded
        served = next(r for r in waiting if r.request.metadata["name"] == request)
        served.window = occ
        why += f" (request {served.request.spec.ticket} is served without one)"
    return why


def _why_run(sim: _Simulation, chosen: Start, waiting: list[_Request], begins: datetime) -> str:
    """Records the run the operator would have made, and says why it starts."""
    spec = sim.installed
    sim.runs.append(
        {
            "metadata": {"name": chosen.run},
            "spec": {"window": {"start": utc_text(chosen.occurrence.start)}},
            "status": {"phase": "Succeeded"},
        }
    )
    if chosen.trigger == Trigger.REQUEST:
        request = next(r for r in waiting if r.request.metadata["name"] == chosen.request)
        request.window = chosen.occurrence
        why = f"on request ({chosen.ticket})"
    elif chosen.trigger == Trigger.SCHEDULE:
        why = "SaaS: the provider updates in every usable window"
    else:
        tz = ZoneInfo(spec.maintenance.time_zone)
        period = cadence_period(spec.maintenance.cadence or Cadence(), tz, begins)
        sim.served[period.label] = chosen.occurrence
        why = f"cadence: first usable window of {period.label}"
    if chosen.trigger != Trigger.REQUEST and needs_approval(spec):
        lead = parse_duration(spec.updates.approval.before)  # type: ignore[union-attr]
        why += f"; needs the customer's approval by {_utc(chosen.occurrence.start - lead)}"
    every = spec.updates.template and spec.updates.run_job == RunJob.EVERY_WINDOW
    if chosen.trigger != Trigger.REQUEST and every:
        why += "; its update Job runs in every window (updates.runJob: EveryWindow)"
    return why


def _installed(
    spec: ManagedSystemSpec, workloads: dict[str, dict[str, Any] | None], done: list[Target]
) -> tuple[ManagedSystemSpec, dict[str, dict[str, Any] | None]]:
    """The system and its workloads as they would be after a run installed ``done``."""
    versions = {t.component: t.to_version for t in done if not t.container}
    workloads = dict(workloads)
    for name, workload in workloads.items():
        images = {
            t.container: t.image
            for t in done
            if t.container and t.image and t.workload in (None, name)
        }
        if workload is None or not images:
            continue
        workload = copy.deepcopy(workload)
        pod = workload["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            container["image"] = images.get(container["name"], container["image"])
        workloads[name] = workload
    if versions:
        components = [
            c.model_copy(update={"version": versions[c.name]}) if c.name in versions else c
            for c in spec.components
        ]
        spec = spec.model_copy(update={"components": components})
    return spec, workloads


def _as_stored(requests: list[_Request]) -> list[dict[str, Any]]:
    """Accepted requests as the operator's registry holds them (oldest first: the order)."""
    return [
        {
            "metadata": {"name": r.request.metadata["name"], "creationTimestamp": f"{i:08d}"},
            "spec": r.request.spec.wire(),
            "status": {"state": RequestState.ACCEPTED.value},
        }
        for i, r in enumerate(requests)
    ]


def _why_no_run(
    spec: ManagedSystemSpec,
    assessment: Assessment,
    tz: ZoneInfo,
    begins: datetime,
    served: dict[str, Occurrence],
) -> str:
    if assessment.proactive == Trigger.CADENCE:
        period = cadence_period(spec.maintenance.cadence or Cadence(), tz, begins)
        first = served.get(period.label)
        if first is not None:
            return (
                f"outside cadence: {period.label} is already "
                f"updated in the window of {_utc(first.start)}"
            )
    return "PaaS basic: no update request for this window"


def plan(inputs: Inputs, start: datetime, count: int) -> tuple[list[SystemPlan], list[_Request]]:
    """Plans for every system (sorted), plus the requests that name no known system."""
    by_key = {_key(s): s for s in inputs.systems}
    grouped: dict[tuple[str, str], list[UpdateRequest]] = {}
    catalogs = Catalogs.of(inputs.catalogs)
    orphans = []
    for req in inputs.requests:
        key = (req.metadata["namespace"], req.spec.system_ref.name)
        if key in by_key:
            grouped.setdefault(key, []).append(req)
        else:
            orphans.append(_Request(req, False, decide_request(None, req.spec).reason))
    plans = []
    # The waves as they stand at the start (the runs of the fleet are not in the input: a
    # later wave waits, as the operator's ledger has it before any run of the release).
    bodies = [s.model_dump(by_alias=True, mode="json", exclude_none=True) for s in inputs.systems]
    ledger = build_ledger(catalogs, bodies, [], start)
    calendar = Calendar()  # the fleet's systems share window definitions
    for key in sorted(by_key):
        system = by_key[key]
        spec = system.spec
        workloads = {
            w.name: inputs.workloads.get((key[0], w.kind, w.name)) for w in spec.workload_list()
        }
        released = ledger.released(system.metadata.get("labels") or {})
        plans.append(
            plan_system(
                system, grouped.get(key, []), start, count, catalogs, workloads, released, calendar
            )
        )
    return plans, orphans


def as_json(plans: list[SystemPlan], orphans: list[_Request]) -> dict[str, Any]:
    return {
        "systems": [p.as_json() for p in plans],
        "unmatchedRequests": [
            {
                "namespace": r.request.metadata["namespace"],
                "name": r.request.metadata["name"],
                "system": r.request.spec.system_ref.name,
                "accepted": False,
                "reason": r.reason,
            }
            for r in orphans
        ],
    }
