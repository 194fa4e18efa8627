"""UpdateRun: one execution of an update and its audit record."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from patchwarden.api.common import (
    Condition,
    LocalObjectReference,
    Model,
    UpdateClass,
    conditions_field,
)
from patchwarden.api.system import WindowRef


class Trigger(StrEnum):
    REQUEST = "Request"
    CADENCE = "Cadence"
    SCHEDULE = "Schedule"


class Phase(StrEnum):
    PENDING = "Pending"
    SNAPSHOTTING = "Snapshotting"
    RECORDING = "Recording"
    UPDATING = "Updating"
    VERIFYING = "Verifying"
    BAKING = "Baking"
    """Ready and verified; watched for ``updates.bakeTime`` before it counts as a success."""
    SUCCEEDED = "Succeeded"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    """Stopped before it changed the workload, because the run or its system is being
    deleted."""


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED, Phase.CANCELLED})
"""The phases a run ends in (as StrEnum members they also match the plain strings)."""


class RollbackStep(StrEnum):
    SCALE_DOWN = "ScaleDown"
    RESTORE_CLAIMS = "RestoreClaims"
    RESTORE_WORKLOAD = "RestoreWorkload"
    VERIFY = "Verify"


class Target(Model):
    """One component to update in this run, chosen from the ReleaseCatalogs when the run was
    created: its newest acceptable, approved release of a class the trigger allows."""

    component: str
    container: str | None = None
    """The workload's container whose image the operator sets; absent: the update Job
    updates the component (its ``version`` was written by hand)."""
    workload: str | None = None
    """The workload of that container (absent in runs made before systems had several:
    their first)."""
    from_version: str = Field(alias="from")
    to_version: str = Field(alias="to")
    from_image: str | None = None
    image: str | None = None
    """The release's image (the one set on the container)."""
    classes: list[UpdateClass] = Field(default_factory=list)
    advisories: list[str] = Field(default_factory=list)
    """Advisories of every release between the installed one and the target."""


class Change(Model):
    """What the run changed in one component."""

    component: str
    container: str | None = None
    workload: str | None = None
    from_version: str | None = Field(default=None, alias="from")
    to_version: str | None = Field(default=None, alias="to")
    from_image: str | None = None
    to_image: str | None = None
    classes: list[str] = Field(default_factory=list)
    advisories: list[str] = Field(default_factory=list)
    source: str = "catalog"
    """``catalog`` (an image the operator set) or ``job`` (reported by the update Job's
    termination message)."""


