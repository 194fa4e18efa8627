"""The hooks of a run (core/hooks.py): exec and job, pre and post."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from patchwarden.api.run import Phase
from patchwarden.core import run as m
from patchwarden.core.run import Wait
from tests.unit.runs import (
    CLAIM,
    FAILED_JOB,
    NOW,
    RECORDED,
    condition,
    ended_pod,
    kinds,
    status,
    step,
    system,
    workload,
)


def hooked(
    pre: list[dict[str, Any]] | None = None, post: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    body = system()
    body["spec"]["updates"]["hooks"] = {"pre": pre or [], "post": post or []}
    return body


FLUSH = {"name": "flush", "exec": {"container": "a", "command": ["psql", "-c", "CHECKPOINT"]}}


SMOKE = {
    "name": "smoke",
    "job": {"template": {"spec": {"containers": [{"name": "t", "image": "curl"}]}}},
    "timeout": "2m",
}


def test_a_pre_hook_runs_before_the_snapshots_and_its_output_is_kept() -> None:
    st = status(Phase.SNAPSHOTTING)
    out = step(
        st,
        system=hooked(pre=[FLUSH]),
        workload=workload(),
        claims={"data": CLAIM},
        snapshot_class="csi",
        hook_result=m.HookResult("flush", True, "CHECKPOINT\n"),
    )
    (record,) = out.status.hooks
    assert (record.name, record.stage, record.state, record.output) == (
        "flush",
        "pre",
        "Succeeded",
        "CHECKPOINT\n",
    )
    assert not out.status.snapshots and out.wait == Wait.NOW, "the snapshots at the next step"
    assert m.hook_stage(out.status, m.spec_or_none(hooked(pre=[FLUSH])), workload()) is None
    again = step(
        out.status,
        system=hooked(pre=[FLUSH]),
        workload=workload(),
        claims={"data": CLAIM},
        snapshot_class="csi",
    )
    assert again.status.phase == Phase.RECORDING, "then the snapshots (none: no claims here)"
    assert len(again.status.hooks) == 1, "the hook is not run again"


def test_a_failed_pre_hook_ends_the_run_with_nothing_changed() -> None:
    out = step(
        status(Phase.SNAPSHOTTING),
        system=hooked(pre=[FLUSH]),
        workload=workload(),
        hook_result=m.HookResult(
            "flush", False, "ERROR: permission denied\nexited with code 1 in pod p"
        ),
    )
    assert out.status.phase == Phase.FAILED
    assert (
        out.status.message
        == "pre-update hook flush failed: exited with code 1 in pod p; nothing was changed"
    )
    assert condition(out, "NeedsAttention") is None and out.status.hooks[0].state == "Failed"


def test_a_post_hook_job_runs_once_the_workload_is_ready_and_a_failure_rolls_back() -> None:
    body = hooked(post=[SMOKE])
    st = status(Phase.VERIFYING, recorded=RECORDED)
    out = step(st, system=body, workload=workload())
    (create,) = [a for a in out.actions if isinstance(a, m.CreateJob)]
    assert create.body["metadata"]["name"] == "run-post-smoke"
    assert (
        create.body["spec"]["template"]["metadata"]["labels"]["patchwarden.io/hook"] == "post-smoke"
    )
    assert out.status.hooks[0].job == "run-post-smoke" and out.wait == Wait.WATCHED
    running = step(out.status, system=body, workload=workload(), hook_job={"status": {}})
    assert running.status.phase == Phase.VERIFYING and running.wait == Wait.WATCHED
    pod = ended_pod("t", 22, "curl: (22) 503")
    ended = step(
        running.status, system=body, workload=workload(), hook_job=FAILED_JOB, hook_pods=(pod,)
    )
    assert ended.status.phase == Phase.ROLLING_BACK
    assert ended.status.failure == "post-update hook smoke failed: curl: (22) 503"
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    ok = step(running.status, system=body, workload=workload(), hook_job=done)
    assert ok.status.hooks[0].state == "Succeeded" and ok.status.phase == Phase.VERIFYING
    assert step(ok.status, system=body, workload=workload()).status.phase == Phase.SUCCEEDED


def test_a_hook_job_that_does_not_end_in_time_is_stopped_and_fails() -> None:
    body = hooked(post=[SMOKE])
    out = step(status(Phase.VERIFYING, recorded=RECORDED), system=body, workload=workload())
    late = step(
        out.status,
        now=NOW + timedelta(minutes=3),
        system=body,
        workload=workload(),
        hook_job={"status": {}},
    )
    assert late.status.phase == Phase.ROLLING_BACK and "did not end within 2m" in (
        late.status.failure or ""
    )
    assert "StopJob" in kinds(late)
