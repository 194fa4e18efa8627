"""The pre-update backup of a run: which claims (decided in Pending, before anything
changes: ``core/claims.py``), the workloads stopped for them when ``backup.consistency`` is
``Stopped`` and started again once they are ready, and one VolumeSnapshot per claim.
Pure: called by :func:`patchwarden.core.run.advance`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from patchwarden.api.run import GroupSnapshotRecord, Phase, RunWorkload, SnapshotRecord
from patchwarden.api.system import Consistency, ManagedSystemSpec
from patchwarden.core import builders, claims, freeze
from patchwarden.core.hooks import hook_stage, run_hooks
from patchwarden.core.step import (
    Abort,
    CreateGroupSnapshot,
    CreateSnapshot,
    Emit,
    LabelClaims,
    ScaleBack,
    ScaleToZero,
    Step,
    Unchanged,
    Wait,
    end_failed,
    named,
)

BACKUP_SKIPPED = "no VolumeSnapshotClass and backup.required is false"
GROUP_BACKUP_SKIPPED = "no VolumeGroupSnapshotClass and backup.required is false"


def decide_claims(
    step: Step, spec: ManagedSystemSpec, workloads: Sequence[Mapping[str, Any]]
) -> None:
    """Record the claims the run backs up and each workload's replicas, as they are before
    the run changes anything (:mod:`~patchwarden.core.claims`); workloads whose claims
    cannot all be found end the run with nothing changed."""
    decided = claims.of_system(spec, workloads, step.seen.namespace_claims or ())
    if decided.problem:
        raise Unchanged(decided.problem)
    step.status.claims = list(decided.names)
    if not step.status.workloads:
        step.status.workloads = [
            RunWorkload(
                kind=w.kind,
                name=w.name,
                role=w.role,
                start_replicas=int((body.get("spec") or {}).get("replicas", 1)),
            )
            for w, body in zip(spec.workload_list(), workloads, strict=True)
        ]


def snapshotting(step: Step) -> None:
    """The pre-update snapshots: the ``pre`` hooks first, the workloads stopped for them
    (``Stopped``), the freeze commands, one snapshot per claim of ``status.claims`` (or one
    group snapshot over all of them, ``Group``), the thaw once they are cut, all ready
    within the timeout."""
    _, spec = step.system()
    status, seen = step.status, step.seen
    if status.freeze is not None and status.freeze.thawing:
        _after_thaw(step, spec)
        return
    if spec.updates.hooks and spec.updates.hooks.pre and not status.snapshots:
        require_workloads(step)
        if hook_stage(status, spec, seen.workloads) == "pre" and not run_hooks(step, spec, "pre"):
            return  # the pre-update hooks first (e.g. a database flushed before its snapshot)
    grouped = spec.backup.consistency == Consistency.GROUP
    no_class = seen.group_snapshot_class is None if grouped else seen.snapshot_class is None
    if not status.snapshots and no_class and not spec.backup.required:
        # A snapshot without a class is never made ready by a real cluster: take none.
        skipped = GROUP_BACKUP_SKIPPED if grouped else BACKUP_SKIPPED
        status.backup_skipped = skipped
        step.act(Emit("Warning", "BackupSkipped", f"{skipped}; the update runs anyway"))
        step.enter(Phase.RECORDING, f"no snapshots taken: {skipped}")
        return
    if not status.snapshots and not _recorded(step, spec):
        return  # its pods are still stopping
    if spec.backup.required and status.snapshots and seen.snapshot_class is None and not grouped:
        raise Abort("no VolumeSnapshotClass to take the required backups; nothing was changed")
    if not freeze.frozen(step, spec):
        return
    try:
        taken = _group_requested(step) if status.group_snapshot else _requested(step)
        freeze.cut(step, spec, taken)
        if status.freeze is not None and status.freeze.thawing:
            return  # thawed at the next steps, then the snapshots are awaited
        _ready(step)
    except Abort as exc:
        if status.freeze is None or status.freeze.end_time is not None:
            raise
        freeze.give_up(step, str(exc))  # never leave the workloads frozen


def _after_thaw(step: Step, spec: ManagedSystemSpec) -> None:
    """The thaw commands, one a step; then the run ends if the freeze was given up, asks
    for a person if a thaw failed, or awaits the snapshots."""
    record = step.status.freeze
    assert record is not None
    if not freeze.thawed(step, spec):
        return
    failed = freeze.thaw_failed(step.status)
    if failed:
        end_failed(
            step,
            f"thaw hook{'s' if len(failed) > 1 else ''} {', '.join(failed)} failed: the "
            "workloads may still be frozen; the update was not started"
            + (f" ({record.failure})" if record.failure else ""),
            needs_person=True,
        )
        return
    if record.failure:
        raise Unchanged(record.failure)
    if step.status.group_snapshot:
        _group_requested(step)
    else:
        _requested(step)
    _ready(step)


def _ready(step: Step) -> None:
    status = step.status
    if all(r.ready_to_use for r in status.snapshots):
        restarted = restart(step)
        frozen = ""
        if status.freeze is not None and status.freeze.frozen_seconds is not None:
            frozen = f", the workloads frozen for {status.freeze.frozen_seconds:.1f}s"
        what = (
            f"{len(status.snapshots)} claims in one group snapshot, ready"
            if status.group_snapshot
            else f"{len(status.snapshots)} snapshots ready"
        )
        step.enter(Phase.RECORDING, f"{what}{frozen}{restarted}")
        return
    if step.waited() > step.timeouts.snapshot:
        waiting = [r.snapshot or r.claim for r in status.snapshots if not r.ready_to_use]
        if status.group_snapshot:
            waiting = [status.group_snapshot.name]
        raise Abort(
            f"snapshots not ready within {step.timeouts.snapshot.total_seconds():.0f}s: "
            f"{', '.join(waiting)}; the workload was not touched"
        )
    # A group snapshot is not watched (its members are, but they appear only once it is
    # ready), and while frozen the cut (no news a watch wakes a run for) is awaited: both on
    # the poll. Else a snapshot's news wakes the run.
    still_frozen = status.freeze is not None and status.freeze.end_time is None
    step.out.wait = Wait.POLL if status.group_snapshot or still_frozen else Wait.WATCHED


def released(step: Step, why: str) -> bool:
    """Whether nothing is frozen any more (a run that must stop thaws its workloads first,
    one command a step); ``why`` it stops is kept."""
    record = step.status.freeze
    if record is None or record.end_time is not None:
        return True
    _, spec = step.system()
    freeze.give_up(step, why)
    return freeze.thawed(step, spec)


def require_workloads(step: Step) -> None:
    """Every workload the run decided must still exist (nothing was changed yet)."""
    missing = [named(w) for w, body in step.workloads() if body is None]
    if missing:
        raise Abort(f"{', '.join(missing)} not found; nothing was changed")


def _recorded(step: Step, spec: ManagedSystemSpec) -> bool:
    """Record a snapshot per claim (with the claim's spec, what a restore recreates), once
    the workloads are at rest if they must be; False while their pods are still stopping."""
    status, seen = step.status, step.seen
    require_workloads(step)
    if status.claims is None:  # started by an older operator: decided now
        missing = [
            f"{w.kind} {w.name}" for w in spec.workload_list() if not seen.workloads.get(w.name)
        ]
        if missing:
            raise Abort(f"{', '.join(missing)} not found; nothing was changed")
        decide_claims(step, spec, [seen.workloads[w.name] or {} for w in spec.workload_list()])
    if spec.backup.consistency == Consistency.STOPPED and not _stopped(step):
        return False
    grouped = spec.backup.consistency == Consistency.GROUP
    if grouped and seen.group_snapshot_class is None:
        raise Unchanged(
            "backup.consistency Group needs a VolumeGroupSnapshotClass (named in "
            "backup.volumeGroupSnapshotClassName, or the default one) and the cluster has none"
            "; nothing was changed"
        )
    group = builders.group_snapshot_name(step.run.name) if grouped else None
    for claim in status.claims or []:
        body = seen.claims.get(claim)
        if body is None:
            raise Abort(f"PersistentVolumeClaim {claim} not found; nothing was changed")
        status.snapshots.append(
            SnapshotRecord(
                claim=claim,
                # A group's members are named by the snapshot controller: known once ready.
                snapshot="" if grouped else builders.snapshot_name(step.run.name, claim),
                claim_spec=dict(body["spec"]),
                group=group,
            )
        )
    if grouped and group is not None and seen.group_snapshot_class is not None:
        value = builders.label_value(step.run.name)
        status.group_snapshot = GroupSnapshotRecord(
            name=group,
            volume_group_snapshot_class_name=seen.group_snapshot_class,
            label=f"{builders.LABEL_GROUP}={value}",
        )
        step.act(LabelClaims(tuple(status.claims or []), builders.LABEL_GROUP, value))
    return True


def _group_requested(step: Step) -> bool:
    """Ask for the group snapshot (once); note when the storage took it and, once it is
    ready, which of its member snapshots holds each claim. True once it is taken."""
    status, seen = step.status, step.seen
    group = status.group_snapshot
    assert group is not None
    if not group.created:
        body = builders.volume_group_snapshot(
            run=step.run.name,
            system=step.run.spec.system_ref.name,
            group_class=group.volume_group_snapshot_class_name,
        )
        step.act(CreateGroupSnapshot(body))
        group.created = True
        step.restart_clock()
        step.out.wait = Wait.POLL  # group snapshots are not watched: looked at on the poll
        return False
    found = seen.group_snapshot
    if found is None:
        raise Abort(f"VolumeGroupSnapshot {group.name} disappeared before it was ready")
    observed = found.get("status") or {}
    error = observed.get("error") or {}
    if error:
        raise Abort(
            f"VolumeGroupSnapshot {group.name} failed: {error.get('message') or error}; "
            "nothing was changed"
        )
    if observed.get("creationTime") and group.cut_time is None:
        group.cut_time = str(observed["creationTime"])
    if observed.get("readyToUse") and not group.ready_to_use:
        members = seen.group_members
        missing = [r.claim for r in status.snapshots if r.claim not in members]
        if missing:
            holds = ", ".join(sorted(members)) or "none"
            raise Abort(
                f"claim{'s' if len(missing) > 1 else ''} {', '.join(missing)} not in "
                f"VolumeGroupSnapshot {group.name} (it holds {holds}); nothing was changed"
            )
        for record in status.snapshots:
            record.snapshot, record.created, record.ready_to_use = members[record.claim], True, True
        group.ready_to_use = True
    return bool(group.cut_time or group.ready_to_use)


def _requested(step: Step) -> bool:
    """Ask for each recorded snapshot not yet asked for; note which are ready. True once
    the storage has taken every one (its ``creationTime``, or ready)."""
    seen = step.seen
    taken = True
    for record in step.status.snapshots:
        if not record.created:
            # An existing one (made before a restart) is taken as ours: the name is the run's.
            body = builders.volume_snapshot(
                run=step.run.name,
                system=step.run.spec.system_ref.name,
                claim=record.claim,
                snapshot_class=seen.snapshot_class,
            )
            step.act(CreateSnapshot(body))
            record.created = True
            step.restart_clock()  # the deadline counts from the request, however late
            taken = False
            continue
        if record.snapshot not in seen.snapshots:
            taken = False
            continue  # created in this very step: nothing to read yet
        existing = seen.snapshots[record.snapshot]
        if existing is None:
            raise Abort(f"VolumeSnapshot {record.snapshot} disappeared before it was ready")
        observed = existing.get("status") or {}
        record.ready_to_use = bool(observed.get("readyToUse"))
        taken = taken and bool(record.ready_to_use or observed.get("creationTime"))
    return taken


def _stopped(step: Step) -> bool:
    """Whether the workloads are stopped for consistent snapshots (stopping them first, all
    at once)."""
    stopping = []
    for workload, body in step.workloads():
        if workload.stopped_replicas is not None:
            continue
        assert body is not None  # require_workloads
        # As it was when the run started: a step repeated after the scale-down (the operator
        # killed before its status write) must not read the zero it set.
        replicas = workload.start_replicas
        workload.stopped_replicas = (
            int(body["spec"].get("replicas", 1)) if replicas is None else replicas
        )
        step.act(ScaleToZero(workload.kind, workload.name))
        stopping.append(named(workload))
    if stopping:
        step.restart_clock()
        step.status.message = f"stopping {', '.join(stopping)} for consistent snapshots"
        return False
    if step.seen.workload_pods:
        if step.waited() > step.timeouts.snapshot:
            names = ", ".join(named(w) for w in step.status.workloads)
            raise Abort(
                f"pods of {names} still present {step.timeouts.snapshot.total_seconds():.0f}s "
                "after stopping them for the snapshots"
            )
        step.out.wait = Wait.POLL
        return False
    return True


def restart(step: Step) -> str:
    """Scale the workloads stopped for the snapshots back (once each, in the system's
    order); says so for the message."""
    done = []
    for workload in step.status.workloads:
        replicas = workload.stopped_replicas
        if not replicas:
            continue
        step.act(ScaleBack(workload.kind, workload.name, replicas))
        workload.stopped_replicas = 0  # scaled back: never again
        done.append(f"{named(workload)} scaled back to {replicas} replicas")
    return "".join(f"; {x}" for x in done)
