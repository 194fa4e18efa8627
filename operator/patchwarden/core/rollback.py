"""The rollback of a failed run, step by step (``RollbackStep``): scale down, keep each
claim as the update left it and restore it from its backup, restore the workload, verify.
Pure: called by :func:`patchwarden.core.run.advance`."""

from __future__ import annotations

from patchwarden.api.run import Phase, RollbackStep, SnapshotRecord
from patchwarden.core import builders
from patchwarden.core.objects import restored_workload, workload_ready
from patchwarden.core.step import (
    Abort,
    CreateClaim,
    CreateSnapshot,
    DeleteClaim,
    DeletePod,
    ReplaceWorkload,
    ScaleToZero,
    Step,
    Wait,
    end_failed,
    named,
)
from patchwarden.core.times import parse_time


def rolling_back(step: Step) -> None:
    """One step of the rollback of every workload of the run: all scaled down, every claim
    restored, every workload's spec restored (in the system's order), all verified."""
    status, seen, restore = step.status, step.seen, step.status.restore
    assert restore is not None and status.workloads, "entered only with the workloads recorded"
    limit = step.timeouts.rollback
    seconds = f"{limit.total_seconds():.0f}s"
    found = step.workloads()
    gone = [named(w) for w, body in found if body is None]
    if gone:
        raise Abort(f"{', '.join(gone)} disappeared during the rollback")
    match restore.step or RollbackStep.SCALE_DOWN:
        case RollbackStep.SCALE_DOWN:
            for workload, body in found:
                assert body is not None
                if body["spec"].get("replicas", 1) != 0:
                    step.act(ScaleToZero(workload.kind, workload.name))
                    step.restart_clock()
            if seen.workload_pods:
                if step.waited() > limit:
                    names = ", ".join(named(w) for w, _ in found)
                    raise Abort(f"pods of {names} still present {seconds} after scaling to zero")
                step.out.wait = Wait.POLL
                return
            # The update Job's pods, finished or not, keep the claims they mount in use:
            # the claims' protection would hold their deletion until the pods are gone.
            if seen.job_pods:
                for pod in seen.job_pods:
                    if not pod["metadata"].get("deletionTimestamp"):
                        meta = pod["metadata"]
                        step.act(DeletePod(meta["name"], meta.get("uid")))
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
            for workload, body in found:
                assert body is not None and workload.recorded is not None
                step.act(ReplaceWorkload(workload.kind, restored_workload(body, workload.recorded)))
            restore.step = RollbackStep.VERIFY
            step.restart_clock()
            step.out.wait = Wait.POLL
        case RollbackStep.VERIFY:
            waiting = [
                named(w)
                for w, body in found
                if body is None
                or w.recorded is None
                or not workload_ready(body)
                or body["spec"].get("replicas") != w.recorded.replicas
            ]
            if not waiting:
                _rolled_back(step)
                return
            if step.waited() > limit:
                raise Abort(f"{', '.join(waiting)} not ready {seconds} after the restore")
            step.out.wait = Wait.POLL


def _rolled_back(step: Step) -> None:
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
    several = len(status.workloads) > 1
    the = (
        f"the workloads ({', '.join(named(w) for w in status.workloads)})"
        if several
        else "the workload"
    )
    specs = "the workloads' specs" if several else "the workload's spec"
    expected = status.claims if status.claims is not None else [r.claim for r in status.snapshots]
    if restore.data is False:
        restored = f"restored {specs} and images only{took}"
        restored += " (rollback.restoreData: Never)"
        if expected:
            restored += f"; its claims {', '.join(expected)} keep what the update wrote"
        took = ""
    elif status.backup_skipped:
        its = "their" if several else "its"
        restored = f"restored {specs} only, not {its} data ({status.backup_skipped})"
    elif not expected:
        restored = f"restored {the} ({'they have' if several else 'it has'} no claims)"
    else:
        left = [x for x in expected if x not in restore.claims]
        if left:
            end_failed(
                step,
                f"{why}; the rollback restored {the} and {len(restore.claims)} of "
                f"{len(expected)} claims{took}, not {', '.join(left)} (no pre-update snapshot): "
                "they hold what the failed update wrote",
                needs_person=True,
            )
            return
        restored = f"restored {len(restore.claims)} claims and {the}{took}"
        took = ""
        kept = [r.snapshot for r in restore.failed_state]
        if kept:  # what was written between the backup and the rollback is not lost
            since = f" from {status.start_time}" if status.start_time else ""
            until = f" to {restore.start_time}" if restore.start_time else ""
            restored += (
                f"; what was written to them{since}{until} (the update included) is kept in "
                f"the failed-state snapshots {', '.join(kept)}"
            )
    step.end(Phase.ROLLED_BACK, f"{why}; {restored}{took}")


def _claims_restored(step: Step) -> bool:
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
        step.act(DeleteClaim(claim, existing["metadata"].get("uid")))
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


def _failed_state_kept(step: Step, claim: str) -> bool:
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
