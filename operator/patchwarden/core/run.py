"""One update run as a pure state machine: snapshot, record, update, verify — or roll back.

:func:`advance` takes the run, its typed status, what the runs controller observed
for this step (:class:`Observed`) and the time, and returns the next status, the
actions to apply (:data:`Action`) and when to look again (:class:`Wait`). It does
no I/O: the controller (``controllers/runs.py``) reads, calls it, applies the
actions in order, then writes the status once.

Every object a run creates has a name derived from the run, so an action applied
twice (the operator killed between an action and the status write) finds its own
object and never makes a second Job or snapshot. Every wait has a deadline.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from patchwarden.api.common import Condition, parse_duration
from patchwarden.api.run import (
    TERMINAL,
    Change,
    GateRecord,
    HookRecord,
    JobRecord,
    Phase,
    RestoreRecord,
    RollbackStep,
    SnapshotRecord,
    UpdateRunSpec,
    UpdateRunStatus,
    WorkloadRecord,
)
from patchwarden.api.system import Consistency, Hook, ManagedSystemSpec
from patchwarden.core import builders, claims
from patchwarden.core import conditions as c
from patchwarden.core.gate import Verdict
from patchwarden.core.podsecurity import Level
from patchwarden.core.policy import assess
from patchwarden.core.status import parse_system
from patchwarden.core.times import parse_time, utc_text

ROLLS_BACK = frozenset({Phase.UPDATING, Phase.VERIFYING})
"""The phases after which the workload may have changed: a failure there rolls back."""
BACKUP_SKIPPED = "no VolumeSnapshotClass and backup.required is false"
CONTROLLER_ANNOTATIONS = frozenset({"deployment.kubernetes.io/revision"})
"""Annotations of a workload its controller keeps: neither recorded nor restored."""
HOOK_RUNNING, HOOK_SUCCEEDED, HOOK_FAILED = "Running", "Succeeded", "Failed"
HOOK_OUTPUT_KEPT = 1024
"""Characters of a hook's output kept in the run (its end: where errors are)."""
GATE_FIRING_KEPT = 20
GATE_MESSAGE_KEPT = 2048
TERMINATION_LIMIT = 1024
"""Characters of a failed update container's termination message kept in the run."""


class Wait(StrEnum):
    """When the run needs its next step."""

    NOW = "Now"
    """At once, with the status just written."""
    WATCHED = "Watched"
    """When one of its snapshots or its Job changes (a watch wakes it), with a safety timer."""
    POLL = "Poll"
    """After the poll interval (a workload or pods: not watched for runs)."""
    DONE = "Done"
    """Never: the run has ended."""


@dataclass(frozen=True)
class Timeouts:
    """The operator's settings a run obeys: its deadlines, and its Pod Security floor."""

    snapshot: timedelta
    rollback: timedelta
    """Each rollback step (pods gone, claims restored, workload ready) must end within this."""
    pod_security: Level = Level.RESTRICTED
    """The update Job's pod must meet this Pod Security Standard, or it is not created."""


# ---- actions: what the controller applies, in order, before it writes the status ----------
@dataclass(frozen=True)
class CreateSnapshot:
    body: dict[str, Any]


@dataclass(frozen=True)
class CreateJob:
    body: dict[str, Any]


@dataclass(frozen=True)
class SetImages:
    """Set the target images on the workload's containers (server-side apply)."""

    kind: str
    name: str
    images: Mapping[str, str]


@dataclass(frozen=True)
class StopJob:
    """Suspend the update Job: its controller stops its pods, the Job stays for the record."""

    name: str


@dataclass(frozen=True)
class ScaleToZero:
    kind: str
    name: str


@dataclass(frozen=True)
class ScaleBack:
    """Scale the workload back to the replicas it had before it was stopped."""

    kind: str
    name: str
    replicas: int


@dataclass(frozen=True)
class DeletePod:
    name: str


@dataclass(frozen=True)
class DeleteClaim:
    name: str


@dataclass(frozen=True)
class CreateClaim:
    body: dict[str, Any]


@dataclass(frozen=True)
class ReplaceWorkload:
    kind: str
    body: dict[str, Any]


@dataclass(frozen=True)
class PruneSnapshots:
    """Delete the snapshots of the system's older runs beyond the newest ``retain``, and
    failed-state snapshots made before ``failed_state_before`` (``core/history.prunable`` chooses
    them from the list the controller reads)."""

    system: str
    retain: int
    failed_state_before: str


@dataclass(frozen=True)
class Emit:
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class PhaseEnded:
    """For the phase-duration histogram."""

    phase: Phase
    seconds: float


@dataclass(frozen=True)
class RunEnded:
    """For the run counters (the run's final status is the one written with it)."""

    service_model: str
    package: str


Action = (
    CreateSnapshot
    | SetImages
    | CreateJob
    | StopJob
    | ScaleToZero
    | ScaleBack
    | DeletePod
    | DeleteClaim
    | CreateClaim
    | ReplaceWorkload
    | PruneSnapshots
    | Emit
    | PhaseEnded
    | RunEnded
)


# ---- inputs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """The run's identity and spec."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    spec: UpdateRunSpec
    deleting: bool = False
    """The run is being deleted (its finalizer holds it until it has ended)."""

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Run:
        meta = body["metadata"]
        return cls(
            meta["namespace"],
            meta["name"],
            meta.get("uid", ""),
            meta.get("generation"),
            UpdateRunSpec.model_validate(body["spec"]),
            bool(meta.get("deletionTimestamp")),
        )


@dataclass(frozen=True)
class HookResult:
    """How an ``exec`` hook ended: ``ok`` when the command exited 0; its output (tail)."""

    name: str
    ok: bool
    output: str


@dataclass(frozen=True)
class Observed:
    """What the controller read for one step (:func:`reads` says what a step needs)."""

    system: Mapping[str, Any] | None = None
    """The ManagedSystem; None when it no longer exists."""
    workload: Mapping[str, Any] | None = None
    claims: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    """Claim name → the claim, None when absent."""
    snapshots: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    """VolumeSnapshot name → the snapshot, None when absent."""
    snapshot_class: str | None = None
    job: Mapping[str, Any] | None = None
    workload_pods: int = 0
    """Pods matching the workload's selector (a rollback waits for none)."""
    job_pods: tuple[Mapping[str, Any], ...] = ()
    """The update Job's pods (labelled with the run)."""
    namespace_pods: tuple[Mapping[str, Any], ...] = ()
    """Every pod of the namespace (read once, before the run starts: who mounts its claims)."""
    namespace_claims: tuple[str, ...] | None = None
    """The names of the namespace's claims (read once, before the run starts: which claims
    the system's data is on, :mod:`~patchwarden.core.claims`); None when not read."""
    gate: Verdict | None = None
    """The alert gate's verdict (asked while :func:`gated`); None: no query applies."""
    hook_result: HookResult | None = None
    """The ``exec`` hook :func:`next_hook` named, run for this step (its exit and output)."""
    hook_job: Mapping[str, Any] | None = None
    """The Job of the ``job`` hook :func:`next_hook` names, when it has one."""
    hook_pods: tuple[Mapping[str, Any], ...] = ()
    """That Job's pods, once it ended (its output)."""


