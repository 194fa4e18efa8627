"""Notifications: which CloudEvents an UpdateRun or an UpdateRequest owes, and their
content. Pure; delivery is ``runtime/notify.py``.

Each event has a stable ``id`` (the idempotency key: the object's uid and what
happened), so a receiver that keys on it sees every event once, even when the operator
restarted after a delivery and before it recorded it. The schema is documented in
docs/notifications.md and versioned in the type (``….v1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from patchwarden.api.common import GROUP, VERSION
from patchwarden.api.run import TERMINAL
from patchwarden.core.approval import PENDING, REMIND
from patchwarden.core.times import parse_time, utc_text

TYPE_PREFIX = "io.patchwarden"
NOTIFIED = "patchwarden.io/notified"
"""Annotation of a run or request: the events delivered (or given up), comma-separated."""
RUN_ENDINGS = {
    "Succeeded": "succeeded",
    "RolledBack": "rolledback",
    "Failed": "failed",
    "Cancelled": "cancelled",
}
REQUEST_DECISIONS = {"Accepted": "accepted", "Rejected": "rejected"}


@dataclass(frozen=True)
class Notice:
    """One CloudEvent an object owes."""

    key: str
    """What happened, unique for the object (recorded in its ``NOTIFIED`` annotation)."""
    type: str
    id: str
    source: str
    subject: str
    time: str
    data: dict[str, Any]

    def attributes(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "id": self.id,
            "source": self.source,
            "subject": self.subject,
            "time": self.time,
            "datacontenttype": "application/json",
        }


def delivered(body: Mapping[str, Any]) -> frozenset[str]:
    """The keys of the object's events delivered (or given up), from its annotation."""
    text = ((body.get("metadata") or {}).get("annotations") or {}).get(NOTIFIED) or ""
    return frozenset(k for k in text.split(",") if k)


def _source(plural: str, meta: Mapping[str, Any]) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"


def run_notices(body: Mapping[str, Any]) -> list[Notice]:
    """What a run owes by now, in order: ``started`` once it left Pending, then how it ended."""
    meta, spec, status = body["metadata"], body["spec"], body.get("status") or {}
    phase = status.get("phase")
    out = []
    data = {
        "namespace": meta["namespace"],
        "run": meta["name"],
        "system": spec["systemRef"]["name"],
        "customer": spec.get("customer"),
        "trigger": spec.get("trigger"),
        "request": (spec.get("requestRef") or {}).get("name"),
        "ticket": spec.get("ticket"),
        "window": spec.get("window"),
        "targets": [
            {k: t.get(k) for k in ("component", "from", "to", "image", "classes", "advisories")}
            for t in spec.get("targets") or []
        ],
    }
    started = status.get("startTime")
    if started:
        out.append(_run_notice(meta, "started", started, {**data, "phase": phase}))
    if phase in TERMINAL and status.get("completionTime"):
        ended = {
            **data,
            "phase": phase,
            "message": status.get("message"),
            "failure": status.get("failure"),
            "summary": status.get("summary"),
            "changes": status.get("changes") or [],
            "startTime": started,
            "completionTime": status["completionTime"],
        }
        out.append(_run_notice(meta, RUN_ENDINGS[phase], status["completionTime"], ended))
    return out


def _notice(
    plural: str,
    meta: Mapping[str, Any],
    kind: str,
    what: str,
    key: str,
    time: str,
    system: str,
    data: dict[str, Any],
) -> Notice:
    """One event of the object ``meta`` (of ``plural``): type ``io.patchwarden.<kind>.
    <what>.v1``, id ``<uid>/<key>``, subject ``<namespace>/<system>``."""
    return Notice(
        key=key,
        type=f"{TYPE_PREFIX}.{kind}.{what}.v1",
        id=f"{meta.get('uid', meta['name'])}/{key}",
        source=_source(plural, meta),
        subject=f"{meta['namespace']}/{system}",
        time=time,
        data=data,
    )


def _run_notice(meta: Mapping[str, Any], what: str, time: str, data: dict[str, Any]) -> Notice:
    return _notice("updateruns", meta, "updaterun", what, what, time, data["system"], data)


def request_notices(body: Mapping[str, Any]) -> list[Notice]:
    """What a request owes: ``accepted`` or ``rejected`` once decided (an acceptance again
    after a rolled-back attempt is a new event: its key counts the attempts)."""
    meta, spec, status = body["metadata"], body["spec"], body.get("status") or {}
    what = REQUEST_DECISIONS.get(status.get("state") or "")
    if what is None:
        return []
    attempt = int(status.get("attempts") or 0)
    key = f"{what}-{attempt}" if attempt else what
    decided = next(
        (
            c.get("lastTransitionTime")
            for c in status.get("conditions") or []
            if c["type"] == "Accepted"
        ),
        None,
    )
    system = spec["systemRef"]["name"]
    data = {
        "namespace": meta["namespace"],
        "request": meta["name"],
        "system": system,
        "ticket": spec.get("ticket"),
        "state": status.get("state"),
        "message": status.get("message"),
        "scheduledWindow": status.get("scheduledWindow"),
        "attempts": attempt,
    }
    time = decided or meta.get("creationTimestamp") or ""
    return [_notice("updaterequests", meta, "updaterequest", what, key, time, system, data)]


def proposal_notices(body: Mapping[str, Any], now: datetime) -> list[Notice]:
    """What a ManagedSystem owes its customer while its proposal waits for an answer:
    ``proposal.waiting`` once, and ``proposal.deadline`` once less than
    :data:`~patchwarden.core.approval.REMIND` is left before ``approveBy``. Keyed by the
    proposed window's start: each proposal is announced once."""
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    proposal = status.get("proposal")
    if not proposal or proposal.get("state") != PENDING:
        return []
    start, by = proposal["start"], parse_time(proposal["approveBy"])
    data = {
        "namespace": meta["namespace"],
        "system": meta["name"],
        "customer": spec.get("customer"),
        "window": proposal.get("window"),
        "start": start,
        "approveBy": proposal["approveBy"],
        "targets": proposal.get("targets") or [],
        "message": proposal.get("message"),
        "approve": f"kubectl patchwarden -n {meta['namespace']} approve {meta['name']}",
    }
    out = [_proposal_notice(meta, "waiting", start, utc_text(now), data)]
    if now >= by - REMIND:
        out.append(_proposal_notice(meta, "deadline", start, utc_text(by - REMIND), data))
    return out


def _proposal_notice(
    meta: Mapping[str, Any], what: str, start: str, time: str, data: dict[str, Any]
) -> Notice:
    key = f"proposal-{what}-{start}"
    return _notice("managedsystems", meta, "proposal", what, key, time, meta["name"], data)


def owed(notices: list[Notice], done: frozenset[str]) -> list[Notice]:
    """The notices not yet delivered, in order."""
    return [n for n in notices if n.key not in done]
