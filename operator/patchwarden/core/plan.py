"""``patchwarden plan``: what would happen to each system, offline.

Reads ManagedSystems, UpdateRequests, ReleaseCatalogs and the systems' workloads
(Deployments, StatefulSets) from YAML, and answers for each system its next windows,
whether an update would run in each, why, and what it would install. The JSON form
is a contract documented in docs/plan.md.
"""

from __future__ import annotations

import copy
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
from patchwarden.api.system import ManagedSystem, ManagedSystemSpec
from patchwarden.core.due import NOTHING_TO_INSTALL, due_run
from patchwarden.core.policy import Assessment, assess, decide_request
from patchwarden.core.releases import Catalogs, end_of_life_passed, states
from patchwarden.core.scheduler import decide_start
from patchwarden.core.status import needs_approval
from patchwarden.core.times import utc_text
from patchwarden.core.waves import wave_name, wave_of
from patchwarden.core.windows import Occurrence, cadence_period, next_windows


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


def plan_system(
    system: ManagedSystem,
    requests: list[UpdateRequest],
    start: datetime,
    count: int,
    catalogs: Catalogs | None = None,
    workload: dict[str, Any] | None = None,
) -> SystemPlan:
    """The system's next ``count`` windows and what the operator would do in each: the same
    start decision (:func:`patchwarden.core.scheduler.decide_start`) on the runs it would
    have made by then, at the window's first instant and at each accepted request's
    notBefore inside it."""
    spec = system.spec
    name = system.metadata["name"]
    assessment = assess(spec)
    result = SystemPlan(system, assessment)
    expected = spec.reserved()
    for req in requests:
        decision = decide_request(spec, req.spec)
        result.requests.append(_Request(req, decision.accepted, decision.reason))
    runs: list[dict[str, Any]] = []  # the runs the operator would have made, ended
    served: dict[str, Occurrence] = {}  # cadence period → the window that served it
    tz = ZoneInfo(spec.maintenance.time_zone)
    catalogs = catalogs or Catalogs({})
    labels = system.metadata.get("labels") or {}
    for catalog, rollout in sorted(catalogs.rollouts.items()):
        mine = wave_of(rollout, labels)
        before = [w.name for w in rollout.waves[:mine]]
        result.waves.append({"catalog": catalog, "wave": wave_name(rollout, mine), "after": before})
    installed = spec
    bound = any(c.container for c in spec.components)
    known = workload is not None or not bound
    if spec.components and known:
        for state in states(spec, catalogs, workload, start):
            if end_of_life_passed(state, start.date()):
                result.warnings.append(
                    f"{state.component.name} {state.installed} is past its end of life "
                    f"({state.end_of_life}) and its track offers no newer release"
                )
    elif bound:
        result.warnings.append(
            f"{spec.workload.kind} {spec.workload.name} is not in the input: the versions its "
            "containers run, and so what each window installs, are unknown"
        )
    for occ in next_windows(spec.maintenance, expected, start, count):
        begins = occ.latest_start(start)
        if not assessment.eligible:
            result.windows.append((occ, False, assessment.reason))
            continue
        if begins is None:
            why = _why_not_usable(occ, expected) if not occ.usable else "the cutoff has passed"
            result.windows.append((occ, False, why))
            continue
        waiting = [r for r in result.requests if r.accepted and r.window is None]
        instants = sorted(
            {begins}
            | {
                r.request.spec.not_before
                for r in waiting
                if r.request.spec.not_before is not None
                and begins < r.request.spec.not_before <= occ.cutoff
            }
        )
        chosen = None
        for instant in instants:
            chosen = decide_start(name, spec, assessment, instant, _as_stored(waiting), runs)
            if chosen is not None:
                break
        if chosen is None:
            result.windows.append((occ, False, _why_no_run(spec, assessment, tz, begins, served)))
            continue
        if known and spec.components:
            # The operator's rules (core/due.py); its waves and approvals are explained
            # beside the windows, not applied: the plan cannot know them ahead.
            answer = due_run(chosen, installed, states(installed, catalogs, workload, begins))
            chosen_targets = answer.targets
            result.installs[occ.start] = [t.wire() for t in chosen_targets]
            if answer.skipped == NOTHING_TO_INSTALL:
                why = "up to date: nothing newer to install, no run starts"
                if chosen.trigger == Trigger.REQUEST:  # the operator ends it Succeeded
                    served_request = next(
                        r for r in waiting if r.request.metadata["name"] == chosen.request
                    )
                    served_request.window = occ
                    why += f" (request {chosen.ticket} is served without one)"
                result.windows.append((occ, False, why))
                continue
            # Later windows start from what this one installed.
            installed, workload = _installed(installed, workload, chosen_targets)
        elif bound:
            result.installs[occ.start] = None
        runs.append(
            {
                "metadata": {"name": chosen.run},
                "spec": {"window": {"start": utc_text(chosen.occurrence.start)}},
                "status": {"phase": "Succeeded"},
            }
        )
        if chosen.trigger == Trigger.REQUEST:
            request = next(r for r in waiting if r.request.metadata["name"] == chosen.request)
            request.window = occ
            why = f"on request ({chosen.ticket})"
        elif chosen.trigger == Trigger.SCHEDULE:
            why = "SaaS: the provider updates in every usable window"
        else:
            period = cadence_period(spec.maintenance.cadence or Cadence(), tz, begins)
            served[period.label] = occ
            why = f"cadence: first usable window of {period.label}"
        if chosen.trigger != Trigger.REQUEST and needs_approval(spec):
            lead = parse_duration(spec.updates.approval.before)  # type: ignore[union-attr]
            why += f"; needs the customer's approval by {_utc(occ.start - lead)}"
        result.windows.append((occ, True, why))
    return result


def _installed(
    spec: ManagedSystemSpec, workload: dict[str, Any] | None, done: list[Target]
) -> tuple[ManagedSystemSpec, dict[str, Any] | None]:
    """The system and its workload as they would be after a run installed ``done``."""
    images = {t.container: t.image for t in done if t.container and t.image}
    versions = {t.component: t.to_version for t in done if not t.container}
    if workload is not None and images:
        workload = copy.deepcopy(workload)
        pod = workload["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            container["image"] = images.get(container["name"], container["image"])
    if versions:
        components = [
            c.model_copy(update={"version": versions[c.name]}) if c.name in versions else c
            for c in spec.components
        ]
        spec = spec.model_copy(update={"components": components})
    return spec, workload


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
    for key in sorted(by_key):
        spec = by_key[key].spec
        workload = inputs.workloads.get((key[0], spec.workload.kind, spec.workload.name))
        plans.append(
            plan_system(by_key[key], grouped.get(key, []), start, count, catalogs, workload)
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