class Read(StrEnum):
    WORKLOAD = "workload"
    CLAIMS = "claims"
    SNAPSHOTS = "snapshots"
    SNAPSHOT_CLASS = "snapshotClass"
    JOB = "job"
    WORKLOAD_PODS = "workloadPods"
    JOB_PODS = "jobPods"
    NAMESPACE_PODS = "namespacePods"
    NAMESPACE_CLAIMS = "namespaceClaims"


def reads(status: UpdateRunStatus) -> frozenset[Read]:
    """What a step in this status needs besides the system (always read, from the cache)."""
    phase = status.phase or Phase.PENDING
    restore = status.restore.step if status.restore else None
    match phase:
        case Phase.PENDING:
            return frozenset({Read.WORKLOAD, Read.NAMESPACE_PODS, Read.NAMESPACE_CLAIMS})
        case Phase.SNAPSHOTTING if not status.snapshots:
            wanted = {Read.WORKLOAD, Read.CLAIMS, Read.SNAPSHOT_CLASS}
            if status.stopped_replicas is not None:
                # Stopped for consistent snapshots: they are taken once its pods are gone.
                wanted.add(Read.WORKLOAD_PODS)
            if status.claims is None:  # started by an older operator: decided now
                wanted.add(Read.NAMESPACE_CLAIMS)
            return frozenset(wanted)
        case Phase.SNAPSHOTTING:
            return frozenset({Read.SNAPSHOTS, Read.SNAPSHOT_CLASS})
        case Phase.RECORDING | Phase.VERIFYING:
            return frozenset({Read.WORKLOAD})
        case Phase.UPDATING if status.images_set and status.job is None:
            return frozenset({Read.WORKLOAD})  # the rollout of the target images
        case Phase.UPDATING:
            return frozenset({Read.JOB})  # and its pods once it ended (job_ended)
        case Phase.ROLLING_BACK if restore == RollbackStep.SCALE_DOWN:
            return frozenset({Read.WORKLOAD, Read.WORKLOAD_PODS, Read.JOB_PODS})
        case Phase.ROLLING_BACK if restore == RollbackStep.RESTORE_CLAIMS:
            return frozenset({Read.WORKLOAD, Read.SNAPSHOTS, Read.CLAIMS, Read.SNAPSHOT_CLASS})
        case Phase.ROLLING_BACK:
            return frozenset({Read.WORKLOAD})
        case _:
            return frozenset()


def gated(status: UpdateRunStatus) -> bool:
    """Whether a step in this status asks the alert gate: every step before the run ends,
    except a rollback's (which must finish whatever fires)."""
    return (status.phase or Phase.PENDING) not in TERMINAL | {Phase.ROLLING_BACK}


def hook_stage(
    status: UpdateRunStatus, spec: ManagedSystemSpec | None, workload: Any
) -> str | None:
    """The hooks a step in this status runs: ``pre`` before the first snapshot (and before a
    workload is stopped for them), ``post`` once the updated workload is ready; None."""
    hooks = spec.updates.hooks if spec is not None else None
    if hooks is None:
        return None
    phase = status.phase or Phase.PENDING
    if phase == Phase.SNAPSHOTTING and not status.snapshots and status.stopped_replicas is None:
        return "pre" if next_hook(status, spec, "pre") is not None else None  # type: ignore[arg-type]
    if phase == Phase.VERIFYING and workload is not None and workload_ready(workload):
        return "post" if next_hook(status, spec, "post") is not None else None  # type: ignore[arg-type]
    return None


def next_hook(status: UpdateRunStatus, spec: ManagedSystemSpec, stage: str) -> Hook | None:
    """The first hook of ``stage`` that has not succeeded."""
    hooks = spec.updates.hooks
    done = {r.name for r in status.hooks if r.stage == stage and r.state == HOOK_SUCCEEDED}
    for hook in (hooks.pre if stage == "pre" else hooks.post) if hooks else []:
        if hook.name not in done:
            return hook
    return None


def job_ended(job: Mapping[str, Any] | None) -> bool:
    """Whether the update Job ended: the step then also reads its pods (how they ended, and
    the changes a successful one reports in its termination message)."""
    return job is not None and job_result(job) is not None


def wakes_its_run(event_type: str, body: Mapping[str, Any]) -> bool:
    """Whether a watch event of a run's snapshot or Job is news for the run waiting on it:
    it went, or it shows what a run acts on (a snapshot ready or failed; a Job with a
    condition: complete, failed, suspended). A snapshot or Job just created, or a Job whose
    pod merely started, is not: a step for it would read the run and the object for
    nothing, two requests a run at a window's opening. (Listed again after a broken watch,
    one that is ready or ended comes as ADDED, and wakes its run; the runs' safety poll
    stays.)"""
    if event_type == "DELETED":
        return True
    status = body.get("status") or {}
    return bool(status.get("readyToUse") or status.get("error") or status.get("conditions"))


def claims_to_read(
    status: UpdateRunStatus,
    spec: ManagedSystemSpec | None = None,
    workload: Mapping[str, Any] | None = None,
    existing: Sequence[str] | None = None,
) -> list[str]:
    """The claims a step reads: those snapshotted, else those decided when the run started;
    for a run started by an older operator (none recorded), those the namespace's claims
    ``existing`` give (:func:`~patchwarden.core.claims.of_system`)."""
    if status.snapshots:
        return [r.claim for r in status.snapshots]
    if status.claims is not None:
        return list(status.claims)
    if spec is None or workload is None or existing is None:
        return []
    return list(claims.of_system(spec, workload, existing).names)


# ---- the transition ------------------------------------------------------------------------
@dataclass
class Transition:
    status: UpdateRunStatus
    actions: list[Action] = field(default_factory=list)
    wait: Wait = Wait.NOW


