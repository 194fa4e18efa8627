"""ManagedSystem: one customer system and the contract that governs its updates."""

from __future__ import annotations

from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, StrictBool, StrictInt

from patchwarden.api.common import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    Condition,
    Duration,
    DurationOrZero,
    Model,
    Package,
    Party,
    Rule,
    ServiceModel,
    UpdateClass,
    conditions_field,
    map_by,
    parse_duration,
    unique,
)
from patchwarden.api.maintenance import Maintenance


class InstalledBy(StrEnum):
    PROVIDER = "provider"
    CUSTOMER = "customer"


class Source(StrEnum):
    STANDARD_REPOSITORY = "standard-repository"
    OTHER = "other"


class Layer(StrEnum):
    OS = "os"
    MIDDLEWARE = "middleware"
    APPLICATION = "application"


TRACK_PATTERN = (
    r"^(any|major|minor|(>=|<=|>|<|==|!=) ?[0-9][A-Za-z0-9.+~:-]*"
    r"(, ?(>=|<=|>|<|==|!=) ?[0-9][A-Za-z0-9.+~:-]*)*)$"
)


class Component(Model):
    """A piece of software on the system: bound to a container of one of its workloads (its
    installed version is read from the container's image and the ReleaseCatalogs), or
    described by hand (``version``)."""

    name: str = Field(min_length=1, max_length=128)
    """Also the component's name in the ReleaseCatalogs."""
    version: str | None = Field(default=None, min_length=1, max_length=128)
    """The installed version, for a component without a container (a VM's package that
    the update Job updates); read from the workload when ``container`` is given."""
    container: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63)
    """The container that runs this component: the operator reads its image and sets the
    target release's image on it."""
    workload: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253)
    """The workload (of ``spec.workloads``, by name) whose container runs the component;
    required with a container when the system has several workloads, default: the only
    one."""
    track: str = Field(default="major", max_length=256, pattern=TRACK_PATTERN)
    """Which newer releases are acceptable: ``major`` (same major version as installed,
    the default: no major upgrade happens by itself), ``minor`` (same major.minor),
    ``any``, or constraints such as ``>=15, <17`` in the catalog's version order."""
    installed_by: InstalledBy
    source: Source
    layer: Layer = Layer.OS
    end_of_life: date | None = None
    """The vendor's end of support for this version (when no catalog release says it)."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.version) != has(self.container)",
            "give the installed version or the container that runs the component, not both",
            ".version",
            lambda c: (c.version is None) != (c.container is None),
        ),
        Rule(
            "!has(self.workload) || has(self.container)",
            "workload names where the component's container is; a component described by "
            "hand has none",
            ".workload",
            lambda c: c.workload is None or c.container is not None,
        ),
    )


class Workload(Model):
    """A Deployment or StatefulSet of the system, in the system's namespace."""

    kind: Literal["Deployment", "StatefulSet"]
    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)
    role: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63)
    """What the workload is to the system, for people and Events: e.g. ``database``,
    ``app``, ``cache``."""


class OnError(StrEnum):
    """What an alert-gate query the endpoint cannot answer means."""

    BLOCK = "Block"
    """As if it fired: no run starts, a run in progress stops (fail closed)."""
    PROCEED = "Proceed"
    """As if it were clear (fail open); the condition says so."""


class AlertGate(Model):
    """Firing alerts that hold this system's updates back (docs/alert-gate.md)."""

    query: str = Field(min_length=1, max_length=2048)
    """An instant PromQL query, asked of the operator's Prometheus endpoint: while it
    returns any series, no run of this system starts and a run in progress stops (rolling
    back once it changed the workload), e.g.
    ``ALERTS{alertstate="firing", namespace="shop", severity=~"critical|warning"}``. Added to
    the operator's fleet-wide query, never replacing it."""
    on_error: OnError | None = None
    """When the endpoint cannot answer: ``Block`` or ``Proceed``; default: the operator's
    setting (``Block`` unless configured otherwise)."""


