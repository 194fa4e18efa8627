"""The hooks of a run (docs/hooks.md): which one a step runs, its record, and what its
failure means: ``pre`` fails the run with nothing changed, ``post`` rolls it back. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from patchwarden.api.common import parse_duration
from patchwarden.api.run import HookRecord, Phase, UpdateRunStatus
from patchwarden.api.system import Hook, ManagedSystemSpec
from patchwarden.core import builders
from patchwarden.core.objects import job_message, job_result, not_ready, termination
from patchwarden.core.step import Abort, CreateJob, Emit, Step, StopJob, Unchanged, Wait
from patchwarden.core.times import parse_time, utc_text

HOOK_RUNNING, HOOK_SUCCEEDED, HOOK_FAILED = "Running", "Succeeded", "Failed"


HOOK_OUTPUT_KEPT = 1024
"""Characters of a hook's output kept in the run (its end: where errors are)."""


def hook_stage(
    status: UpdateRunStatus,
    spec: ManagedSystemSpec | None,
    workloads: Mapping[str, Mapping[str, Any] | None],
) -> str | None:
    """The hooks a step in this status runs: ``pre`` before the first snapshot (and before
    the workloads are stopped for them), ``post`` once every updated workload is ready (of
    ``workloads``, what the step read); None."""
    hooks = spec.updates.hooks if spec is not None else None
    if hooks is None:
        return None
    phase = status.phase or Phase.PENDING
    stopped = any(w.stopped_replicas is not None for w in status.workloads)
    if phase == Phase.SNAPSHOTTING and not status.snapshots and not stopped:
        return "pre" if next_hook(status, spec, "pre") is not None else None  # type: ignore[arg-type]
    if phase == Phase.VERIFYING and status.workloads and not not_ready(status.workloads, workloads):
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


def run_hooks(step: Step, spec: ManagedSystemSpec, stage: str) -> bool:
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
    return _job_hook(step, spec, hook, record)


def _job_hook(step: Step, spec: ManagedSystemSpec, hook: Hook, record: HookRecord) -> bool:
    """A ``job`` hook: its Job created, then awaited (deleted, or over its timeout, it
    fails); its pods' termination message is its output."""
    stage = record.stage
    fail = Unchanged if stage == "pre" else Abort
    what = f"{stage}-update hook {hook.name}"
    job_name = builders.hook_job_name(step.run.name, stage, hook.name)
    if record.job is None:
        record.job = job_name
        deadline = int(parse_duration(hook.timeout).total_seconds())
        system, _ = step.system()
        body = builders.hook_job(
            run=step.run.name,
            run_uid=step.run.uid,
            system=system,
            spec=spec,
            hook=hook,
            stage=stage,
            deadline_seconds=deadline,
        )
        step.act(CreateJob(body))
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
    return tail(output)


def tail(output: str | None, count: int = 1) -> str:
    """The last ``count`` non-empty lines of a command's output (``; `` between them)."""
    lines = [x for x in (output or "").strip().splitlines() if x.strip()]
    return "; ".join(x[-200:] for x in lines[-count:]) if lines else "no output"


def _unchanged(stage: str) -> str:
    return "; nothing was changed" if stage == "pre" else ""