class Abort(Exception):
    """The current phase failed; the message says why, for the run's status."""


class Unchanged(Abort):
    """The current phase failed before it changed anything (no rollback needed, whatever the
    phase)."""


@dataclass
class _Step:
    run: Run
    seen: Observed
    now: datetime
    timeouts: Timeouts
    out: Transition

    @property
    def status(self) -> UpdateRunStatus:
        return self.out.status

    def act(self, *actions: Action) -> None:
        self.out.actions.extend(actions)

    def waited(self) -> timedelta:
        start = self.status.phase_start_time
        return self.now - parse_time(start) if start else timedelta(0)

    def restart_clock(self) -> None:
        """A step's deadline counts from now (from the request, however late it was made)."""
        self.status.phase_start_time = utc_text(self.now)

    def system(self) -> tuple[str, ManagedSystemSpec]:
        body = self.seen.system
        if body is None:
            raise Abort(f"ManagedSystem {self.run.spec.system_ref.name} no longer exists")
        spec, invalid = parse_system(body.get("spec") or {})
        if spec is None:
            raise Abort(f"the system's spec cannot be used: {invalid}")
        return str(body["metadata"]["name"]), spec

    def condition(self, type_: str, ok: bool, reason: str, message: str) -> None:
        wire = [x.wire() for x in self.status.conditions]
        updated = c.set_condition(
            wire, type_, ok, reason, message, generation=None, now=utc_text(self.now)
        )
        self.status.conditions = [Condition.model_validate(x) for x in updated]

    def enter(self, phase: Phase, message: str) -> None:
        status = self.status
        if status.phase is not None and status.phase_start_time:
            self.act(PhaseEnded(status.phase, self.waited().total_seconds()))
        status.phase = phase
        self.restart_clock()
        status.message = message
        status.observed_generation = self.run.generation
        # kstatus: in progress until the run ends; Failed (a person must look) stalls it.
        self.condition(c.RECONCILING, phase not in TERMINAL, phase.value, message)
        failed = phase == Phase.FAILED
        self.condition(c.STALLED, failed, phase.value, message if failed else "")
        self.out.wait = Wait.DONE if phase in TERMINAL else Wait.NOW

    def end(self, phase: Phase, message: str, summary: str | None = None) -> None:
        """A terminal phase: completion time, Ready, an Event and the run's metrics."""
        succeeded = phase == Phase.SUCCEEDED
        self.enter(phase, message)
        self.status.completion_time = utc_text(self.now)
        self.condition(c.READY, succeeded, phase.value, summary or message)
        spec = _spec_or_none(self.seen.system)
        self.act(
            RunEnded(
                spec.service_model.value if spec else "",
                spec.package.value if spec and spec.package else "",
            ),
            Emit(
                "Normal" if phase in {Phase.SUCCEEDED, Phase.CANCELLED} else "Warning",
                phase.value,
                summary or message,
            ),
        )


def _spec_or_none(system: Mapping[str, Any] | None) -> ManagedSystemSpec | None:
    return parse_system(system.get("spec") or {})[0] if system is not None else None


def advance(
    run: Run, status: UpdateRunStatus, seen: Observed, now: datetime, timeouts: Timeouts
) -> Transition:
    """The next status of ``run``, the actions that get there, and when to look again."""
    phase = status.phase or Phase.PENDING
    step = _Step(run, seen, now, timeouts, Transition(status.model_copy(deep=True)))
    if phase in TERMINAL:
        step.out.wait = Wait.DONE
        return step.out
    try:
        stopping = _stopping(run, seen.system)
        if stopping is None and seen.gate is not None and seen.gate.blocked and gated(status):
            _record_gate(step, seen.gate, stopped=True)
            if phase == Phase.PENDING:
                _held(step, seen.gate)  # not started: it waits for the gate, up to the cutoff
                return step.out
            stopping = f"the alert gate stopped the run: {seen.gate.message}"
        if stopping and phase != Phase.ROLLING_BACK:
            job_started = status.job is not None and status.job.created
            changed = job_started or bool(status.images_set)
            if phase not in ROLLS_BACK or (phase == Phase.UPDATING and not changed):
                if phase == Phase.UPDATING:
                    # Not recorded as created, but a step cut short after creating it (the
                    # operator killed before its status write) may have: stop it if so.
                    step.act(StopJob(builders.job_name(run.name)))
                _cancel(step, stopping)
                return step.out
            raise Abort(stopping)  # the workload may have changed: roll it back first
        match phase:
            case Phase.PENDING:
                _pending(step)
            case Phase.SNAPSHOTTING:
                _snapshotting(step)
            case Phase.RECORDING:
                _recording(step)
            case Phase.UPDATING:
                _updating(step)
            case Phase.VERIFYING:
                _verifying(step)
            case Phase.ROLLING_BACK:
                _rolling_back(step)
    except Unchanged as exc:
        _fail(step, phase, str(exc), changed=False)
    except Abort as exc:
        _fail(step, phase, str(exc))
    return step.out


def namespace_deleted(
    run: Run, status: UpdateRunStatus, seen: Observed, now: datetime, timeouts: Timeouts
) -> Transition:
    """The run's namespace is being deleted (the API server refuses to create anything in
    it): Kubernetes deletes the workload, its claims and the snapshots with it, so there is
    nothing to roll back into. The run ends Failed at once and lets the namespace go."""
    step = _Step(run, seen, now, timeouts, Transition(status.model_copy(deep=True)))
    phase = (status.phase or Phase.PENDING).value
    step.end(
        Phase.FAILED,
        f"namespace {run.namespace} is being deleted, and with it the workload, its claims "
        f"and snapshots: the run stopped in {phase}",
    )
    return step.out


def _stopping(run: Run, system: Mapping[str, Any] | None) -> str | None:
    """Why the run must stop now, if it must: it, or its system, is being deleted."""
    if run.deleting:
        return f"the UpdateRun {run.name} is being deleted"
    if system is not None and system["metadata"].get("deletionTimestamp"):
        return f"ManagedSystem {run.spec.system_ref.name} is being deleted"
    return None


def _record_gate(step: _Step, verdict: Verdict, stopped: bool) -> None:
    """Keep the verdict in the run's record (``stopped``: it held the run back or stopped
    it), unless the record already says it (no write for an unchanged answer)."""
    old = step.status.alert_gate
    said = (verdict.decision.value, verdict.message, stopped)
    if old is not None and (old.decision, old.message, old.stopped) == said:
        return
    step.status.alert_gate = GateRecord(
        decision=verdict.decision.value,
        checked_time=utc_text(step.now),
        queries=list(verdict.queries),
        firing=list(verdict.firing[:GATE_FIRING_KEPT]),
        message=verdict.message[:GATE_MESSAGE_KEPT],
        stopped=stopped,
    )