class Approval(Model):
    """The customer approves each run the provider proposes of its own initiative
    (docs/approvals.md)."""

    required: StrictBool = True
    before: Duration = "24h"
    """The approval must come at least this long before the window opens; otherwise the
    window is skipped (with the reason) and the next one is proposed."""


class ExecHook(Model):
    """A command run in a container of one of the system's workloads (like ``kubectl exec``)."""

    container: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    workload: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253)
    """The workload (of ``spec.workloads``, by name) whose ready pod runs the command;
    default: the first."""
    command: list[Annotated[str, Field(max_length=4096)]] = Field(min_length=1, max_length=64)
    """The command and its arguments, not run through a shell (``["sh", "-c", "…"]`` for one)."""


class JobHook(Model):
    """A Job from a pod template, in the system's namespace."""

    template: dict[str, Any] = Field(
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """A core/v1 PodTemplateSpec; it gets the update Job's variables and Pod Security floor."""


class Hook(Model):
    """A step before the snapshots (``pre``) or after the update is verified (``post``)."""

    name: str = Field(min_length=1, max_length=40, pattern=DNS_LABEL)
    exec_: ExecHook | None = Field(default=None, alias="exec")
    job: JobHook | None = None
    timeout: Duration = "5m"
    """The hook fails when it has not ended within this."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.exec) != has(self.job)",
            "a hook has exactly one of exec and job",
            ".exec",
            lambda h: (h.exec_ is None) != (h.job is None),
        ),
    )


class Hooks(Model):
    """Steps around the update (docs/hooks.md): each in order; the first failure stops."""

    pre: Annotated[list[Hook], AfterValidator(unique("name", "hook names"))] = Field(
        default_factory=list, max_length=8, json_schema_extra=map_by("name")
    )
    """Before the snapshots (e.g. flush a database): a failure ends the run before anything
    changed."""
    post: Annotated[list[Hook], AfterValidator(unique("name", "hook names"))] = Field(
        default_factory=list, max_length=8, json_schema_extra=map_by("name")
    )
    """Once the updated workload is ready (e.g. a smoke test): a failure fails the
    verification, and the run rolls back."""


class RunJob(StrEnum):
    WHEN_NEWER = "WhenNewer"
    EVERY_WINDOW = "EveryWindow"


class Updates(Model):
    """What an update run does."""

    classes: list[UpdateClass] | None = Field(
        default=None,
        min_length=1,
        max_length=2,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Update classes the contract allows; default: security for PaaS, both for SaaS."""
    template: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """The update Job's pod template (a core/v1 PodTemplateSpec), run after the target
    images are set: it receives the targets in ``PATCHWARDEN_TARGETS`` (JSON). Optional
    when every component is bound to a container."""
    run_job: RunJob = RunJob.WHEN_NEWER
    """When the update Job runs: ``WhenNewer`` (only in a run that installs a newer release
    of a component; with nothing newer no run starts, so no snapshots are taken and no
    no-op is proposed for approval), or ``EveryWindow`` (in every window, also with
    nothing newer known: e.g. ``apt-get upgrade`` of packages no catalog lists)."""
    catalogs: list[Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]] | None = Field(
        default=None, max_length=16, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """The ReleaseCatalogs whose releases this system's components may take; default: all."""
    approve_after: Duration | None = None
    """A release becomes a target only this long after it was ``released`` (like AWS SSM's
    approve-after days), e.g. ``168h``; default: at once."""
    hooks: Hooks | None = None
    """Commands in the workload's containers, or Jobs, before the snapshots and after the
    update (docs/hooks.md)."""
    approval: Approval | None = None
    """Runs the provider starts on its own (SaaS schedule, PaaS advanced cadence) need the
    customer's approval of each proposal (``status.proposal``); requests need none."""
    alert_gate: AlertGate | None = None
    """A query whose firing alerts hold this system's updates back; the operator's
    fleet-wide gate applies as well."""
    run_timeout: Duration = "1h"
    verify_timeout: Duration = "10m"
    """How long the workload may take to be ready after the update (and to complete the
    rollout of new images)."""
    bake_time: DurationOrZero = "2m"
    """Once the updated workload is ready (and the post hooks passed), how long it is
    watched before the run succeeds: a container restart, readiness lost or the alert
    gate firing then rolls it back, as a person watching would (``0s``: no bake)."""
    expected_duration: Duration = "30m"
    """No run starts later than a window's end minus this and ``rollback.reserve`` (the
    cutoff)."""


class Consistency(StrEnum):
    CRASH = "Crash"
    STOPPED = "Stopped"
    GROUP = "Group"


class FreezeHook(Model):
    """A command that quiesces a workload before the snapshots are taken (``freeze``) and
    one that resumes it once they are cut (``thaw``), run in a ready pod of the workload
    like an ``exec`` hook (docs/workloads.md)."""

    name: str = Field(min_length=1, max_length=40, pattern=DNS_LABEL)
    workload: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253)
    """The workload (of ``spec.workloads``, by name) whose ready pod runs the commands;
    default: the first."""
    container: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    freeze: list[Annotated[str, Field(max_length=4096)]] = Field(min_length=1, max_length=64)
    """The command that quiesces it (not run through a shell: ``["sh", "-c", "…"]``), e.g.
    stop accepting writes and flush."""
    thaw: list[Annotated[str, Field(max_length=4096)]] = Field(min_length=1, max_length=64)
    """The command that resumes it. It runs whenever its freeze was attempted: after the
    snapshots are cut, and also when a freeze, the snapshot or the run failed meanwhile."""
    timeout: Duration = "30s"
    """Each command fails when it has not ended within this (its own deadline)."""


