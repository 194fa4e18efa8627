"""Approvals: the provider proposes, the customer approves with kubectl. Pure decisions.

A system with ``spec.updates.approval`` gets, for its next window in which the provider
would start a run on its own (SaaS schedule, PaaS advanced cadence), a proposal in
``status.proposal``: the window, the targets, and the time by which it must be approved.
The customer approves by annotating the system with the proposed window's start and their
own user name (``kubectl patchwarden approve shop-db`` does both)::

    kubectl annotate managedsystem shop-db patchwarden.io/approve=2026-12-06T01:00:00Z \
        patchwarden.io/approved-by=$(kubectl auth whoami -o jsonpath='{.status.userInfo.username}')

The chart's admission policy admits the name only when it is the requester's, so the
approver is the one the API server authenticated. An approval seen before ``approveBy``
approves the proposal; none by then expires it, and the window is skipped with that
reason. A rejection (``patchwarden.io/reject`` with ``reject-reason`` and ``rejected-by``)
skips the window with the customer's reason. An approved run installs only the proposed
targets, as long as each is still acceptable (a newer release that appeared meanwhile
waits for the next proposal; one past its end of life or halted by the waves is dropped,
and the skip or the run says so). Requests
need no approval: a customer who asks has approved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from patchwarden.api.run import Target
from patchwarden.core.releases import Known, State, target
from patchwarden.core.times import utc_text

APPROVE = "patchwarden.io/approve"
"""Annotation of a ManagedSystem: the start (RFC 3339 UTC) of the proposed window approved."""
APPROVED_BY = "patchwarden.io/approved-by"
"""Who approved: the chart's admission policy admits only the requester's own user name."""
REJECT = "patchwarden.io/reject"
"""The start of the proposed window the customer rejects."""
REJECTED_BY = "patchwarden.io/rejected-by"
REJECT_REASON = "patchwarden.io/reject-reason"
ANSWERS = (APPROVE, APPROVED_BY, REJECT, REJECTED_BY, REJECT_REASON)
"""The annotations a customer's answer sets (the approver role may set nothing else)."""
PENDING, APPROVED, REJECTED, EXPIRED = "Pending", "Approved", "Rejected", "Expired"
REMIND = timedelta(hours=6)
"""A proposal still waiting this long before ``approveBy`` is announced again (the CloudEvent
``proposal.deadline``; the alert ``PatchwardenApprovalDeadlineNear`` uses the same)."""


def propose(
    old: Mapping[str, Any] | None,
    window: str,
    start: datetime,
    targets: Sequence[Target],
    before: timedelta,
    answers: Mapping[str, str],
    now: datetime,
    system: str,
) -> dict[str, Any]:
    """The proposal for the window ``window`` opening at ``start``: the one already made for
    it, moved on by the customer's answer (``answers``: the system's annotations) or the
    deadline, or a new one. An approval counts only with the approver's name recorded
    (``approved-by``) and before ``approveBy``; a rejection, any time before the window."""
    start_text = utc_text(start)
    approve_by = start - before
    if old is not None and old.get("start") == start_text:
        proposal = dict(old)
    else:
        proposal = {
            "window": window,
            "start": start_text,
            "targets": [
                {"component": t.component, "from": t.from_version, "to": t.to_version}
                for t in targets
            ],
            "approveBy": utc_text(approve_by),
            "state": PENDING,
        }
    if proposal["state"] in (PENDING, EXPIRED) and answers.get(REJECT) == start_text:
        proposal["state"] = REJECTED
        proposal["rejectedTime"] = utc_text(now)
        proposal["rejectedBy"] = answers.get(REJECTED_BY) or "unknown"
        proposal["reason"] = (answers.get(REJECT_REASON) or "no reason given")[:1024]
    elif proposal["state"] == PENDING:
        if answers.get(APPROVE) == start_text and answers.get(APPROVED_BY) and now <= approve_by:
            proposal["state"] = APPROVED
            proposal["approvedTime"] = utc_text(now)
            proposal["approvedBy"] = answers[APPROVED_BY]
        elif now > approve_by:
            proposal["state"] = EXPIRED
    proposal["message"] = _message(proposal, system)
    return proposal


def _message(proposal: Mapping[str, Any], system: str) -> str:
    what = ", ".join(f"{t['component']} {t.get('from')}→{t['to']}" for t in proposal["targets"])
    what = what or "the update Job"
    at = f"window {proposal['window']} at {proposal['start']}"
    if proposal["state"] == APPROVED:
        return f"approved by {proposal['approvedBy']} at {proposal['approvedTime']}: {what} in {at}"
    if proposal["state"] == REJECTED:
        return (
            f"rejected by {proposal['rejectedBy']} at {proposal['rejectedTime']} "
            f"({proposal['reason']}): {at} is skipped ({what})"
        )
    if proposal["state"] == EXPIRED:
        return f"not approved by {proposal['approveBy']}: {at} is skipped ({what})"
    return (
        f"proposed: {what} in {at}; approve by {proposal['approveBy']} with: kubectl "
        f"patchwarden approve {system} (or reject {system} --reason …)"
    )


def approved_targets(
    proposal: Mapping[str, Any] | None,
    start: datetime,
    found: Sequence[State],
    classes: Iterable[str],
    released: Callable[[Known], bool] | None = None,
) -> tuple[list[Target], list[str]] | None:
    """The targets an approved proposal for the window opening at ``start`` lets the run
    install: each proposed release that is still acceptable (newer than what runs, on the
    track, not past its end of life, not held back by the waves), whatever appeared since;
    and why each one that is not is dropped. None when the proposal is not approved."""
    if not proposal or proposal.get("start") != utc_text(start) or proposal["state"] != APPROVED:
        return None
    by_name = {s.component.name: s for s in found}
    allowed = set(classes)
    chosen: list[Target] = []
    dropped: list[str] = []
    for wanted in proposal.get("targets") or []:
        name, to = wanted["component"], wanted["to"]
        state = by_name.get(name)
        known = next((k for k in state.newer if k.version == to), None) if state else None
        if state is None or state.installed is None:
            dropped.append(f"the approved {name} {to} is dropped: its installed version is unknown")
        elif state.installed == to:
            continue  # installed meanwhile: nothing left to do
        elif known is None:
            dropped.append(
                f"the approved {name} {state.installed}→{to} is no longer acceptable (past its "
                "end of life, off the track, or no longer in the catalogs)"
            )
        elif released is not None and not released(known):
            dropped.append(f"the approved {name} {to} is held back by the rollout's waves")
        else:
            chosen.append(target(state, known, allowed))
    return chosen, dropped


def why_skipped(proposal: Mapping[str, Any] | None, start: datetime) -> str:
    """The reason a window with a due, unapproved run is skipped (for status and Event)."""
    if proposal and proposal.get("start") == utc_text(start):
        if proposal["state"] == REJECTED:
            return f"the proposal was rejected by {proposal['rejectedBy']}: {proposal['reason']}"
        if proposal["state"] == EXPIRED:
            return f"the proposal was not approved by {proposal['approveBy']}"
        return f"the proposal is not approved (it had to be by {proposal['approveBy']})"
    return "no approved proposal for this window"