def _held(step: _Step, verdict: Verdict) -> None:
    """A run not yet started waits while the gate holds it back, until its window's cutoff."""
    if step.now > parse_time(step.run.spec.window.cutoff):
        raise Unchanged(
            f"the window's cutoff passed while the alert gate held the run back "
            f"({verdict.message}); nothing was changed"
        )
    message = f"held back by the alert gate: {verdict.message}"
    if step.status.message != message:
        step.status.message = message
        step.act(Emit("Warning", "AlertGateClosed", message))
    step.out.wait = Wait.POLL


def _cancel(step: _Step, why: str) -> None:
    restarted = _restart(step, _spec_or_none(step.seen.system))
    step.end(
        Phase.CANCELLED,
        f"{why}; stopped before the update, the workload was not changed{restarted}",
        f"{why}; the run stopped before changing anything",
    )


def _pending(step: _Step) -> None:
    _, spec = step.system()
    assessment = assess(spec)
    if not assessment.eligible:
        raise Abort(f"the system is no longer eligible: {assessment.reason}")
    if step.now > parse_time(step.run.spec.window.cutoff):
        raise Abort("the window's cutoff passed before the run could start; nothing was changed")
    workload = step.seen.workload
    if workload is None:
        raise Unchanged(f"{spec.workload.kind} {spec.workload.name} not found; nothing was changed")
    _decide_claims(step, spec, workload)
    shared = foreign_users(step.status.claims or [], workload, step.seen.namespace_pods)
    if shared:
        claim, pod = shared[0]
        raise Unchanged(
            f"claim {claim} is also used by pod {pod}, outside {spec.workload.kind} "
            f"{spec.workload.name}: a rollback could not replace it safely (shared claims "
            "cannot be restored while another pod mounts them); nothing was changed"
        )
    if step.seen.gate is not None:
        _record_gate(step, step.seen.gate, stopped=False)  # what it said when the run started
    step.status.start_time = utc_text(step.now)
    window = step.run.spec.window.name
    step.act(Emit("Normal", "Started", f"{step.run.spec.trigger.value} update in window {window}"))
    step.enter(Phase.SNAPSHOTTING, "taking VolumeSnapshots of the system's claims")


def _decide_claims(step: _Step, spec: ManagedSystemSpec, workload: Mapping[str, Any]) -> None:
    """Record the claims the run backs up and the workload's replicas, as they are before
    the run changes anything (:mod:`~patchwarden.core.claims`); a workload whose claims
    cannot all be found ends the run with nothing changed."""
    decided = claims.of_system(spec, workload, step.seen.namespace_claims or ())
    if decided.problem:
        raise Unchanged(decided.problem)
    step.status.claims = list(decided.names)
    if step.status.start_replicas is None:
        step.status.start_replicas = int((workload.get("spec") or {}).get("replicas", 1))


def _snapshotting(step: _Step) -> None:
    system, spec = step.system()
    status, seen = step.status, step.seen
    if spec.updates.hooks and spec.updates.hooks.pre and not status.snapshots:
        if seen.workload is None:
            raise Abort(f"{spec.workload.kind} {spec.workload.name} not found; nothing was changed")
        if hook_stage(status, spec, seen.workload) == "pre" and not _hooks(step, spec, "pre"):
            return  # the pre-update hooks first (e.g. a database flushed before its snapshot)
    if not status.snapshots and seen.snapshot_class is None and not spec.backup.required:
        # A snapshot without a class is never made ready by a real cluster: take none.
        status.backup_skipped = BACKUP_SKIPPED
        step.act(Emit("Warning", "BackupSkipped", f"{BACKUP_SKIPPED}; the update runs anyway"))
        step.enter(Phase.RECORDING, f"no snapshots taken: {BACKUP_SKIPPED}")
        return
    if not status.snapshots:
        if seen.workload is None:
            raise Abort(f"{spec.workload.kind} {spec.workload.name} not found; nothing was changed")
        if status.claims is None:
            _decide_claims(step, spec, seen.workload)
        if spec.backup.consistency == Consistency.STOPPED and not _stopped(step, spec):
            return  # its pods are still stopping
        for claim in status.claims or []:
            body = seen.claims.get(claim)
            if body is None:
                raise Abort(f"PersistentVolumeClaim {claim} not found; nothing was changed")
            status.snapshots.append(
                SnapshotRecord(
                    claim=claim,
                    snapshot=builders.snapshot_name(step.run.name, claim),
                    claim_spec=dict(body["spec"]),
                )
            )
    if spec.backup.required and status.snapshots and seen.snapshot_class is None:
        raise Abort("no VolumeSnapshotClass to take the required backups; nothing was changed")
    for record in status.snapshots:
        if not record.created:
            # An existing one (made before a restart) is taken as ours: the name is the run's.
            step.act(
                CreateSnapshot(
                    builders.volume_snapshot(
                        run=step.run.name,
                        system=system,
                        claim=record.claim,
                        snapshot_class=seen.snapshot_class,
                    )
                )
            )
            record.created = True
            step.restart_clock()  # the deadline counts from the request, however late
            continue
        if record.snapshot not in seen.snapshots:
            continue  # created in this very step: nothing to read yet
        existing = seen.snapshots[record.snapshot]
        if existing is None:
            raise Abort(f"VolumeSnapshot {record.snapshot} disappeared before it was ready")
        record.ready_to_use = bool((existing.get("status") or {}).get("readyToUse"))
    if all(r.ready_to_use for r in status.snapshots):
        restarted = _restart(step, spec)
        step.enter(Phase.RECORDING, f"{len(status.snapshots)} snapshots ready{restarted}")
        return
    if step.waited() > step.timeouts.snapshot:
        waiting = [r.snapshot for r in status.snapshots if not r.ready_to_use]
        raise Abort(
            f"snapshots not ready within {step.timeouts.snapshot.total_seconds():.0f}s: "
            f"{', '.join(waiting)}; the workload was not touched"
        )
    step.out.wait = Wait.WATCHED


