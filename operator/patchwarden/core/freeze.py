"""The workloads quiesced around the pre-update snapshots (``backup.freeze``): each freeze
command in order, then the snapshots are asked for, and once the storage has cut them
(or anything failed meanwhile) each thaw command whose freeze was attempted, in the
reverse order. The thaw always runs; the time frozen is recorded and bounded by
``backup.maxFreeze``. Pure: called by ``core/backup.py``; the runs controller runs the
command :func:`command` names (like an ``exec`` hook) and the step reads its result.
"""

from __future__ import annotations

from collections.abc import Sequence

from patchwarden.api.common import parse_duration
from patchwarden.api.run import FreezeRecord, HookRecord, Phase, UpdateRunStatus
from patchwarden.api.system import ExecHook, FreezeHook, Hook, ManagedSystemSpec
from patchwarden.core.hooks import (
    HOOK_FAILED,
    HOOK_OUTPUT_KEPT,
    HOOK_RUNNING,
    HOOK_SUCCEEDED,
    tail,
)
from patchwarden.core.step import Emit, FreezeEnded, Step, Wait
from patchwarden.core.times import parse_time, utc_text

FREEZE, THAW = "freeze", "thaw"


def command(status: UpdateRunStatus, spec: ManagedSystemSpec | None) -> Hook | None:
    """The freeze or thaw command a step in this status runs (an ``exec`` hook named
    ``freeze-<name>`` or ``thaw-<name>``), if any: the next freeze once the snapshots are
    recorded and before they are asked for, the next thaw once thawing."""
    if spec is None or not spec.backup.freeze or status.phase != Phase.SNAPSHOTTING:
        return None
    found = _next(status, spec.backup.freeze)
    if found is None:
        return None
    stage, hook = found
    run = hook.freeze if stage == FREEZE else hook.thaw
    exec_ = ExecHook.model_construct(container=hook.container, workload=hook.workload, command=run)
    return Hook.model_construct(
        name=f"{stage}-{hook.name}", exec_=exec_, job=None, timeout=hook.timeout
    )


def _next(status: UpdateRunStatus, hooks: Sequence[FreezeHook]) -> tuple[str, FreezeHook] | None:
    record = status.freeze
    if record is not None and record.thawing:
        attempted = {r.name for r in record.hooks if r.stage == FREEZE}
        thawed = {r.name for r in record.hooks if r.stage == THAW and r.state != HOOK_RUNNING}
        for hook in reversed(hooks):
            if hook.name in attempted and hook.name not in thawed:
                return THAW, hook
        return None
    if not status.snapshots or any(r.created for r in status.snapshots):
        return None  # not yet recorded, or asked for already: nothing to freeze now
    if status.group_snapshot is not None and status.group_snapshot.created:
        return None
    done = {
        r.name
        for r in (record.hooks if record else [])
        if r.stage == FREEZE and r.state != HOOK_RUNNING
    }
    for hook in hooks:
        if hook.name not in done:
            return FREEZE, hook
    return None


def frozen(step: Step, spec: ManagedSystemSpec) -> bool:
    """Run the freeze commands (one a step); True once all succeeded and the snapshots may
    be asked for. A failed freeze starts the thaw (:func:`thawed` then ends the run)."""
    hooks = spec.backup.freeze
    if not hooks:
        return True
    record = step.status.freeze
    if record is None:
        record = step.status.freeze = FreezeRecord(start_time=utc_text(step.now))
    if record.thawing:
        return False
    found = _next(step.status, hooks)
    if found is not None:
        _, hook = found
        if not _ran(step, record, FREEZE, hook):
            return False
        last = record.hooks[-1]
        if last.state == HOOK_FAILED:
            give_up(step, f"freeze hook {hook.name} failed: {tail(last.output, 2)}")
            return False
        if _next(step.status, hooks) is not None:
            return False  # the next freeze command, at the next step
    if _over(step, spec):  # slow freeze commands: no snapshot is asked for any more
        give_up(step, _too_long(spec))
        return False
    return True


def give_up(step: Step, why: str) -> None:
    """Something failed while the workloads are (or may be) frozen: thaw them first; the
    run ends once they are (:func:`thawed`)."""
    record = step.status.freeze
    if record is None:
        return
    record.thawing = True
    if record.failure is None:
        record.failure = why[:1024]
    step.status.message = f"{why}; thawing the workloads first"
    step.out.wait = Wait.NOW


def cut(step: Step, spec: ManagedSystemSpec, taken: bool) -> None:
    """The snapshots are asked for while frozen: thaw once the storage has ``taken`` them,
    or give up after ``backup.maxFreeze``."""
    record = step.status.freeze
    if record is None or record.thawing:
        return
    if taken:
        record.thawing = True
        step.out.wait = Wait.NOW
        return
    if _over(step, spec):
        give_up(step, _too_long(spec))


def _over(step: Step, spec: ManagedSystemSpec) -> bool:
    """Whether the workloads have been frozen longer than ``backup.maxFreeze``."""
    record = step.status.freeze
    limit = parse_duration(spec.backup.max_freeze)
    return bool(record and record.start_time and step.now - parse_time(record.start_time) > limit)


def _too_long(spec: ManagedSystemSpec) -> str:
    return (
        f"the snapshots were not taken within backup.maxFreeze ({spec.backup.max_freeze})"
        "; nothing was changed"
    )


def thawed(step: Step, spec: ManagedSystemSpec) -> bool:
    """Run the thaw commands (one a step); True once every one whose freeze was attempted
    has ended. Then the time frozen is recorded."""
    record = step.status.freeze
    if record is None or not record.thawing:
        return record is None or record.end_time is not None
    if record.end_time is not None:
        return True
    found = _next(step.status, spec.backup.freeze)
    if found is not None:
        _, hook = found
        if not _ran(step, record, THAW, hook) or _next(step.status, spec.backup.freeze):
            return False  # more to thaw, at the next steps
    record.end_time = utc_text(step.now)
    if record.start_time:
        seconds = (step.now - parse_time(record.start_time)).total_seconds()
        record.frozen_seconds = round(seconds, 3)
        step.act(FreezeEnded(seconds))
    failed = [r.name for r in record.hooks if r.stage == THAW and r.state == HOOK_FAILED]
    if failed:
        step.act(Emit("Warning", "ThawFailed", f"thaw hooks failed: {', '.join(failed)}"))
    return True


def thaw_failed(status: UpdateRunStatus) -> list[str]:
    record = status.freeze
    if record is None:
        return []
    return [r.name for r in record.hooks if r.stage == THAW and r.state == HOOK_FAILED]


def _ran(step: Step, record: FreezeRecord, stage: str, hook: FreezeHook) -> bool:
    """Record the command's result once the controller ran it (True); False: it runs at
    the next step (its observation runs it)."""
    name = f"{stage}-{hook.name}"
    entry = next((r for r in record.hooks if r.stage == stage and r.name == hook.name), None)
    if entry is None:
        entry = HookRecord(
            name=hook.name, stage=stage, state=HOOK_RUNNING, start_time=utc_text(step.now)
        )
        record.hooks.append(entry)
    result = step.seen.hook_result
    if result is None or result.name != name:
        step.out.wait = Wait.NOW
        return False
    entry.state = HOOK_SUCCEEDED if result.ok else HOOK_FAILED
    entry.completion_time = utc_text(step.now)
    entry.output = result.output[-HOOK_OUTPUT_KEPT:] if result.output else None
    step.out.wait = Wait.NOW
    return True
