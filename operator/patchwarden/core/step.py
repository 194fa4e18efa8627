"""The vocabulary of one run step: what the controller observed (:class:`Observed`, and
:func:`reads` says what), the actions it applies, when to look again, and :class:`Step`,
the state a phase works on. Pure: ``core/run.py`` decides, ``controllers/runs.py`` acts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from patchwarden.api.common import Condition
from patchwarden.api.run import (
    TERMINAL,
    Phase,
    RollbackStep,
    RunWorkload,
    UpdateRunSpec,
    UpdateRunStatus,
)
from patchwarden.api.system import Consistency, ManagedSystemSpec
from patchwarden.core import claims
from patchwarden.core import conditions as c
from patchwarden.core.gate import Verdict
from patchwarden.core.podsecurity import Level
from patchwarden.core.status import parse_system
from patchwarden.core.times import parse_time, utc_text


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


@dataclass(frozen=True)
class CreateSnapshot:
    body: dict[str, Any]


@dataclass(frozen=True)
class LabelClaims:
    """Put ``label`` (``key=value``) on each claim: a group snapshot's selector selects them."""

    claims: tuple[str, ...]
    key: str
    value: str


@dataclass(frozen=True)
class CreateGroupSnapshot:
    body: dict[str, Any]


@dataclass(frozen=True)
class FreezeEnded:
    """For the phase-duration histogram (``phase="Frozen"``): how long the workloads were
    frozen around the snapshots."""

    seconds: float


@dataclass(frozen=True)
class CreateJob:
    body: dict[str, Any]


@dataclass(frozen=True)
class SetImages:
    """Set the target images on the workload's containers (server-side apply)."""

    kind: str
    name: str
    images: Mapping[str, str]
    version: str | None = None
    """The workload's resourceVersion the step read: applied onto that version only, so an
    apply that arrives late (a replica cut off) never undoes what came after it."""


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
    uid: str | None = None
    """Only if it is still this pod (a late delete never removes a newer one)."""


@dataclass(frozen=True)
class DeleteClaim:
    name: str
    uid: str | None = None
    """Only if it is still this claim: a late delete never removes the claim a rollback
    restored in its place."""


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
    | LabelClaims
    | CreateGroupSnapshot
    | FreezeEnded
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
    workloads: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    """The run's workloads (:func:`run_workloads`), by name → the workload, None when
    absent."""
    claims: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    """Claim name → the claim, None when absent."""
    snapshots: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    """VolumeSnapshot name → the snapshot, None when absent."""
    snapshot_class: str | None = None
    group_snapshot_class: str | None = None
    """The VolumeGroupSnapshotClass a ``Group`` backup uses; None when there is none."""
    group_snapshot: Mapping[str, Any] | None = None
    """The run's VolumeGroupSnapshot (None: absent, or not read)."""
    group_members: Mapping[str, str] = field(default_factory=dict)
    """Claim → the VolumeSnapshot of the group that holds it (read once the group is
    ready)."""
    job: Mapping[str, Any] | None = None
    workload_pods: int = 0
    """Pods matching the selector of one of the run's workloads (a rollback waits for
    none)."""
    workload_restarts: int = 0
    """The restarts of those pods' containers, summed (the bake watches it)."""
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
    GROUP_CLASS = "groupSnapshotClass"
    GROUP = "groupSnapshot"


def reads(status: UpdateRunStatus, spec: ManagedSystemSpec | None = None) -> frozenset[Read]:
    """What a step in this status needs besides the system (always read, from the cache)."""
    phase = status.phase or Phase.PENDING
    restore = status.restore.step if status.restore else None
    grouped = spec is not None and spec.backup.consistency == Consistency.GROUP
    match phase:
        case Phase.PENDING:
            return frozenset({Read.WORKLOAD, Read.NAMESPACE_PODS, Read.NAMESPACE_CLAIMS})
        case Phase.SNAPSHOTTING if status.snapshots:
            wanted = {Read.GROUP if status.group_snapshot else Read.SNAPSHOTS, Read.SNAPSHOT_CLASS}
            if freezing(status, spec):
                wanted.add(Read.WORKLOAD)  # the pods the freeze and thaw commands run in
            return frozenset(wanted)
        case Phase.SNAPSHOTTING:
            wanted = {Read.WORKLOAD, Read.CLAIMS, Read.SNAPSHOT_CLASS}
            if grouped:
                wanted.add(Read.GROUP_CLASS)
            stopped = [w.stopped_replicas for w in status.workloads]
            if any(x is not None for x in [*stopped, status.stopped_replicas]):
                # Stopped for consistent snapshots: they are taken once its pods are gone.
                wanted.add(Read.WORKLOAD_PODS)
            if status.claims is None:  # started by an older operator: decided now
                wanted.add(Read.NAMESPACE_CLAIMS)
            return frozenset(wanted)
        case Phase.RECORDING | Phase.VERIFYING:
            return frozenset({Read.WORKLOAD})
        case Phase.BAKING:
            return frozenset({Read.WORKLOAD, Read.WORKLOAD_PODS})
        case Phase.UPDATING if (images_set(status) or status.images_set) and status.job is None:
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