class UpdateRunSpec(Model):
    """Why this run happens and in which window; written once by the operator."""

    system_ref: LocalObjectReference
    customer: str = Field(max_length=128)
    trigger: Trigger
    request_ref: LocalObjectReference | None = None
    ticket: str | None = Field(default=None, max_length=128)
    classes: list[UpdateClass] = Field(
        min_length=1, max_length=2, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    components: list[str] = Field(default_factory=list, max_length=256)
    """Names of the components in scope of this run."""
    targets: list[Target] = Field(default_factory=list, max_length=256)
    """What this run installs (empty: what the update Job does is all)."""
    template_hash: str | None = Field(default=None, max_length=80)
    """``sha256:`` of the system's update Job template when the run was created (canonical
    JSON): which pod the run was allowed to start, for the audit."""
    window: WindowRef


class HookRecord(Model):
    """One hook of the run: how it went, and what it printed (truncated)."""

    name: str
    stage: str
    """``pre`` or ``post``."""
    state: str
    """``Running``, ``Succeeded`` or ``Failed``."""
    start_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    completion_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    job: str | None = None
    """The hook's Job (a ``job`` hook)."""
    output: str | None = Field(default=None, max_length=2048)
    """The command's output, or the Job's termination message: the last 1,024 characters."""


class SnapshotRecord(Model):
    claim: str
    snapshot: str
    created: bool = False
    ready_to_use: bool = False
    claim_spec: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """The claim's spec when it was snapshotted: what a restore recreates."""
    group: str | None = None
    """The VolumeGroupSnapshot whose member ``snapshot`` is (``backup.consistency: Group``;
    ``snapshot`` is empty until the group is ready and its members are known)."""


class GroupSnapshotRecord(Model):
    """The one VolumeGroupSnapshot over every claim of the system (``consistency: Group``)."""

    name: str
    volume_group_snapshot_class_name: str
    label: str
    """``key=value`` the run put on each of its claims, which the group's selector selects."""
    created: bool = False
    cut_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    """When the storage took it (its ``status.creationTime``)."""
    ready_to_use: bool = False


class FreezeRecord(Model):
    """The workloads quiesced around the snapshots (``backup.freeze``)."""

    start_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    """When the first freeze command began."""
    thawing: bool = False
    """The thaw commands run (the snapshots are cut, or something failed meanwhile)."""
    end_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    """When the last thaw command ended."""
    frozen_seconds: float | None = None
    """From the first freeze to the last thaw (bounded by ``backup.maxFreeze``)."""
    hooks: list[HookRecord] = Field(default_factory=list, max_length=16)
    """Each freeze and thaw command (``stage``: ``freeze`` or ``thaw``), with its output."""
    failure: str | None = Field(default=None, max_length=1024)
    """Why the run ends once everything is thawed (a freeze failed, the snapshots were not
    cut within ``maxFreeze``, the run was stopped)."""


class JobRecord(Model):
    name: str
    created: bool = False
    result: str | None = None
    termination: str | None = Field(default=None, max_length=2048)
    """How a failed Job's container ended: exit code, reason and its termination
    message (the last lines of its log), at most 1 KiB of it."""


class WorkloadRecord(Model):
    """The workload as it was before the update: what a rollback restores."""

    kind: str
    name: str
    replicas: int
    template: dict[str, Any] = Field(
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    spec: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """The workload's whole spec: a rollback restores exactly this (runs recorded before
    it existed restore the template and replicas only)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """The workload object's labels, restored with the spec."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """The workload object's annotations, restored with the spec (but the ones its
    controller keeps, such as ``deployment.kubernetes.io/revision``)."""


class RunWorkload(Model):
    """One workload of the system as this run found it, stopped it and changed it (in the
    system's order, decided when the run started)."""

    kind: str
    name: str
    role: str | None = None
    start_replicas: int | None = None
    """Its replicas when the run started (before it changed anything): what it is scaled
    back to after a ``Stopped`` backup."""
    stopped_replicas: int | None = None
    """Its replicas before it was stopped for the snapshots (``backup.consistency:
    Stopped``); 0 once it was scaled back to them."""
    images_set: bool | None = None
    """The targets' images are set on it (its rollout is awaited next)."""
    recorded: WorkloadRecord | None = None
    """It as it was before the update: what a rollback restores."""


class BakeRecord(Model):
    """The bake (``updates.bakeTime``): the updated workload watched once it was ready."""

    start_time: str = Field(json_schema_extra={"format": "date-time"})
    until: str = Field(json_schema_extra={"format": "date-time"})
    restarts: int | None = None
    """The workload's containers' restarts when the bake began (a restart since fails it)."""
    end_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    result: str | None = None
    """``Passed``, or ``Failed`` with ``reason``: what ended the bake."""
    reason: str | None = Field(default=None, max_length=1024)


class RestoreRecord(Model):
    step: RollbackStep | None = None
    """The step the rollback is at."""
    start_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    """When the rollback began (its end is the run's completionTime)."""
    claims: list[str] = Field(default_factory=list)
    """Claims recreated from their snapshots so far."""
    failed_state: list[SnapshotRecord] = Field(default_factory=list)
    """Snapshots of the claims as the failed update left them, each taken (and ready)
    before its claim is deleted: nothing the update wrote is lost."""
    data: bool | None = None
    """False: the claims are not restored (``rollback.restoreData: Never`` when the rollback
    began), only the workload's spec and images; unset: they are."""
    completed: bool = False


class GateRecord(Model):
    """The alert gate's verdict as the run last acted on it (docs/alert-gate.md)."""

    decision: str
    """``AlertsClear``, ``AlertsFiring`` or ``AlertGateUnreachable``."""
    checked_time: str = Field(json_schema_extra={"format": "date-time"})
    queries: list[str] = Field(default_factory=list, max_length=2)
    firing: list[str] = Field(default_factory=list, max_length=20)
    """What fired, as ``alertname{label="value",…}`` (at most 20)."""
    message: str = Field(max_length=2048)
    stopped: bool = False
    """The gate held the run back or stopped it (a request it served is tried again)."""


class UpdateRunStatus(Model):
    observed_generation: int | None = None
    conditions: list[Condition] = conditions_field()
    phase: Phase | None = None
    phase_start_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    message: str | None = None
    failure: str | None = None
    """Why the update failed, kept while the rollback runs."""
    start_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    completion_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    counted: bool | None = None
    """Whether the run's end is in the operator's run counters: ``false`` when it ended,
    ``true`` once an operator counted it (counted first, then recorded). An operator that
    dies between the two leaves it ``false`` and the next one counts it: an end is counted
    at least once, never lost with the answer to the write that ended the run."""
    claims: list[str] | None = Field(default=None, max_length=256)
    """The PersistentVolumeClaims the run backs up and a rollback restores, decided when it
    started, before it changed anything: ``spec.volumes``, or every claim the workload
    mounts and, of a StatefulSet, every existing claim of its volumeClaimTemplates (each
    ordinal found, not only those below its replicas). Unset: a run started by an older
    operator (it decides them at its first snapshot step)."""
    workloads: list[RunWorkload] = Field(default_factory=list, max_length=8)
    """The system's workloads, in its order, decided when the run started: their replicas,
    what the run set on them, and each as it was before the update."""
    start_replicas: int | None = None
    """Deprecated (runs started before ``workloads``): moved there at the next step."""
    snapshots: list[SnapshotRecord] = Field(default_factory=list)
    group_snapshot: GroupSnapshotRecord | None = None
    freeze: FreezeRecord | None = None
    stopped_replicas: int | None = None
    """Deprecated (runs started before ``workloads``): moved there at the next step."""
    backup_skipped: str | None = None
    """Why the run took no snapshots (``backup.required: false`` and no VolumeSnapshotClass):
    a rollback then restores the workload's spec only, not its data."""
    job: JobRecord | None = None
    images_set: bool | None = None
    """Deprecated (runs started before ``workloads``): moved there at the next step."""
    changes: list[Change] = Field(default_factory=list, max_length=512)
    """What the run changed: the images it set and what the update Job reported."""
    summary: str | None = Field(default=None, max_length=256)
    """One line of the changes, e.g. ``postgres 16.3→16.4, pgbouncer 1.22→1.23``."""
    recorded: WorkloadRecord | None = None
    """Deprecated (runs started before ``workloads``): moved there at the next step."""
    restore: RestoreRecord | None = None
    hooks: list[HookRecord] = Field(default_factory=list, max_length=16)
    alert_gate: GateRecord | None = None
    """The alert gate's verdict when the run started, and when it stopped the run."""
    bake: BakeRecord | None = None


class UpdateRun(Model):
    api_version: Literal["patchwarden.io/v1alpha1"] = "patchwarden.io/v1alpha1"
    kind: Literal["UpdateRun"] = "UpdateRun"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: UpdateRunSpec
    status: UpdateRunStatus | None = None