class Backup(Model):
    volume_snapshot_class_name: str | None = Field(
        default=None, pattern=DNS_SUBDOMAIN, max_length=253
    )
    """VolumeSnapshotClass of the pre-update snapshots; default: the cluster's default class."""
    volume_group_snapshot_class_name: str | None = Field(
        default=None, pattern=DNS_SUBDOMAIN, max_length=253
    )
    """VolumeGroupSnapshotClass of the group snapshot (``consistency: Group``); default: the
    class annotated ``groupsnapshot.storage.kubernetes.io/is-default-class: "true"``."""
    retain: StrictInt = Field(default=3, ge=1, le=100)
    """Snapshots of this many runs are kept (never those of the newest successful run)."""
    required: StrictBool = True
    """Refuse to update when no snapshot can be taken."""
    consistency: Consistency = Consistency.CRASH
    """``Crash``: snapshot each claim while the workloads run (what a power cut would leave;
    enough for one claim of a crash-safe database). ``Stopped``: scale every workload to
    zero first and back once the snapshots are ready, so that all claims are captured at
    rest together; the downtime counts inside the window. ``Group``: one
    VolumeGroupSnapshot over every claim of the system, taken by the storage at one instant
    while the workloads run (the CSI driver must support group snapshots; with ``freeze``
    hooks the workloads are quiesced around it): consistent across claims without the
    downtime. docs/workloads.md compares them."""
    freeze: Annotated[list[FreezeHook], AfterValidator(unique("name", "freeze hook names"))] = (
        Field(default_factory=list, max_length=8, json_schema_extra=map_by("name"))
    )
    """Commands that quiesce the workloads before the snapshots and resume them once they
    are cut, in order (thawed in the reverse order); not with ``Stopped``."""
    max_freeze: Duration = "1m"
    """The longest the workloads stay frozen: snapshots not cut by then are given up, the
    workloads thawed and the run ends with nothing changed."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(self.freeze) || size(self.freeze) == 0 || self.consistency != 'Stopped'",
            "freeze hooks need running workloads: not with consistency Stopped",
            ".freeze",
            lambda b: not b.freeze or b.consistency != Consistency.STOPPED,
        ),
    )


class RestoreData(StrEnum):
    ALWAYS = "Always"
    NEVER = "Never"


class Rollback(Model):
    enabled: StrictBool = True
    """Restore the snapshots and the recorded workload when an update fails."""
    restore_data: RestoreData = RestoreData.ALWAYS
    """What a rollback restores: ``Always`` the claims from their pre-update snapshots (each
    kept first as the failed update left it) and the workload's spec; ``Never`` the
    workload's spec and images only, its claims left as they are (for systems whose data an
    update cannot change: no scale-down, no downtime for the restore)."""
    reserve: Duration = "15m"
    """Time kept free at the end of each window for a rollback: the update Job's deadline
    ends this long before the window does, and the cutoff is this much earlier, so a
    failed update is rolled back inside the window. Ignored when rollback is disabled."""
    keep_failed_state: Duration = "168h"
    """How long the failed-state snapshots are kept at least: before a rollback replaces a
    claim, the claim is snapshotted as the failed update left it (label
    ``patchwarden.io/state=failed``), so nothing written since the backup is lost. They are
    never pruned by ``backup.retain``; the first successful run after this time deletes
    them."""


class History(Model):
    """How many ended UpdateRuns of the system are kept (older ones are deleted, their Jobs
    with them), as a CronJob keeps its Jobs. Snapshots follow ``backup`` and ``rollback``."""

    successful_runs: StrictInt = Field(default=3, ge=0, le=100)
    failed_runs: StrictInt = Field(default=10, ge=0, le=100)
    """Runs that ended RolledBack or Failed."""


def _only_paas(s: ManagedSystemSpec) -> bool:
    return s.service_model == ServiceModel.PAAS


class ManagedSystemSpec(Model):
    """A customer system under a managed-hosting contract."""

    customer: str = Field(min_length=1, max_length=128)
    service_model: ServiceModel
    package: Package | None = None
    """The managed-service package of a PaaS system."""
    customer_admin_access: StrictBool = False
    """The customer has root/admin access: the system is then not eligible for managed updates."""
    workloads: (
        Annotated[list[Workload], AfterValidator(unique("name", "workload names"))] | None
    ) = Field(default=None, min_length=1, max_length=8, json_schema_extra=map_by("name"))
    """The system's Deployments and StatefulSets, in the order an update takes them (the
    preferred form, also for one): a run snapshots the claims of all, sets the target images
    of each in this order, each rolled out and ready before the next (a database before the
    app that migrates it), runs the update Job once all are, verifies and bakes all, and
    when any step of any of them fails rolls back all of them: every claim restored, every
    workload's spec restored (docs/workloads.md)."""
    workload: Workload | None = None
    """One workload: the older form of ``workloads`` with one element (still accepted)."""
    volumes: list[Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]] = Field(
        default_factory=list, max_length=64
    )
    """PersistentVolumeClaims to snapshot; default: every claim of every workload."""
    components: list[Component] = Field(default_factory=list, max_length=256)
    updates: Updates = Field(default_factory=Updates)
    maintenance: Maintenance = Field(default_factory=Maintenance)
    backup: Backup = Field(default_factory=Backup)
    rollback: Rollback = Field(default_factory=Rollback)
    history: History = Field(default_factory=History)

    def reserved(self) -> timedelta:
        """The part of a window's end no run starts in: the expected duration of an update
        and the time kept for its rollback (the cutoff is the window's end minus this)."""
        return parse_duration(self.updates.expected_duration) + self.rollback_reserve()

    def workload_list(self) -> list[Workload]:
        """The system's workloads in their order (``workload`` is a list of one)."""
        if self.workloads:
            return list(self.workloads)
        return [self.workload] if self.workload is not None else []

    def workload_of(self, component: Component) -> Workload | None:
        """The workload whose container runs the component (None: described by hand, or a
        workload the spec does not list)."""
        if component.container is None:
            return None
        found = self.workload_list()
        if component.workload is None:
            return found[0] if len(found) == 1 else None
        return next((w for w in found if w.name == component.workload), None)

    def rollback_reserve(self) -> timedelta:
        """How long before a window's end the update Job must have ended."""
        return parse_duration(self.rollback.reserve) if self.rollback.enabled else timedelta()

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.workload) != has(self.workloads)",
            "give the system's workloads (workloads, preferred) or its one workload (workload), "
            "not both",
            ".workloads",
            lambda s: (s.workload is None) != (s.workloads is None),
        ),
        Rule(
            "!has(self.components) || self.components.all(c, !has(c.workload) || "
            "(has(self.workloads) && self.workloads.exists(w, w.name == c.workload)))",
            "components[].workload must name a workload of spec.workloads",
            ".components",
            lambda s: all(
                c.workload is None or any(w.name == c.workload for w in s.workloads or [])
                for c in s.components
            ),
        ),
        Rule(
            "!has(self.workloads) || self.workloads.size() < 2 || !has(self.components) || "
            "self.components.all(c, !has(c.container) || has(c.workload))",
            "with several workloads, a component bound to a container names its workload",
            ".components",
            lambda s: (
                len(s.workloads or []) < 2
                or all(c.container is None or c.workload is not None for c in s.components)
            ),
        ),
        Rule(
            "self.serviceModel == 'PaaS' || !has(self.package)",
            "package applies to PaaS systems only",
            ".package",
            lambda s: _only_paas(s) or s.package is None,
        ),
        Rule(
            "self.serviceModel != 'PaaS' || has(self.package)",
            "a PaaS system needs a package: basic or advanced",
            ".package",
            lambda s: not _only_paas(s) or s.package is not None,
        ),
        Rule(
            "!has(self.updates) || !has(self.updates.approval) || self.serviceModel == 'SaaS' || "
            "(self.serviceModel == 'PaaS' && has(self.package) && self.package == 'advanced')",
            "approval covers the runs the provider starts on its own (SaaS, PaaS advanced); "
            "other systems are updated only on request, and a request is its approval",
            ".updates.approval",
            lambda s: (
                s.updates.approval is None
                or s.service_model == ServiceModel.SAAS
                or (_only_paas(s) and s.package == Package.ADVANCED)
            ),
        ),
        Rule(
            "!has(self.maintenance) || !has(self.maintenance.cadence) || "
            "(self.serviceModel == 'PaaS' && has(self.package) && self.package == 'advanced')",
            "cadence applies to PaaS systems with package advanced only",
            ".maintenance.cadence",
            lambda s: (
                s.maintenance.cadence is None or (_only_paas(s) and s.package == Package.ADVANCED)
            ),
        ),
        Rule(
            "self.serviceModel != 'PaaS' || !has(self.updates) || !has(self.updates.classes) || "
            "self.updates.classes.all(c, c == 'security')",
            "PaaS managed services cover security updates only",
            ".updates.classes",
            lambda s: (
                not _only_paas(s)
                or s.updates.classes is None
                or all(c == UpdateClass.SECURITY for c in s.updates.classes)
            ),
        ),
    )


