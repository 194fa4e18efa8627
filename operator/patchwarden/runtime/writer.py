"""Status writes of the systems and requests controllers: only when something changed,
with an Event for each condition transition worth telling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from patchwarden.core import conditions as c
from patchwarden.runtime.kube import KubeApi

EventFn = Callable[[dict[str, Any], str, str, str], None]
"""(object, type Normal|Warning, reason, message)."""

BAD_WHEN_TRUE = {c.STALLED, c.UPDATES_HALTED, c.END_OF_LIFE}
BAD_WHEN_FALSE = {c.ELIGIBLE, c.BACKUP_CONFIGURED, c.ACCEPTED, c.LAST_UPDATE_SUCCEEDED}
BAD_REASONS = {c.RELEASE_HALTED}
"""Reasons that make a transition a Warning whatever the condition (a halted release)."""


@dataclass
class StatusWriter:
    kube: KubeApi
    emit: EventFn

    def write(self, plural: str, body: dict[str, Any], status: dict[str, Any]) -> None:
        """Patch the status only when it changed (``body`` then carries the new one); emit an
        Event per condition transition (Ready/Reconciling mirror the others: none for them;
        a first "all fine" is no news)."""
        old = body.get("status") or {}
        if all(old.get(k) == v for k, v in status.items()):
            return
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        self.kube.patch_status(plural, ns, name, status)
        body["status"] = {**old, **status}
        old_conditions = old.get("conditions") or []
        for type_, value, reason, message in c.transitions(
            old_conditions, status.get("conditions") or []
        ):
            bad = (
                (type_ in BAD_WHEN_TRUE and value == "True")
                or (type_ in BAD_WHEN_FALSE and value == "False")
                or reason in BAD_REASONS
            )
            first = c.get(old_conditions, type_) is None
            if type_ in {c.READY, c.RECONCILING} or (first and not bad and type_ != c.ACCEPTED):
                continue
            self.emit(
                body, "Warning" if bad else "Normal", reason, message or f"{type_} is {value}"
            )
