"""``kubectl patchwarden``: what each command says, from the objects the operator wrote."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from patchwarden.cli.plugin import (
    PluginError,
    answer,
    describe,
    history_rows,
    restore_hint,
    snapshot_rows,
    why,
)

NOW = datetime(2026, 12, 11, 12, 0, tzinfo=UTC)


def system(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "nextcloud", "name": "files"},
        "spec": {"customer": "initech", "serviceModel": "SaaS", "updates": {}},
        "status": {
            "responsibility": {"planning": "Provider", "execution": "Provider"},
            "eligible": True,
            **status,
        },
    }


PROPOSAL = {
    "window": "patch-friday",
    "start": "2026-12-11T21:00:00Z",
    "approveBy": "2026-12-09T21:00:00Z",
    "state": "Pending",
    "targets": [{"component": "nextcloud", "from": "32.0.1", "to": "32.0.2"}],
    "message": "proposed: nextcloud 32.0.1→32.0.2 …",
}


def test_status_of_one_system_says_its_contract_window_and_what_it_will_install() -> None:
    lines = describe(
        system(
            nextWindow={
                "name": "patch-friday",
                "start": "2026-12-11T21:00:00Z",
                "end": "2026-12-12T01:00:00Z",
                "cutoff": "2026-12-11T23:30:00Z",
            },
            components=[
                {"name": "nextcloud", "inScope": True, "installed": "32.0.1", "feature": "32.0.2"},
                {"name": "ubuntu", "inScope": True, "installed": "24.04"},
            ],
            proposal=PROPOSAL,
        )
    )
    assert lines[0] == "nextcloud/files — customer initech, SaaS"
    assert "planned by Provider, executed by Provider" in lines[1]
    assert (
        "  next window: patch-friday 2026-12-11T21:00:00Z → 2026-12-12T01:00:00Z "
        "(no run starts after 2026-12-11T23:30:00Z)"
    ) in lines
    assert "  will install (newest acceptable): nextcloud 32.0.1→32.0.2" in lines
    assert any(line.startswith("  proposal (Pending)") for line in lines)
    never = describe(
        system(
            conditions=[
                {
                    "type": "Scheduled",
                    "status": "False",
                    "reason": "NoUsableWindow",
                    "message": "no maintenance window lies ahead",
                }
            ]
        )
    )
    assert "  next window: none — no maintenance window lies ahead" in never
    iaas = describe(system(eligible=False, eligibilityReason="IaaS: the customer updates"))
    assert "  not eligible: IaaS: the customer updates" in iaas


def test_history_lists_runs_newest_first_with_from_to_and_outcome() -> None:
    runs = [
        {
            "metadata": {"name": "files-1"},
            "spec": {
                "trigger": "Schedule",
                "targets": [{"component": "nc", "from": "1", "to": "2"}],
            },
            "status": {"phase": "RolledBack", "startTime": "2026-11-13T21:00:00Z", "message": "x"},
        },
        {
            "metadata": {"name": "files-2"},
            "spec": {"trigger": "Schedule"},
            "status": {
                "phase": "Succeeded",
                "startTime": "2026-12-11T21:00:00Z",
                "changes": [{"component": "ubuntu", "from": "24.04.1", "to": "24.04.2"}],
            },
        },
    ]
    assert [(r["run"], r["changes"], r["outcome"]) for r in history_rows(runs)] == [
        ("files-2", "ubuntu 24.04.1→24.04.2", "Succeeded"),
        ("files-1", "nc 1→2", "RolledBack"),
    ]


def test_why_names_the_skipped_window_or_the_last_run_and_what_holds_it() -> None:
    skipped = system(
        skippedWindow={
            "name": "patch-friday",
            "start": "2026-12-11T21:00:00Z",
            "reason": "the proposal was not approved by 2026-12-09T21:00:00Z",
        },
        conditions=[
            {"type": "UpToDate", "status": "False", "reason": "UpdatesPending", "message": "x 1→2"},
            {"type": "Scheduled", "status": "True", "reason": "WindowAhead", "message": "next"},
        ],
    )
    events = [
        {
            "lastTimestamp": "2026-12-11T21:00:01Z",
            "type": "Warning",
            "reason": "NotApproved",
            "message": "window patch-friday …",
        },
    ]
    lines = why(skipped, events)
    assert lines[0] == (
        "window patch-friday at 2026-12-11T21:00:00Z: no run started: the proposal was not "
        "approved by 2026-12-09T21:00:00Z"
    )
    assert "UpToDate=False (UpdatesPending): x 1→2" in lines
    assert not any(line.startswith("Scheduled") for line in lines), "a healthy condition"
    assert "  2026-12-11T21:00:01Z Warning NotApproved: window patch-friday …" in lines
    ran = system(
        lastRun={
            "name": "files-2",
            "result": "RolledBack",
            "completionTime": "2026-12-11T22:00:00Z",
            "message": "the update Job failed",
        }
    )
    assert why(ran, [])[0] == (
        "update run files-2 ended RolledBack at 2026-12-11T22:00:00Z: the update Job failed"
    )


def test_snapshots_say_which_are_failed_state_their_age_and_how_to_restore() -> None:
    snaps = [
        {
            "metadata": {
                "name": "files-2-data",
                "creationTimestamp": "2026-12-11T09:00:00Z",
                "labels": {"patchwarden.io/run": "files-2"},
            },
            "spec": {"source": {"persistentVolumeClaimName": "data"}},
            "status": {"readyToUse": True},
        },
        {
            "metadata": {
                "name": "files-2-data-failed",
                "creationTimestamp": "2026-12-11T11:30:00Z",
                "labels": {"patchwarden.io/run": "files-2", "patchwarden.io/state": "failed"},
            },
            "spec": {"source": {"persistentVolumeClaimName": "data"}},
            "status": {"readyToUse": False},
        },
    ]
    found = snapshot_rows(snaps, NOW)
    assert [(r["snapshot"], r["kind"], r["ready"], r["age"]) for r in found] == [
        ("files-2-data-failed", "failed-state", "false", "30m"),
        ("files-2-data", "pre-update", "true", "3h"),
    ]
    hint = restore_hint("nextcloud", found[1])
    assert "dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: " in hint
    assert "files-2-data}" in hint and "name: data-restored" in hint


def test_an_answer_is_in_the_callers_name_and_only_to_a_proposal_that_waits() -> None:
    pending = system(proposal=PROPOSAL)
    assert answer(pending, "jane", None, None) == {
        "patchwarden.io/approve": "2026-12-11T21:00:00Z",
        "patchwarden.io/approved-by": "jane",
    }
    assert answer(pending, "jane", None, "month-end closing") == {
        "patchwarden.io/reject": "2026-12-11T21:00:00Z",
        "patchwarden.io/rejected-by": "jane",
        "patchwarden.io/reject-reason": "month-end closing",
    }
    with pytest.raises(PluginError, match="not 2026-12-18T21:00:00Z"):
        answer(pending, "jane", "2026-12-18T21:00:00Z", None)
    with pytest.raises(PluginError, match="has no proposal"):
        answer(system(), "jane", None, None)
    expired = system(proposal={**PROPOSAL, "state": "Expired", "message": "not approved by …"})
    with pytest.raises(PluginError, match="proposal is Expired"):
        answer(expired, "jane", None, None)