class Responsibility(Model):
    planning: Party
    execution: Party


class WindowRef(Model):
    """One occurrence of a window, in UTC."""

    name: str
    start: str = Field(json_schema_extra={"format": "date-time"})
    end: str = Field(json_schema_extra={"format": "date-time"})
    cutoff: str = Field(json_schema_extra={"format": "date-time"})


class LastRun(Model):
    name: str
    result: str
    completion_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    message: str | None = Field(default=None, max_length=1024)
    """The run's last message: why it ended so (shortened to 1 KiB)."""
    needs_attention: bool | None = None
    """The run ended Failed leaving the workload as a person must check (its rollback
    failed, or none was allowed): the system is Stalled and starts no run until the
    annotation ``patchwarden.io/acknowledged-run`` names this run."""


class ComponentStatus(Model):
    """What is installed of one component and what it could be updated to."""

    name: str
    container: str | None = None
    workload: str | None = None
    """The workload of that container."""
    in_scope: bool = True
    """Whether the provider updates it under the system's contract (PaaS: provider-installed
    OS and middleware from standard repositories)."""
    installed: str | None = None
    """The installed version; absent when it cannot be told (see message)."""
    image: str | None = None
    """The container's image now."""
    security: str | None = None
    """The newest acceptable, approved release with security fixes newer than installed."""
    feature: str | None = None
    """The newest acceptable, approved release with features newer than installed."""
    behind_since: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    """Since when an approved, acceptable newer release exists."""
    end_of_life: str | None = Field(default=None, json_schema_extra={"format": "date"})
    """End of life of the installed release."""
    installed_from: str | None = Field(default=None, max_length=512)
    """For a component described by hand: where ``installed`` comes from (``spec``, or the
    update run that installed it while the spec still names the version it replaced)."""
    message: str | None = Field(default=None, max_length=1024)


