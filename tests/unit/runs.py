"""The update run the run tests share: system ``app``, window 11:00 to 14:00 UTC (cutoff 13:00)
on 2027-02-10, stepped at noon; and the helpers that step it through the pure state machine
(``tests/unit/core/test_run.py``, ``test_backup.py``, ``test_rollback.py``, ``test_hooks.py``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from patchwarden.api.run import Phase, RollbackStep, UpdateRunStatus
from patchwarden.core import run as m
from patchwarden.core.run import Observed

NOW = datetime(2027, 2, 10, 12, 0, tzinfo=UTC)
RUN_SPEC: dict[str, Any] = {
    "systemRef": {"name": "app"},
    "customer": "acme",
    "trigger": "Schedule",
    "classes": ["security"],
    "window": {
        "name": "w",
        "start": "2027-02-10T11:00:00Z",
        "end": "2027-02-10T14:00:00Z",
        "cutoff": "2027-02-10T13:00:00Z",
    },
}


STAMP = "2027-02-10T12:00:00Z"


EARLIER = "2027-02-10T11:00:00Z"  # an hour before NOW


TIMEOUTS = m.Timeouts(snapshot=timedelta(minutes=10), rollback=timedelta(minutes=15))


RUN = m.Run.of(
    {
        "metadata": {"namespace": "ns", "name": "run", "uid": "u1", "generation": 1},
        "spec": RUN_SPEC,
    }
)


def system(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "app", "namespace": "ns"},
        "spec": {
            "customer": "acme",
            "serviceModel": "SaaS",
            "workload": {"kind": "Deployment", "name": "app"},
            "updates": {
                "template": {"spec": {"containers": [{"name": "u", "image": "x"}]}},
                "runTimeout": "4h",
                "verifyTimeout": "10m",
                "bakeTime": "0s",  # the bake's own tests set one
            },
            **spec,
        },
    }


def workload(replicas: int = 1, ready: bool = True, image: str = "v2") -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "app", "generation": 2, "resourceVersion": "7"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {"spec": {"containers": [{"name": "a", "image": image}]}},
        },
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas if ready else 0,
        },
    }


CLAIM = {"metadata": {"name": "data"}, "spec": {"storageClassName": "std"}}


RECORDED = {
    "kind": "Deployment",
    "name": "app",
    "replicas": 2,
    "template": {"spec": {"containers": [{"name": "a", "image": "v1"}]}},
}


SNAP = {"claim": "data", "snapshot": "run-data", "created": True, "readyToUse": True}


ONE_WORKLOAD = ("recorded", "startReplicas", "stoppedReplicas", "imagesSet")
"""What :func:`status` takes as the fields of the system's one workload (``app``)."""


def status(phase: Phase | None, since: str = STAMP, **fields: Any) -> UpdateRunStatus:
    """A run's status in ``phase``; past Pending it has decided its workloads: the system's
    one (``app``), with ``recorded``, ``startReplicas``, ``stoppedReplicas`` and
    ``imagesSet`` given here as its fields, unless ``workloads`` are given."""
    wire: dict[str, Any] = {"phaseStartTime": since}
    own = {k: fields.pop(k) for k in ONE_WORKLOAD if k in fields}
    wire.update(fields)
    if phase is not None:
        wire["phase"] = phase.value
    if "workloads" not in wire and (own or phase not in (None, Phase.PENDING)):
        wire["workloads"] = [{"kind": "Deployment", "name": "app", **own}]
    return UpdateRunStatus.model_validate(wire)


def step(
    st: UpdateRunStatus, now: datetime = NOW, timeouts: m.Timeouts = TIMEOUTS, **seen: Any
) -> m.Transition:
    """One step of :data:`RUN` in ``st``, on what :func:`observed` makes of ``seen``."""
    if st.phase is None:  # a run starts only on a workload that exists
        seen.setdefault("workload", workload())
    return m.advance(RUN, st, observed(**seen), now, timeouts)


def observed(**seen: Any) -> Observed:
    """What a step read: ``Observed``'s fields, the system :func:`system` unless given, and
    ``workload=`` the system's one workload (keyed by its name)."""
    seen.setdefault("system", system())
    if "workload" in seen:
        body = seen.pop("workload")
        seen["workloads"] = {body["metadata"]["name"]: body}
    return Observed(**seen)


def the_workload(out: m.Transition) -> Any:
    """The run's one workload (``app``) in the status ``out`` wrote."""
    assert len(out.status.workloads) == 1
    return out.status.workloads[0]


def kinds(out: m.Transition) -> list[str]:
    return [type(a).__name__ for a in out.actions]


def condition(out: m.Transition, type_: str) -> str | None:
    return next((c.status.value for c in out.status.conditions if c.type == type_), None)


def rolling(step_: RollbackStep, since: str = STAMP, **fields: Any) -> UpdateRunStatus:
    return status(
        Phase.ROLLING_BACK,
        since=since,
        recorded=RECORDED,
        snapshots=[SNAP],
        failure="the update Job run-update failed",
        restore={"step": step_.value, **fields},
    )


FAILED_STATE = {"claim": "data", "snapshot": "run-data-failed", "created": True}


FAILED_JOB = {
    "status": {
        "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
    }
}
"""A Job whose pod failed (its controller's condition)."""


def ended_pod(container: str, code: int, message: str) -> dict[str, Any]:
    """A pod whose container ``container`` ended with ``code`` and termination ``message``."""
    terminated = {"exitCode": code, "message": message}
    return {
        "metadata": {"name": "p"},
        "status": {"containerStatuses": [{"name": container, "state": {"terminated": terminated}}]},
    }
