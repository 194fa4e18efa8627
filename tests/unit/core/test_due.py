"""What a due start installs, or why its window passes without a run (core/due.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from patchwarden.api.run import Trigger
from patchwarden.core.approval import APPROVED
from patchwarden.core.due import NOT_APPROVED, NOTHING_TO_INSTALL, due_run
from patchwarden.core.releases import states
from patchwarden.core.scheduler import Start
from patchwarden.core.times import utc_text
from patchwarden.core.windows import Occurrence
from tests.unit.core.test_releases import CATALOG, NOW, _release, catalogs, system, workload

OCC = Occurrence(NOW, NOW + timedelta(hours=3), "w", NOW + timedelta(hours=2))
SCHEDULED = Start(Trigger.SCHEDULE, OCC, "app-1", classes=("security", "feature"))
REQUESTED = Start(Trigger.REQUEST, OCC, "app-1", request="r", classes=("security",))
JOB = {"template": {"spec": {"containers": [{"name": "u", "image": "u"}]}}}
APPROVAL = {"approval": {"required": True}}


def approved_proposal(to: str) -> dict[str, Any]:
    """The proposal for OCC, approved, naming postgres 16.3→``to``."""
    return {
        "start": utc_text(OCC.start),
        "state": APPROVED,
        "targets": [{"component": "postgres", "from": "16.3", "to": to}],
    }


def installs(answer: Any) -> list[tuple[str, str]]:
    return [(t.component, t.to_version) for t in answer.targets]


def test_a_due_start_installs_the_newest_release_the_waves_let_through() -> None:
    spec = system()
    found = states(spec, CATALOG, workload(), NOW)
    answer = due_run(SCHEDULED, spec, found)
    assert answer.skipped is None and answer.start is SCHEDULED
    assert installs(answer) == [("postgres", "16.5"), ("shop", "1.1.0")]
    held = due_run(SCHEDULED, spec, found, released=lambda k: k.version != "16.5")
    assert installs(held) == [("postgres", "16.4"), ("shop", "1.1.0")], "the newest let through"


def test_nothing_to_install_and_no_job_is_no_run() -> None:
    spec = system()
    current = states(spec, CATALOG, workload("reg.example/pg:16.5", "reg.example/shop:1.1.0"), NOW)
    answer = due_run(SCHEDULED, spec, current)
    assert (answer.skipped, answer.targets) == (NOTHING_TO_INSTALL, [])
    with_job = system(**JOB)
    assert due_run(SCHEDULED, with_job, current).skipped == NOTHING_TO_INSTALL, "no no-op Job"
    every = system(**JOB, runJob="EveryWindow")
    assert due_run(SCHEDULED, every, current).skipped is None, "asked to run in every window"
    assert due_run(REQUESTED, with_job, current).skipped == NOTHING_TO_INSTALL


def test_an_unapproved_provider_run_is_skipped_and_an_approved_one_installs_what_was_proposed() -> (
    None
):
    spec = system(**APPROVAL)
    found = states(spec, CATALOG, workload(), NOW)
    answer = due_run(SCHEDULED, spec, found, approval_needed=True)
    assert answer.skipped == NOT_APPROVED
    assert answer.why == "no approved proposal for this window"
    proposal = approved_proposal("16.5")
    approved = due_run(SCHEDULED, spec, found, proposal=proposal, approval_needed=True)
    assert approved.skipped is None and installs(approved) == [("postgres", "16.5")]
    # The customer's own request needs no proposal.
    assert due_run(REQUESTED, spec, found, approval_needed=True).skipped is None


def test_an_approved_release_is_installed_when_a_newer_one_appeared_before_the_window() -> None:
    """Issue 33, 1.1: the proposal named 16.4; 16.5 appeared since. The run installs 16.4
    (what was approved), not nothing: 16.5 waits for the next proposal."""
    spec = system(**APPROVAL)
    found = states(spec, CATALOG, workload(), NOW)
    proposal = approved_proposal("16.4")
    answer = due_run(SCHEDULED, spec, found, proposal=proposal, approval_needed=True)
    assert answer.skipped is None and installs(answer) == [("postgres", "16.4")]
    assert answer.targets[0].advisories == ["CVE-2024-10979"]
    # Halted by the waves since the approval: dropped, and the skip says why.
    halted = due_run(
        SCHEDULED,
        spec,
        found,
        released=lambda k: k.version != "16.4",
        proposal=proposal,
        approval_needed=True,
    )
    assert halted.skipped == NOTHING_TO_INSTALL
    assert halted.why == "the approved postgres 16.4 is held back by the rollout's waves"


def test_an_approved_release_past_its_end_of_life_is_not_installed() -> None:
    ended = catalogs(
        _release("16.3", ["security"]),
        _release("16.4", ["security"], endOfLife="2026-06-30"),
        shop=[_release("1.0.0", ["feature"], image="reg.example/shop:1.0.0")],
    )
    spec = system(**APPROVAL)
    found = states(spec, ended, workload(), NOW)
    proposal = approved_proposal("16.4")
    answer = due_run(SCHEDULED, spec, found, proposal=proposal, approval_needed=True)
    assert answer.skipped == NOTHING_TO_INSTALL and answer.why is not None
    assert answer.why.startswith("the approved postgres 16.3→16.4 is no longer acceptable")