class LearnedVersion(Model):
    """The version of a component described by hand that an update run installed (the
    update Job reported it, or it was the run's target for the Job)."""

    component: str
    version: str
    spec_version: str | None = None
    """``spec.components[].version`` when it was learned: the learned version counts while
    the spec still says this (GitOps wrote nothing newer)."""
    run: str
    time: str = Field(json_schema_extra={"format": "date-time"})
    """When that run ended."""


class SkippedWindow(Model):
    """The newest window occurrence in which a due run did not start: nothing was to install,
    or its proposal was not approved in time."""

    name: str
    start: str = Field(json_schema_extra={"format": "date-time"})
    request: str | None = None
    """The UpdateRequest the run would have served (it then ends Succeeded)."""
    reason: str | None = None
    """Why, when not "nothing to install"."""


class ProposedTarget(Model):
    component: str
    from_version: str | None = Field(default=None, alias="from")
    to_version: str = Field(alias="to")


class Proposal(Model):
    """The run the provider proposes for the next window (``updates.approval``)."""

    window: str
    start: str = Field(json_schema_extra={"format": "date-time"})
    targets: list[ProposedTarget] = Field(default_factory=list, max_length=256)
    approve_by: str = Field(json_schema_extra={"format": "date-time"})
    state: str
    """``Pending``, ``Approved``, ``Rejected`` (by the customer, with a reason) or
    ``Expired`` (not approved by ``approveBy``)."""
    approved_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    approved_by: str | None = Field(default=None, max_length=512)
    """Who approved it: the user the API server recorded (docs/approvals.md)."""
    rejected_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    rejected_by: str | None = Field(default=None, max_length=512)
    reason: str | None = Field(default=None, max_length=1024)
    """Why the customer rejected it."""
    message: str = ""


