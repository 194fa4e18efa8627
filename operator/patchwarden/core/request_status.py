"""What an UpdateRequest's status should be: pure (the requests controller writes it).

Accepted for the next usable window or rejected with a reason a customer can read; once
a run serves it, Running, then the run's result; a rolled-back run is retried in a later
window while ``spec.retries`` allows (a run the alert gate stopped is not counted).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from patchwarden.api.request import SERVED, RequestState, UpdateRequestSpec, UpdateRequestStatus
from patchwarden.api.run import TERMINAL
from patchwarden.api.system import ManagedSystemSpec
from patchwarden.core import conditions as c
from patchwarden.core.policy import decide_request
from patchwarden.core.status import next_usable, parse_system, window_ref
from patchwarden.core.times import parse_time, utc_text
from patchwarden.core.windows import Calendar


def request_status(
    body: dict[str, Any],
    system: dict[str, Any] | None,
    runs: list[dict[str, Any]],
    now: datetime,
    calendar: Calendar | None = None,
) -> UpdateRequestStatus:
    """The status an UpdateRequest should have (typed: the CRD's own model; what it sets is
    its merge patch, ``.patch()``): see :func:`_request_status`."""
    return UpdateRequestStatus.model_validate(_request_status(body, system, runs, now, calendar))


def _request_status(
    body: dict[str, Any],
    system: dict[str, Any] | None,
    runs: list[dict[str, Any]],
    now: datetime,
    calendar: Calendar | None = None,
) -> dict[str, Any]:
    """Accepted (scheduled for a window) or rejected, with a reason a customer can read;
    once a run serves it (``runs``: those whose requestRef names it), Running, then the
    newest run's result: Succeeded, Failed, or RolledBack — after which it is accepted
    again for the next usable window while ``spec.retries`` allows."""
    old: dict[str, Any] = dict(body.get("status") or {})
    request = UpdateRequestSpec.model_validate(body["spec"])
    retry: dict[str, Any] | None = None
    rolled_back = sum(
        1
        for r in runs
        if (r.get("status") or {}).get("phase") == "RolledBack" and not gate_stopped(r)
    )
    if runs:
        ordered = sorted(runs, key=lambda r: r["spec"]["window"]["start"])
        newest = ordered[-1]
        phase = (newest.get("status") or {}).get("phase")
        if not gate_stopped(newest) and (phase != "RolledBack" or rolled_back > request.retries):
            return {**old, **served(newest), "attempts": len(ordered)}
        retry = newest  # decided again below, for a window after the one that rolled back
    elif old.get("state") in SERVED:
        return old  # served by runs that are gone since: keep what it said
    skipped = ((system or {}).get("status") or {}).get("skippedWindow") or {}
    if not runs and skipped.get("request") == body["metadata"]["name"]:
        # Nothing was newer when its window came: served without a run.
        return {
            **old,
            "state": RequestState.SUCCEEDED.value,
            "message": f"nothing to install: system {request.system_ref.name} was up to date "
            f"in window {skipped['name']} at {skipped['start']}; no run was needed",
        }
    return _decided(body, old, request, system, now, (retry, rolled_back, len(runs)), calendar)


def _decided(
    body: dict[str, Any],
    old: dict[str, Any],
    request: UpdateRequestSpec,
    system: dict[str, Any] | None,
    now: datetime,
    retrying: tuple[dict[str, Any] | None, int, int],
    calendar: Calendar | None = None,
) -> dict[str, Any]:
    """A request not (or no more) served by a run: accepted for the next usable window, or
    rejected by the contract. ``retrying``: the run that rolled back and is retried, the
    rollbacks counted, the runs so far."""
    retry, _, attempts = retrying
    generation = body.get("metadata", {}).get("generation")
    status: dict[str, Any] = {"observedGeneration": generation}
    spec, invalid = parse_system(system["spec"]) if system else (None, None)
    if system is not None and spec is None:
        state, ok, reason = RequestState.PENDING, False, "SystemInvalid"
        message = f"waiting: system {request.system_ref.name} cannot be used: {invalid}"
    else:
        decision = decide_request(spec, request)
        state = RequestState.ACCEPTED if decision.accepted else RequestState.REJECTED
        ok, reason, message = decision.accepted, state.value, decision.reason
        if decision.accepted and spec is not None:
            message = _scheduled(status, spec, request, now, message, retrying, calendar)
            if retry is not None:
                status["runRef"] = {"name": retry["metadata"]["name"]}
                status["attempts"] = attempts
    status["state"] = state.value
    status["message"] = message
    status["conditions"] = c.set_condition(
        list(old.get("conditions") or []),
        c.ACCEPTED,
        ok,
        reason,
        message,
        generation=generation,
        now=utc_text(now),
    )
    return status


def _scheduled(
    status: dict[str, Any],
    spec: ManagedSystemSpec,
    request: UpdateRequestSpec,
    now: datetime,
    message: str,
    retrying: tuple[dict[str, Any] | None, int, int],
    calendar: Calendar | None = None,
) -> str:
    """An accepted request's window (``scheduledWindow``: the first usable one after its
    ``notBefore`` and after the window of a run that rolled back), and its message."""
    retry, rolled_back, _ = retrying
    earliest = max(now, request.not_before or now)
    if retry is not None:  # not in the window whose run rolled back
        earliest = max(earliest, parse_time(retry["spec"]["window"]["end"]))
    occ = next_usable(spec, earliest, calendar)
    if occ is None:
        message += "; no usable window is planned yet"
    else:
        status["scheduledWindow"] = window_ref(occ).wire()
        message = f"accepted: scheduled for window {occ.window} at {utc_text(occ.start)}"
    if retry is not None and gate_stopped(retry):
        return (
            f"update run {retry['metadata']['name']} was stopped by the alert gate "
            "(not counted as a retry): " + message.removeprefix("accepted: ")
        )
    if retry is not None:
        return (
            f"update run {retry['metadata']['name']} rolled back; retry {rolled_back} of "
            f"{request.retries}: " + message.removeprefix("accepted: ")
        )
    return message


def gate_stopped(run: dict[str, Any]) -> bool:
    """Whether the alert gate ended the run (held back to its cutoff, cancelled, or rolled
    back): a request it served is tried again in a later window, not counted as a retry."""
    return bool((run.get("status") or {}).get("gateStopped"))


def served(run: dict[str, Any]) -> dict[str, Any]:
    """A request's state from the run that serves it."""
    name = run["metadata"]["name"]
    status = run.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase in TERMINAL:
        # A cancelled run (its system deleted) fails the request: it was not served.
        state, message = (
            RequestState.FAILED if phase == "Cancelled" else RequestState(phase),
            f"update run {name}: {phase}: {status.get('message', '')}",
        )
    elif phase == "Pending":
        state, message = RequestState.RUNNING, f"update run {name} created"
    else:
        state, message = RequestState.RUNNING, f"update run {name} started"
    return {"state": state.value, "message": message, "runRef": {"name": name}}