def freezing(status: UpdateRunStatus, spec: ManagedSystemSpec | None) -> bool:
    """Whether the run's freeze and thaw commands are still to run (or running)."""
    if spec is None or not spec.backup.freeze:
        return status.freeze is not None and status.freeze.end_time is None
    return status.freeze is None or status.freeze.end_time is None


def gated(status: UpdateRunStatus) -> bool:
    """Whether a step in this status asks the alert gate: every step before the run ends,
    except a rollback's (which must finish whatever fires)."""
    return (status.phase or Phase.PENDING) not in TERMINAL | {Phase.ROLLING_BACK}


def claims_to_read(
    status: UpdateRunStatus,
    spec: ManagedSystemSpec | None = None,
    workloads: Sequence[Mapping[str, Any]] = (),
    existing: Sequence[str] | None = None,
) -> list[str]:
    """The claims a step reads: those snapshotted, else those decided when the run started;
    for a run started by an older operator (none recorded), those the namespace's claims
    ``existing`` give (:func:`~patchwarden.core.claims.of_system`)."""
    if status.snapshots:
        return [r.claim for r in status.snapshots]
    if status.claims is not None:
        return list(status.claims)
    if spec is None or not workloads or existing is None:
        return []
    return list(claims.of_system(spec, workloads, existing).names)


def run_workloads(status: UpdateRunStatus, spec: ManagedSystemSpec | None) -> list[RunWorkload]:
    """The workloads a step of the run acts on: those it decided when it started, else
    (before that, or a run an older operator started, :func:`adopted`) the system's."""
    if status.workloads:
        return list(status.workloads)
    if status.recorded is not None:
        return [RunWorkload(kind=status.recorded.kind, name=status.recorded.name)]
    if spec is None:
        return []
    return [RunWorkload(kind=w.kind, name=w.name, role=w.role) for w in spec.workload_list()]


def adopted(status: UpdateRunStatus, spec: ManagedSystemSpec | None) -> None:
    """A run an older operator started kept its one workload's replicas, images and record
    in fields of its own: move them into ``status.workloads`` (once, in place)."""
    legacy = (
        status.recorded is not None
        or status.start_replicas is not None
        or status.stopped_replicas is not None
        or status.images_set is not None
    )
    if status.workloads or not legacy:
        return
    found = run_workloads(status, spec)
    if not found:
        return
    first = found[0]
    first.start_replicas, first.stopped_replicas = status.start_replicas, status.stopped_replicas
    first.images_set, first.recorded = status.images_set, status.recorded
    status.workloads = [first]
    status.start_replicas = status.stopped_replicas = status.images_set = None
    status.recorded = None


def images_set(status: UpdateRunStatus) -> bool:
    """Whether the run set target images on any workload (it may have changed it)."""
    return any(w.images_set for w in status.workloads)


def named(workload: RunWorkload) -> str:
    return f"{workload.kind} {workload.name}"


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
class Step:
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

    def workloads(self) -> list[tuple[RunWorkload, Mapping[str, Any] | None]]:
        """Each workload the run decided when it started, with what this step read of it."""
        return [(w, self.seen.workloads.get(w.name)) for w in self.status.workloads]

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
        """A terminal phase: completion time, Ready and an Event; the run's counters follow
        in a step of their own (:func:`count_end`), once this status is written."""
        succeeded = phase == Phase.SUCCEEDED
        self.enter(phase, message)
        self.status.completion_time = utc_text(self.now)
        self.status.counted = False
        self.out.wait = Wait.NOW
        self.condition(c.READY, succeeded, phase.value, summary or message)
        self.act(
            Emit(
                "Normal" if phase in {Phase.SUCCEEDED, Phase.CANCELLED} else "Warning",
                phase.value,
                summary or message,
            ),
        )


def count_end(step: Step) -> None:
    """The ended run's counters (the action), recorded as counted by the status written
    with it. The controller counts before it writes, so an operator killed between the two
    leaves the run uncounted for the next one: at least once."""
    spec = spec_or_none(step.seen.system)
    step.act(
        RunEnded(
            spec.service_model.value if spec else "",
            spec.package.value if spec and spec.package else "",
        )
    )
    step.status.counted = True
    step.out.wait = Wait.DONE


def spec_or_none(system: Mapping[str, Any] | None) -> ManagedSystemSpec | None:
    return parse_system(system.get("spec") or {})[0] if system is not None else None


def end_failed(step: Step, why: str, needs_person: bool) -> None:
    if needs_person:
        step.condition(
            c.NEEDS_ATTENTION,
            True,
            c.ROLLBACK_FAILED,
            f"{why}; a person must check the workload and its claims",
        )
    step.end(Phase.FAILED, why)
