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
from typing import Any

from patchwarden.api.common import GROUP, VERSION
from patchwarden.api.run import TERMINAL

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


def _run_notice(meta: Mapping[str, Any], what: str, time: str, data: dict[str, Any]) -> Notice:
    return Notice(
        key=what,
        type=f"{TYPE_PREFIX}.updaterun.{what}.v1",
        id=f"{meta.get('uid', meta['name'])}/{what}",
        source=_source("updateruns", meta),
        subject=f"{meta['namespace']}/{data['system']}",
        time=time,
        data=data,
    )


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
    return [
        Notice(
            key=key,
            type=f"{TYPE_PREFIX}.updaterequest.{what}.v1",
            id=f"{meta.get('uid', meta['name'])}/{key}",
            source=_source("updaterequests", meta),
            subject=f"{meta['namespace']}/{spec['systemRef']['name']}",
            time=decided or meta.get("creationTimestamp") or "",
            data={
                "namespace": meta["namespace"],
                "request": meta["name"],
                "system": spec["systemRef"]["name"],
                "ticket": spec.get("ticket"),
                "state": status.get("state"),
                "message": status.get("message"),
                "scheduledWindow": status.get("scheduledWindow"),
                "attempts": attempt,
            },
        )
    ]


def owed(notices: list[Notice], done: frozenset[str]) -> list[Notice]:
    """The notices not yet delivered, in order."""
    return [n for n in notices if n.key not in done]