def _stopped(step: _Step, spec: ManagedSystemSpec) -> bool:
    """Whether the workload is stopped for consistent snapshots (stopping it first)."""
    status, workload = step.status, step.seen.workload
    assert workload is not None
    kind, name = spec.workload.kind, spec.workload.name
    if status.stopped_replicas is None:
        # As it was when the run started: a step repeated after the scale-down (the operator
        # killed before its status write) must not read the zero it set.
        replicas = status.start_replicas
        status.stopped_replicas = (
            int(workload["spec"].get("replicas", 1)) if replicas is None else replicas
        )
        step.act(ScaleToZero(kind, name))
        step.restart_clock()
        status.message = f"stopping {kind} {name} for consistent snapshots"
        return False
    if step.seen.workload_pods:
        if step.waited() > step.timeouts.snapshot:
            raise Abort(
                f"pods of {kind} {name} still present "
                f"{step.timeouts.snapshot.total_seconds():.0f}s after stopping it for the "
                "snapshots"
            )
        step.out.wait = Wait.POLL
        return False
    return True


def _restart(step: _Step, spec: ManagedSystemSpec | None) -> str:
    """Scale a workload stopped for the snapshots back (once); says so for the message."""
    replicas = step.status.stopped_replicas
    if replicas is None or spec is None or replicas == 0:
        return ""
    kind, name = spec.workload.kind, spec.workload.name
    step.act(ScaleBack(kind, name, replicas))
    step.status.stopped_replicas = 0  # scaled back: never again
    return f"; {kind} {name} scaled back to {replicas} replicas"


def _recording(step: _Step) -> None:
    _, spec = step.system()
    workload = step.seen.workload
    if workload is None:
        raise Abort(f"{spec.workload.kind} {spec.workload.name} not found; nothing was changed")
    unprotected = without_backup(step.status)
    if unprotected:
        # The guard issue 31 asked for: whatever decided the snapshots, no update starts
        # while a claim of the system has no ready copy to roll back to.
        raise Unchanged(
            f"claim{'s' if len(unprotected) > 1 else ''} {', '.join(unprotected)} "
            "of the system had no ready pre-update snapshot; the update was not started and "
            "nothing was changed"
        )
    meta = workload["metadata"]
    step.status.recorded = WorkloadRecord(
        kind=spec.workload.kind,
        name=spec.workload.name,
        replicas=workload["spec"].get("replicas", 1),
        template=copy.deepcopy(dict(workload["spec"]["template"])),
        spec=copy.deepcopy(dict(workload["spec"])),
        labels=dict(meta.get("labels") or {}),
        annotations={
            k: v
            for k, v in (meta.get("annotations") or {}).items()
            if k not in CONTROLLER_ANNOTATIONS
        },
    )
    images = _images(step.run.spec)
    step.enter(
        Phase.UPDATING,
        f"setting {len(images)} images: {summary(_catalog_changes(step.run.spec))}"
        if images
        else "running the update Job",
    )


def _images(spec: UpdateRunSpec) -> dict[str, str]:
    """Container → image of the run's targets bound to containers."""
    return {t.container: t.image for t in spec.targets if t.container and t.image}


def _catalog_changes(spec: UpdateRunSpec) -> list[Change]:
    return [
        Change.model_validate(
            {
                "component": t.component,
                "container": t.container,
                "from": t.from_version,
                "to": t.to_version,
                "fromImage": t.from_image,
                "toImage": t.image,
                "classes": [x.value for x in t.classes],
                "advisories": t.advisories,
                "source": "catalog",
            }
        )
        for t in spec.targets
        if t.container and t.image
    ]


def summary(changes: Sequence[Change]) -> str:
    """``postgres 16.3→16.4, shop 1.0.0→1.1.0`` (at most 256 characters)."""
    text = ", ".join(
        f"{x.component} {x.from_version or '?'}→{x.to_version or '?'}" for x in changes
    )
    return text if len(text) <= 256 else text[:255] + "…"


def _ends_by(step: _Step, spec: ManagedSystemSpec) -> datetime:
    """When the update must have ended, leaving the rest of the window for a rollback; a
    change that would start later is not started."""
    ends_by = parse_time(step.run.spec.window.end) - spec.rollback_reserve()
    if step.now >= ends_by:
        if step.status.images_set:  # the images are set already: they are rolled back
            raise Abort(
                f"the window ends within rollback.reserve ({spec.rollback.reserve}); the "
                "update Job was not started"
            )
        raise Unchanged(
            "the window ends within rollback.reserve "
            f"({spec.rollback.reserve}); the update was not started and nothing was changed"
        )
    return ends_by


def _set_images(step: _Step, images: dict[str, str]) -> bool:
    """Set the target images and wait for their rollout; True once it is complete."""
    status = step.status
    _, spec = step.system()
    kind, name = spec.workload.kind, spec.workload.name
    if not status.images_set:
        _ends_by(step, spec)
        step.act(SetImages(kind, name, images))
        status.images_set = True
        status.changes = _catalog_changes(step.run.spec)
        status.summary = summary(status.changes)
        step.restart_clock()
        step.out.wait = Wait.POLL
        return False
    workload = step.seen.workload
    if workload is not None and workload_ready(workload):
        return True
    if step.waited() > parse_duration(spec.updates.verify_timeout):
        raise Abort(
            f"the rollout of {kind} {name} with the new images did not complete within "
            f"{spec.updates.verify_timeout}"
        )
    step.out.wait = Wait.POLL
    return False


def _updating(step: _Step) -> None:
    status, seen, run = step.status, step.seen, step.run
    images = _images(run.spec)
    if images and status.job is None and not _set_images(step, images):
        return
    _, spec = step.system()
    if not spec.updates.template:
        step.enter(Phase.VERIFYING, f"images set ({status.summary}); waiting for the workload")
        return
    job_name = builders.job_name(run.name)
    if status.job is None:
        status.job = JobRecord(name=job_name)
        step.restart_clock()
    record = status.job
    if seen.job is None:
        if record.created:
            raise Abort(f"the update Job {job_name} was deleted before it finished")
        system, spec = step.system()
        ends_by = _ends_by(step, spec)
        above = builders.pod_security(spec, step.timeouts.pod_security)
        if above:
            why = (
                f"the update Job's pod would break the operator's Pod Security level "
                f"{step.timeouts.pod_security.value}: {'; '.join(above)}; no pod was created"
            )
            raise Abort(why) if status.images_set else Unchanged(why)
        deadline = min(parse_duration(spec.updates.run_timeout), ends_by - step.now)
        step.act(
            CreateJob(
                builders.update_job(
                    run=run.name,
                    run_uid=run.uid,
                    system=system,
                    spec=spec,
                    classes=[x.value for x in run.spec.classes],
                    ticket=run.spec.ticket,
                    deadline_seconds=int(deadline.total_seconds()),
                    targets=[builders.target_variable(t) for t in run.spec.targets],
                )
            )
        )
        record.created = True
        step.out.wait = Wait.WATCHED
        return
    record.created = True
    result = job_result(seen.job)
    if result is None:
        step.out.wait = Wait.WATCHED
        return
    record.result = result
    if result != "Complete":
        ended = termination(seen.job_pods)
        if ended:
            record.termination = ended
        raise Abort(
            f"the update Job {job_name} failed: {job_message(seen.job)}"
            + (f"; {ended.splitlines()[0]}" if ended else "")
        )
    reported, problem = job_changes(seen.job_pods)
    status.changes = [*status.changes, *reported]
    status.summary = summary(status.changes) or None
    step.enter(
        Phase.VERIFYING,
        "waiting for the workload to be ready again" + (f" ({problem})" if problem else ""),
    )


