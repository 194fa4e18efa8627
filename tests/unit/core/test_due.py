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
from tests.unit.core.test_releases import CATALOG, NOW, system, workload

OCC = Occurrence(NOW, NOW + timedelta(hours=3), "w", NOW + timedelta(hours=2))
SCHEDULED = Start(Trigger.SCHEDULE, OCC, "app-1", classes=("security", "feature"))
REQUESTED = Start(Trigger.REQUEST, OCC, "app-1", request="r", classes=("security",))
JOB = {"template": {"spec": {"containers": [{"name": "u", "image": "u"}]}}}
APPROVAL = {"approval": {"required": True}}


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
    assert due_run(SCHEDULED, with_job, current).skipped is None, "the Job runs anyway"


def test_an_unapproved_provider_run_is_skipped_and_an_approved_one_installs_what_was_proposed() -> (
    None
):
    spec = system(**APPROVAL)
    found = states(spec, CATALOG, workload(), NOW)
    answer = due_run(SCHEDULED, spec, found, approval_needed=True)
    assert answer.skipped == NOT_APPROVED
    assert answer.why == "no approved proposal for this window"
    proposal = {
        "start": utc_text(OCC.start),
        "state": APPROVED,
        "targets": [{"component": "postgres", "to": "16.5"}],
    }
    approved = due_run(SCHEDULED, spec, found, proposal=proposal, approval_needed=True)
    assert approved.skipped is None and installs(approved) == [("postgres", "16.5")]
    # The customer's own request needs no proposal.
    assert due_run(REQUESTED, spec, found, approval_needed=True).skipped is None
