"""The workloads frozen around the snapshots (core/freeze.py): the freeze commands in order,
the thaw in reverse order whenever a freeze was attempted, bounded by backup.maxFreeze."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from patchwarden.api.run import Phase
from patchwarden.api.system import Backup
from patchwarden.core import run as m
from patchwarden.core.run import HookResult, Wait
from tests.unit.runs import (
    CLAIM,
    NOW,
    RUN_SPEC,
    TIMEOUTS,
    condition,
    observed,
    status,
    step,
    system,
    workload,
)

HOOKS = [
    {"name": "db", "container": "a", "freeze": ["freeze-db"], "thaw": ["thaw-db"]},
    {"name": "app", "container": "a", "freeze": ["freeze-app"], "thaw": ["thaw-app"]},
]
FROZEN = system(volumes=["data"], backup={"freeze": HOOKS, "maxFreeze": "20s"})
SEEN: dict[str, Any] = {
    "system": FROZEN,
    "workload": workload(),
    "claims": {"data": CLAIM},
    "snapshot_class": "std",
}


def ran(out: m.Transition, ok: bool = True, output: str = "") -> HookResult | None:
    """What the controller answers for the command the next step names (it runs it)."""
    hook = m.freeze_command(out.status, m.spec_or_none(FROZEN))
    return None if hook is None else HookResult(hook.name, ok, output)


def go(out: m.Transition, ok: bool = True, output: str = "", **seen: Any) -> m.Transition:
    return step(out.status, **{**SEEN, "hook_result": ran(out, ok, output), **seen})


def test_freeze_in_order_snapshot_then_thaw_in_reverse_order() -> None:
    out = step(status(Phase.SNAPSHOTTING, claims=["data"]), **SEEN)
    assert [r.claim for r in out.status.snapshots] == ["data"] and not out.actions
    assert (m.freeze_command(out.status, m.spec_or_none(FROZEN)) or HOOKS).name == "freeze-db"
    out = go(out)
    requested = go(out)  # the last freeze ended: the snapshot is asked for in the same step
    assert [(h.stage, h.name) for h in requested.status.freeze.hooks] == [  # type: ignore[union-attr]
        ("freeze", "db"),
        ("freeze", "app"),
    ]
    assert [type(a).__name__ for a in requested.actions] == ["CreateSnapshot"]
    assert ran(requested) is None, "nothing runs while the snapshot is being taken"
    taken = {"run-data": {"status": {"creationTime": "2027-02-10T12:00:05Z"}}}
    cut = step(requested.status, **SEEN, snapshots=taken)
    assert cut.status.freeze is not None and cut.status.freeze.thawing
    assert (ran(cut) or HookResult("", True, "")).name == "thaw-app", "the reverse order"
    later = NOW + timedelta(seconds=4)
    out = step(cut.status, later, **SEEN, snapshots=taken, hook_result=ran(cut))
    out = step(out.status, later, **SEEN, snapshots=taken, hook_result=ran(out))
    freeze = out.status.freeze
    assert freeze is not None and freeze.frozen_seconds == 4.0
    assert [(h.stage, h.name) for h in freeze.hooks][2:] == [("thaw", "app"), ("thaw", "db")]
    assert [type(a).__name__ for a in out.actions] == ["FreezeEnded"]
    ready = {"run-data": {"status": {"creationTime": "x", "readyToUse": True}}}
    done = step(out.status, later, **SEEN, snapshots=ready)
    assert done.status.phase == Phase.RECORDING
    assert "frozen for 4.0s" in (done.status.message or "")


def test_a_failed_freeze_thaws_every_freeze_attempted_and_the_run_changes_nothing() -> None:
    out = step(status(Phase.SNAPSHOTTING, claims=["data"]), **SEEN)
    out = go(out)
    failed = go(out, ok=False, output="locked\nexited with code 1 in pod p")
    assert failed.status.freeze is not None and failed.status.freeze.thawing
    thaws = []
    while (result := ran(failed)) is not None:
        thaws.append(result.name)
        failed = go(failed)
    assert thaws == ["thaw-app", "thaw-db"], "app's freeze was attempted: it is thawed too"
    assert failed.status.phase == Phase.FAILED
    assert failed.status.message == ("freeze hook app failed: locked; exited with code 1 in pod p")
    assert condition(failed, "NeedsAttention") is None
    assert not any(isinstance(a, m.CreateSnapshot) for a in failed.actions)


def test_snapshots_not_taken_within_max_freeze_are_given_up_and_thawed() -> None:
    out = step(status(Phase.SNAPSHOTTING, claims=["data"]), **SEEN)
    out = go(go(out))  # both frozen, the snapshot asked for
    pending = {"run-data": {"status": {}}}
    waiting = step(out.status, NOW + timedelta(seconds=10), **SEEN, snapshots=pending)
    assert waiting.wait == Wait.POLL and not waiting.status.freeze.thawing  # type: ignore[union-attr]
    late = step(out.status, NOW + timedelta(seconds=21), **SEEN, snapshots=pending)
    assert late.status.freeze is not None and late.status.freeze.thawing
    assert "not taken within backup.maxFreeze (20s)" in (late.status.message or "")


def test_a_failed_thaw_asks_for_a_person() -> None:
    out = step(status(Phase.SNAPSHOTTING, claims=["data"]), **SEEN)
    out = go(go(out))
    taken = {"run-data": {"status": {"creationTime": "x"}}}
    out = step(out.status, **SEEN, snapshots=taken)
    out = go(out, ok=False, output="thaw-app: no such file", snapshots=taken)
    out = go(out, snapshots=taken)
    assert out.status.phase == Phase.FAILED
    assert out.status.message == (
        "thaw hook app failed: the workloads may still be frozen; the update was not started"
    )
    assert condition(out, "NeedsAttention") == "True"


def test_a_run_deleted_while_frozen_thaws_before_it_is_cancelled() -> None:
    out = step(status(Phase.SNAPSHOTTING, claims=["data"]), **SEEN)
    out = go(out)  # db frozen
    deleting = m.Run.of(
        {
            "metadata": {
                "namespace": "ns",
                "name": "run",
                "uid": "u1",
                "generation": 1,
                "deletionTimestamp": "2027-02-10T12:00:00Z",
            },
            "spec": RUN_SPEC,
        }
    )
    first = m.advance(deleting, out.status, observed(**SEEN), NOW, TIMEOUTS)
    assert first.status.freeze is not None and first.status.freeze.thawing
    assert first.status.phase == Phase.SNAPSHOTTING, "not cancelled while frozen"
    thawed = m.advance(
        deleting,
        first.status,
        observed(**SEEN, hook_result=ran(first)),
        NOW,
        TIMEOUTS,
    )
    assert thawed.status.phase == Phase.CANCELLED, thawed.status.message
    assert [(h.stage, h.name) for h in thawed.status.freeze.hooks] == [  # type: ignore[union-attr]
        ("freeze", "db"),
        ("thaw", "db"),
    ]


def test_freeze_hooks_need_running_workloads() -> None:
    with pytest.raises(ValidationError, match="not with consistency Stopped"):
        Backup.model_validate({"consistency": "Stopped", "freeze": HOOKS})


def test_freeze_commands_slower_than_max_freeze_ask_for_no_snapshot() -> None:
    out = step(status(Phase.SNAPSHOTTING, claims=["data"]), **SEEN)
    out = go(out)  # db frozen at noon
    late = step(out.status, NOW + timedelta(seconds=25), **{**SEEN, "hook_result": ran(out)})
    assert not any(isinstance(a, m.CreateSnapshot) for a in late.actions)
    assert late.status.freeze is not None and late.status.freeze.thawing
    assert "backup.maxFreeze (20s)" in (late.status.message or "")
