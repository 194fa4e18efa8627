"""The pre-update backup of a run: which claims (decided in Pending, before anything
changes: ``core/claims.py``), the workloads stopped for them when ``backup.consistency`` is
``Stopped`` and started again once they are ready, and one VolumeSnapshot per claim.
Pure: called by :func:`patchwarden.core.run.advance`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from patchwarden.api.run import Phase, RunWorkload, SnapshotRecord
from patchwarden.api.system import Consistency, ManagedSystemSpec
from patchwarden.core import builders, claims
from patchwarden.core.hooks import hook_stage, run_hooks
from patchwarden.core.step import (
    Abort,
    CreateSnapshot,
    Emit,
    ScaleBack,
    ScaleToZero,
    Step,
    Unchanged,
    Wait,
    named,
)

BACKUP_SKIPPED = "no VolumeSnapshotClass and backup.required is false"


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


def missing_workloads(step: Step) -> list[str]:
    """The run's workloads this step found absent (``Kind name`` each)."""
    return [named(w) for w, body in step.workloads() if body is None]


def snapshotting(step: Step) -> None:
    """The pre-update snapshots: the ``pre`` hooks first, the workload stopped for them
    (``Stopped``), one per claim of ``status.claims``, all ready within the timeout."""
    _, spec = step.system()
    status, seen = step.status, step.seen
    if spec.updates.hooks and spec.updates.hooks.pre and not status.snapshots:
        _found(step)
        if hook_stage(status, spec, seen.workloads) == "pre" and not run_hooks(step, spec, "pre"):
            return  # the pre-update hooks first (e.g. a database flushed before its snapshot)
    if not status.snapshots and seen.snapshot_class is None and not spec.backup.required:
        # A snapshot without a class is never made ready by a real cluster: take none.
        status.backup_skipped = BACKUP_SKIPPED
        step.act(Emit("Warning", "BackupSkipped", f"{BACKUP_SKIPPED}; the update runs anyway"))
        step.enter(Phase.RECORDING, f"no snapshots taken: {BACKUP_SKIPPED}")
        return
    if not status.snapshots and not _recorded(step, spec):
        return  # its pods are still stopping
    if spec.backup.required and status.snapshots and seen.snapshot_class is None:
        raise Abort("no VolumeSnapshotClass to take the required backups; nothing was changed")
    _requested(step)
    if all(r.ready_to_use for r in status.snapshots):
        restarted = restart(step)
        step.enter(Phase.RECORDING, f"{len(status.snapshots)} snapshots ready{restarted}")
        return
    if step.waited() > step.timeouts.snapshot:
        waiting = [r.snapshot for r in status.snapshots if not r.ready_to_use]
        raise Abort(
            f"snapshots not ready within {step.timeouts.snapshot.total_seconds():.0f}s: "
            f"{', '.join(waiting)}; the workload was not touched"
        )
    step.out.wait = Wait.WATCHED


def _found(step: Step) -> None:
    missing = missing_workloads(step)
    if missing:
        raise Abort(f"{', '.join(missing)} not found; nothing was changed")


def _recorded(step: Step, spec: ManagedSystemSpec) -> bool:
    """Record a snapshot per claim (with the claim's spec, what a restore recreates), once
    the workloads are at rest if they must be; False while their pods are still stopping."""
    status, seen = step.status, step.seen
    _found(step)
    if status.claims is None:  # started by an older operator: decided now
        missing = [
            f"{w.kind} {w.name}" for w in spec.workload_list() if not seen.workloads.get(w.name)
        ]
        if missing:
            raise Abort(f"{', '.join(missing)} not found; nothing was changed")
        decide_claims(step, spec, [seen.workloads[w.name] or {} for w in spec.workload_list()])
    if spec.backup.consistency == Consistency.STOPPED and not _stopped(step):
        return False
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
    return True


def _requested(step: Step) -> None:
    """Ask for each recorded snapshot not yet asked for; note which are ready."""
    seen = step.seen
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
            continue
        if record.snapshot not in seen.snapshots:
            continue  # created in this very step: nothing to read yet
        existing = seen.snapshots[record.snapshot]
        if existing is None:
            raise Abort(f"VolumeSnapshot {record.snapshot} disappeared before it was ready")
        record.ready_to_use = bool((existing.get("status") or {}).get("readyToUse"))


def _stopped(step: Step) -> bool:
    """Whether the workloads are stopped for consistent snapshots (stopping them first, all
    at once)."""
    stopping = []
    for workload, body in step.workloads():
        if workload.stopped_replicas is not None:
            continue
        assert body is not None  # _found
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