def _hooks(step: _Step, spec: ManagedSystemSpec, stage: str) -> bool:
    """Run the stage's hooks, one per step, in order: True once all have succeeded. A failed
    pre-update hook ends the run with nothing changed; a failed post-update hook fails the
    verification (the run rolls back)."""
    hook = next_hook(step.status, spec, stage)
    if hook is None:
        return True
    fail = Unchanged if stage == "pre" else Abort
    what = f"{'pre' if stage == 'pre' else 'post'}-update hook {hook.name}"
    record = next((r for r in step.status.hooks if r.stage == stage and r.name == hook.name), None)
    if record is None:
        record = HookRecord(name=hook.name, stage=stage, state=HOOK_RUNNING)
        record.start_time = utc_text(step.now)
        step.status.hooks.append(record)
        step.status.message = f"running the {what}"
    if hook.exec_ is not None:
        result = step.seen.hook_result
        if result is None or result.name != hook.name:
            step.out.wait = Wait.NOW  # run at the next step (its observation runs it)
            return False
        _hook_ended(record, step.now, result.ok, result.output)
        if not result.ok:
            raise fail(f"{what} failed: {_tail(result.output)}{_unchanged(stage)}")
        step.act(Emit("Normal", "HookSucceeded", f"{what} succeeded"))
        step.out.wait = Wait.NOW
        return False
    job_name = builders.hook_job_name(step.run.name, stage, hook.name)
    if record.job is None:
        record.job = job_name
        deadline = int(parse_duration(hook.timeout).total_seconds())
        system, _ = step.system()
        step.act(
            CreateJob(
                builders.hook_job(
                    run=step.run.name,
                    run_uid=step.run.uid,
                    system=system,
                    spec=spec,
                    hook=hook,
                    stage=stage,
                    deadline_seconds=deadline,
                )
            )
        )
        step.out.wait = Wait.WATCHED
        return False
    job = step.seen.hook_job
    started = parse_time(record.start_time) if record.start_time else step.now
    if job is None or job_result(job) is None:
        if job is None and step.now - started > timedelta(seconds=30):
            raise fail(f"{what}: its Job {job_name} was deleted{_unchanged(stage)}")
        if step.now - started > parse_duration(hook.timeout):
            step.act(StopJob(job_name))
            raise fail(f"{what} did not end within {hook.timeout}{_unchanged(stage)}")
        step.out.wait = Wait.WATCHED
        return False
    ok = job_result(job) == "Complete"
    output = termination(step.seen.hook_pods) or ("" if ok else job_message(job))
    _hook_ended(record, step.now, ok, output)
    if not ok:
        raise fail(f"{what} failed: {_tail(output)}{_unchanged(stage)}")
    step.act(Emit("Normal", "HookSucceeded", f"{what} succeeded"))
    step.out.wait = Wait.NOW
    return False


def _hook_ended(record: HookRecord, now: datetime, ok: bool, output: str) -> None:
    record.state = HOOK_SUCCEEDED if ok else HOOK_FAILED
    record.completion_time = utc_text(now)
    record.output = output[-HOOK_OUTPUT_KEPT:] if output else None


def _tail(output: str) -> str:
    lines = [x for x in output.strip().splitlines() if x.strip()]
    return lines[-1][-200:] if lines else "no output"


def _unchanged(stage: str) -> str:
    return "; nothing was changed" if stage == "pre" else ""


def _verifying(step: _Step) -> None:
    system, spec = step.system()
    workload = step.seen.workload
    if workload is not None and workload_ready(workload):
        if spec.updates.hooks and spec.updates.hooks.post and not _hooks(step, spec, "post"):
            return
        keep = parse_duration(spec.rollback.keep_failed_state)
        step.act(PruneSnapshots(system, spec.backup.retain, utc_text(step.now - keep)))
        step.end(
            Phase.SUCCEEDED,
            "the update succeeded and the workload is ready",
            "the update succeeded",
        )
        return
    if step.waited() > parse_duration(spec.updates.verify_timeout):
        raise Abort(
            f"{spec.workload.kind} {spec.workload.name} not ready within "
            f"{spec.updates.verify_timeout} after the update"
        )
    step.out.wait = Wait.POLL


# ---- failure and rollback ---------------------------------------------------------------
def _fail(step: _Step, phase: Phase, why: str, changed: bool = True) -> None:
    """Roll back when the workload may have changed and the system allows it; else end
    Failed (asking for a person when the workload may have changed)."""
    status = step.status
    may_have_changed = changed and phase in ROLLS_BACK
    spec = _spec_or_none(step.seen.system)
    job = status.job
    if phase == Phase.UPDATING and job is not None and job.created and job.result is None:
        step.act(StopJob(job.name))  # still running (a rollback or a stop must not race it)
    if may_have_changed and spec is not None and spec.rollback.enabled and status.recorded:
        step.act(Emit("Warning", "UpdateFailed", f"{why}; rolling back"))
        status.restore = RestoreRecord(step=RollbackStep.SCALE_DOWN, start_time=utc_text(step.now))
        status.failure = why
        step.enter(Phase.ROLLING_BACK, f"{why}; rolling back")
        return
    if phase == Phase.ROLLING_BACK:
        _end_failed(step, f"the rollback failed: {why}", needs_person=True)
    else:
        restarted = _restart(step, spec) if phase == Phase.SNAPSHOTTING else ""
        _end_failed(step, why + restarted, needs_person=may_have_changed)