class WaveMembership(Model):
    catalog: str
    wave: str


class ManagedSystemStatus(Model):
    observed_generation: int | None = None
    conditions: list[Condition] = conditions_field()
    responsibility: Responsibility | None = None
    eligible: bool | None = None
    eligibility_reason: str | None = None
    next_window: WindowRef | None = None
    last_run: LastRun | None = None
    last_successful_update: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    components: list[ComponentStatus] = Field(default_factory=list, max_length=256)
    pending_updates: str | None = None
    """Components with an update pending, by class, e.g. ``security 1, feature 2``."""
    skipped_window: SkippedWindow | None = None
    proposal: Proposal | None = None
    waves: list[WaveMembership] = Field(default_factory=list, max_length=16)
    """The system's wave in each ReleaseCatalog that has waves (docs/waves.md)."""
    learned_versions: list[LearnedVersion] = Field(
        default_factory=list, max_length=128, json_schema_extra=map_by("component")
    )
    """Versions of components described by hand that update runs installed
    (docs/gitops.md): the operator's record, kept when the runs are pruned."""


class ManagedSystem(Model):
    api_version: Literal["patchwarden.io/v1alpha1"] = "patchwarden.io/v1alpha1"
    kind: Literal["ManagedSystem"] = "ManagedSystem"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ManagedSystemSpec
    status: ManagedSystemStatus | None = None
