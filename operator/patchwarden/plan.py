"""``patchwarden plan``: what would happen to each system, offline.

Reads ManagedSystems and UpdateRequests from YAML, and answers for each system
its next windows, whether an update would run in each, and why. The JSON form
is a contract documented in docs/plan.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from pydantic import ValidationError

from patchwarden.api.common import describe_errors, parse_duration
from patchwarden.api.request import UpdateRequest
from patchwarden.api.run import Trigger
from patchwarden.api.system import Cadence, ManagedSystem
from patchwarden.policy import Assessment, assess, decide_request
from patchwarden.windows import Occurrence, cadence_period, next_windows


class PlanInputError(ValueError):
    """Input that cannot be planned; the message names the document and the field."""


def _describe(doc: Any) -> str:
    if not isinstance(doc, dict) or "kind" not in doc:
        return ""
    meta = doc.get("metadata") or {}
    return f" ({doc.get('kind')} {meta.get('namespace', 'default')}/{meta.get('name', '?')})"


def load(text: str, source: str = "input") -> tuple[list[ManagedSystem], list[UpdateRequest]]:
    """Parse and validate every YAML document; the first problem raises PlanInputError."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise PlanInputError(f"{source}: not valid YAML: {exc}") from exc
    systems: list[ManagedSystem] = []
    requests: list[UpdateRequest] = []
    for index, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        where = f"{source}: document {index}{_describe(doc)}"
        kind = doc.get("kind") if isinstance(doc, dict) else None
        kinds: dict[str, type[ManagedSystem] | type[UpdateRequest]] = {
            "ManagedSystem": ManagedSystem,
            "UpdateRequest": UpdateRequest,
        }
        model = kinds.get(str(kind))
        if model is None:
            raise PlanInputError(
                f"{where}: kind must be ManagedSystem or UpdateRequest, not {kind!r}"
            )
        try:
            obj: ManagedSystem | UpdateRequest = model.model_validate(doc)
        except ValidationError as exc:
            raise PlanInputError(f"{where}: {describe_errors(exc)[0]}") from exc
        if not obj.metadata.get("name"):
            raise PlanInputError(f"{where}: metadata.name is required")
        obj.metadata.setdefault("namespace", "default")
        if isinstance(obj, ManagedSystem):
            systems.append(obj)
        else:
            requests.append(obj)
    return systems, requests


def _key(obj: ManagedSystem | UpdateRequest) -> tuple[str, str]:
    return obj.metadata["namespace"], obj.metadata["name"]


def _utc(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
                }
                for o, update, why in self.windows
            ],
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
    return f"cutoff: the window is shorter than the expected duration of an update ({expected})"


def plan_system(
    system: ManagedSystem, requests: list[UpdateRequest], start: datetime, count: int
) -> SystemPlan:
    spec = system.spec
    assessment = assess(spec)
    result = SystemPlan(system, assessment)
    expected = parse_duration(spec.updates.expected_duration)
    occs = next_windows(spec.maintenance, expected, start, count)
    for req in requests:
        decision = decide_request(spec, req.spec)
        result.requests.append(_Request(req, decision.accepted, decision.reason))
    tz = ZoneInfo(spec.maintenance.time_zone)
    cadence = spec.maintenance.cadence or Cadence()
    served: dict[str, Occurrence] = {}
    for occ in occs:
        begins = occ.latest_start(start)
        if not assessment.eligible:
            result.windows.append((occ, False, assessment.reason))
            continue
        if begins is None:
            why = _why_not_usable(occ, expected) if not occ.usable else "the cutoff has passed"
            result.windows.append((occ, False, why))
            continue
        due = [
            r
            for r in result.requests
            if r.accepted
            and r.window is None
            and occ.latest_start(max(start, r.request.spec.not_before or start)) is not None
        ]
        for r in due:
            r.window = occ
        if due:
            tickets = ", ".join(r.request.spec.ticket for r in due)
            result.windows.append((occ, True, f"on request ({tickets})"))
        elif assessment.proactive == Trigger.SCHEDULE:
            result.windows.append((occ, True, "SaaS: the provider updates in every usable window"))
        elif assessment.proactive == Trigger.CADENCE:
            period = cadence_period(cadence, tz, begins)
            if period.label in served:
                first = served[period.label]
                result.windows.append(
                    (
                        occ,
                        False,
                        f"outside cadence: {period.label} is already "
                        f"updated in the window of {_utc(first.start)}",
                    )
                )
            else:
                served[period.label] = occ
                result.windows.append(
                    (occ, True, f"cadence: first usable window of {period.label}")
                )
        else:
            result.windows.append((occ, False, "PaaS basic: no update request for this window"))
    return result


def plan(
    systems: list[ManagedSystem], requests: list[UpdateRequest], start: datetime, count: int
) -> tuple[list[SystemPlan], list[_Request]]:
    """Plans for every system (sorted), plus the requests that name no known system."""
    by_key = {_key(s): s for s in systems}
    grouped: dict[tuple[str, str], list[UpdateRequest]] = {}
    orphans = []
    for req in requests:
        key = (req.metadata["namespace"], req.spec.system_ref.name)
        if key in by_key:
            grouped.setdefault(key, []).append(req)
        else:
            orphans.append(_Request(req, False, decide_request(None, req.spec).reason))
    plans = [plan_system(by_key[k], grouped.get(k, []), start, count) for k in sorted(by_key)]
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