def _end_failed(step: _Step, why: str, needs_person: bool) -> None:
    if needs_person:
        step.condition(
            c.NEEDS_ATTENTION,
            True,
            c.ROLLBACK_FAILED,
            f"{why}; a person must check the workload and its claims",
        )
    step.end(Phase.FAILED, why)


def _rolling_back(step: _Step) -> None:
    status, seen = step.status, step.seen
    recorded, restore = status.recorded, status.restore
    assert recorded is not None and restore is not None, "entered only with both recorded"
    kind, name = recorded.kind, recorded.name
    limit = step.timeouts.rollback
    seconds = f"{limit.total_seconds():.0f}s"
    workload = seen.workload
    if workload is None:
        raise Abort(f"{kind} {name} disappeared during the rollback")
    match restore.step or RollbackStep.SCALE_DOWN:
        case RollbackStep.SCALE_DOWN:
            if workload["spec"].get("replicas", 1) != 0:
                step.act(ScaleToZero(kind, name))
                step.restart_clock()
            if seen.workload_pods:
                if step.waited() > limit:
                    raise Abort(
                        f"pods of {kind} {name} still present {seconds} after scaling to zero"
                    )
                step.out.wait = Wait.POLL
                return
            # The update Job's pods, finished or not, keep the claims they mount in use:
            # the claims' protection would hold their deletion until the pods are gone.
            if seen.job_pods:
                for pod in seen.job_pods:
                    if not pod["metadata"].get("deletionTimestamp"):
                        step.act(DeletePod(pod["metadata"]["name"]))
                if step.waited() > limit:
                    raise Abort(f"the update Job's pods still present after {seconds}")
                step.out.wait = Wait.POLL
                return
            restore.step = RollbackStep.RESTORE_CLAIMS
            step.restart_clock()
        case RollbackStep.RESTORE_CLAIMS:
            if not _claims_restored(step):
                return
            restore.step = RollbackStep.RESTORE_WORKLOAD
            step.restart_clock()
        case RollbackStep.RESTORE_WORKLOAD:
            step.act(ReplaceWorkload(kind, restored_workload(workload, recorded)))
            restore.step = RollbackStep.VERIFY
            step.restart_clock()
            step.out.wait = Wait.POLL
        case RollbackStep.VERIFY:
            if workload_ready(workload) and workload["spec"].get("replicas") == recorded.replicas:
                _rolled_back(step)
                return
            if step.waited() > limit:
                raise Abort(f"{kind} {name} not ready {seconds} after the restore")
            step.out.wait = Wait.POLL


def _rolled_back(step: _Step) -> None:
    """The end of a rollback: RolledBack, saying what was restored; Failed (a person must
    look) if a claim decided at the start was not restored (it holds what the update
    wrote), never a success that restored less than it should have."""
    status, restore = step.status, step.status.restore
    assert restore is not None
    restore.completed = True
    why = status.failure or "the update failed"
    took = ""
    if restore.start_time:
        took = f" in {(step.now - parse_time(restore.start_time)).total_seconds():.0f}s"
    expected = status.claims if status.claims is not None else [r.claim for r in status.snapshots]
    if status.backup_skipped:
        restored = f"restored the workload's spec only, not its data ({status.backup_skipped})"
    elif not expected:
        restored = "restored the workload (it has no claims)"
    else:
        left = [x for x in expected if x not in restore.claims]
        if left:
            _end_failed(
                step,
                f"{why}; the rollback restored the workload and {len(restore.claims)} of "
                f"{len(expected)} claims{took}, not {', '.join(left)} (no pre-update snapshot): "
                "they hold what the failed update wrote",
                needs_person=True,
            )
            return
        restored = f"restored {len(restore.claims)} claims and the workload"
    step.end(Phase.ROLLED_BACK, f"{why}; {restored}{took}")


def _claims_restored(step: _Step) -> bool:
    """Replace each snapshotted claim by one made from its pre-update snapshot: every
    failed-state snapshot is asked for at once; a claim is deleted once its own is ready
    (:func:`_failed_state_kept`), and made again from its backup once it is gone. True
    once every claim is recreated."""
    status, seen, restore = step.status, step.seen, step.status.restore
    assert restore is not None
    limit = step.timeouts.rollback
    snapshots_pending, terminating = False, []
    for record in status.snapshots:
        claim = record.claim
        if claim in restore.claims:
            continue
        if seen.snapshots.get(record.snapshot) is None:
            raise Abort(
                f"VolumeSnapshot {record.snapshot} is gone; claim {claim} cannot be restored"
            )
        existing = seen.claims.get(claim)
        if existing is None:
            original = {"metadata": {"name": claim}, "spec": record.claim_spec}
            step.act(CreateClaim(builders.restored_claim(original, record.snapshot)))
            restore.claims.append(claim)
            continue
        source = existing.get("spec", {}).get("dataSource") or {}
        if source.get("name") == record.snapshot:
            restore.claims.append(claim)  # already recreated from the snapshot
            continue
        if existing["metadata"].get("deletionTimestamp"):
            terminating.append(claim)
            continue
        if not _failed_state_kept(step, claim):
            snapshots_pending = True  # never delete the only copy of what the update wrote
            continue
        step.act(DeleteClaim(claim))
        step.restart_clock()
        terminating.append(claim)
    if not (snapshots_pending or terminating):
        return True
    seconds = f"{limit.total_seconds():.0f}s"
    if step.waited() > limit:
        if snapshots_pending:
            waiting = [r for r in restore.failed_state if not r.ready_to_use]
            more = f" (and {len(waiting) - 1} more)" if len(waiting) > 1 else ""
            raise Abort(
                f"VolumeSnapshot {waiting[0].snapshot} of claim {waiting[0].claim} as the failed "
                f"update left it not ready within {seconds}{more}; "
                + ("the claims were not deleted" if more else "the claim was not deleted")
            )
        plural = "s" if len(terminating) > 1 else ""
        raise Abort(f"claim{plural} {', '.join(terminating)} still terminating after {seconds}")
    step.out.wait = Wait.POLL if terminating else Wait.WATCHED
    return False


def _failed_state_kept(step: _Step, claim: str) -> bool:
    """Whether the claim's failed-state snapshot is ready (asking for it first if need be):
    only then may the rollback delete the claim. One that cannot be taken, or that
    disappears, fails the rollback with the claim left as it is."""
    restore, seen = step.status.restore, step.seen
    assert restore is not None
    record = next((r for r in restore.failed_state if r.claim == claim), None)
    if record is None:
        if seen.snapshot_class is None:
            raise Abort(
                f"no VolumeSnapshotClass to keep claim {claim} as the failed update left it; "
                "the claim was not deleted"
            )
        body = builders.volume_snapshot(
            run=step.run.name,
            system=step.run.spec.system_ref.name,
            claim=claim,
            snapshot_class=seen.snapshot_class,
            failed_state=True,
        )
        step.act(CreateSnapshot(body))
        restore.failed_state.append(
            SnapshotRecord(claim=claim, snapshot=body["metadata"]["name"], created=True)
        )
        step.restart_clock()
        return False
    if record.ready_to_use:
        return True
    if record.snapshot in seen.snapshots:
        snapshot = seen.snapshots[record.snapshot]
        if snapshot is None:
            raise Abort(
                f"VolumeSnapshot {record.snapshot} of claim {claim} as the failed update left "
                "it disappeared; the claim was not deleted"
            )
        record.ready_to_use = bool((snapshot.get("status") or {}).get("readyToUse"))
    return record.ready_to_use


# ---- pure helpers -------------------------------------------------------------------------
def without_backup(status: UpdateRunStatus) -> list[str]:
    """The claims decided when the run started that have no ready pre-update snapshot
    (none when it took no snapshots by choice: ``backup.required: false`` and no class)."""
    if status.backup_skipped:
        return []
    ready = {r.claim for r in status.snapshots if r.ready_to_use}
    return [x for x in status.claims or [] if x not in ready]


def foreign_users(
    claims: Sequence[str], workload: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str]]:
    """(claim, pod) for each pod that mounts one of ``claims`` but is not the workload's
    (neither matching its selector's labels nor owned by it or its ReplicaSets) nor an update
    Job's: a rollback would have to delete a claim such a pod keeps in use."""
    wanted = set(claims)
    selector = (workload.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
    found = []
    for pod in pods:
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        if meta.get("deletionTimestamp") or builders.LABEL_RUN in labels:
            continue
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            continue
        if not selector and _owned_by(meta, workload):
            continue
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim in wanted:
                found.append((str(claim), str(meta["name"])))
    return sorted(found)


def _owned_by(pod_meta: Mapping[str, Any], workload: Mapping[str, Any]) -> bool:
    """The pod is the StatefulSet's, or one of the Deployment's ReplicaSets' (named
    ``<deployment>-<hash>``): for selectors written with matchExpressions only."""
    name = workload.get("metadata", {}).get("name", "")
    for owner in pod_meta.get("ownerReferences") or []:
        kind, owner_name = owner.get("kind"), str(owner.get("name", ""))
        if kind == workload.get("kind") == "StatefulSet" and owner_name == name:
            return True
        hash_ = owner_name.removeprefix(f"{name}-")
        if kind == "ReplicaSet" and hash_ != owner_name and hash_.isalnum():
            return True
    return False


def restored_workload(current: Mapping[str, Any], recorded: WorkloadRecord) -> dict[str, Any]:
    """The workload as recorded before the update, on the current object (its
    resourceVersion: a concurrent write conflicts and is retried): the whole spec, the
    labels and the annotations (but the ones its controller keeps). A record made before
    whole specs were recorded restores the template and replicas only."""
    body = {k: copy.deepcopy(v) for k, v in current.items() if k != "status"}
    if recorded.spec is None:
        body["spec"] = {
            **body["spec"],
            "template": recorded.template,
            "replicas": recorded.replicas,
        }
        return body
    body["spec"] = copy.deepcopy(recorded.spec)
    meta = body["metadata"]
    kept = {k: v for k, v in (meta.get("annotations") or {}).items() if k in CONTROLLER_ANNOTATIONS}
    meta["labels"] = dict(recorded.labels)
    meta["annotations"] = {**recorded.annotations, **kept}
    return body


def workload_ready(workload: Mapping[str, Any]) -> bool:
    """The rollout is complete and every replica is ready."""
    spec, status = workload.get("spec", {}), workload.get("status", {}) or {}
    replicas = spec.get("replicas", 1)
    if status.get("observedGeneration", 0) < workload["metadata"].get("generation", 0):
        return False
    if replicas == 0:
        return True
    ready_key = "availableReplicas" if workload.get("kind") == "Deployment" else "readyReplicas"
    if workload.get("kind") == "StatefulSet" and status.get("updateRevision") != status.get(
        "currentRevision", status.get("updateRevision")
    ):
        return False
    return bool(
        status.get("updatedReplicas", 0) == replicas
        and status.get(ready_key, 0) == replicas
        and status.get("replicas", 0) == replicas
    )


def job_result(job: Mapping[str, Any]) -> str | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in {"Complete", "Failed"} and cond.get("status") == "True":
            return str(cond["type"])
    return None


def job_message(job: Mapping[str, Any]) -> str:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed":
            return f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
    return "failed"


def termination(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """How the update Job's first failed container ended: exit code, reason and its
    termination message (with FallbackToLogsOnError: the log's last lines), truncated."""
    for pod in pods:
        for state in (pod.get("status") or {}).get("containerStatuses") or []:
            ended = (state.get("state") or {}).get("terminated") or {}
            if ended and ended.get("exitCode", 0) != 0:
                text = (
                    f"container {state.get('name')} exited with code {ended.get('exitCode')}"
                    f" ({ended.get('reason', 'Error')})"
                )
                message = (ended.get("message") or "").strip()
                if message:
                    text += ":\n" + message[-TERMINATION_LIMIT:]
                return text
    return None


def job_changes(pods: Sequence[Mapping[str, Any]]) -> tuple[list[Change], str | None]:
    """The changes a successful update Job reports in its termination message (JSON:
    ``{"changes": [{"component": …, "from": …, "to": …, "classes": […], "advisories": […]}]}``,
    docs/update-job.md), and what was wrong with a message that does not follow it."""
    for pod in pods:
        for state in (pod.get("status") or {}).get("containerStatuses") or []:
            ended = (state.get("state") or {}).get("terminated") or {}
            message = (ended.get("message") or "").strip()
            if not ended or ended.get("exitCode", 0) != 0 or not message.startswith("{"):
                continue
            try:
                reported = json.loads(message).get("changes") or []
                changes = [
                    Change.model_validate({**item, "source": "job"}) for item in reported[:256]
                ]
            except (ValueError, AttributeError, TypeError) as exc:
                first = str(exc).splitlines()[0][:200]
                return [], (
                    f"container {state.get('name')}'s termination message is not the documented "
                    f"changes JSON ({first}); its changes are not recorded"
                )
            return changes, None
    return [], None
