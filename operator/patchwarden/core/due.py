"""What a due start installs, or why its window is skipped: the rules that follow the start
decision (``core/scheduler.py: decide_start``), in one place.

A start that is due gets its targets: each component's newest acceptable release of the
start's classes that the rollout's waves let through. A provider's own run of a system
whose customer approves updates installs what the approved proposal names and nothing
newer (each still acceptable); without an approved proposal the window is skipped
(``NotApproved``). A run with nothing to install is not started (``NothingToInstall``: no
snapshot, no run), unless the system's update Job runs in every window
(``updates.runJob: EveryWindow``). Pure: the systems controller applies the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from patchwarden.api.run import Target, Trigger
from patchwarden.api.system import ManagedSystemSpec, RunJob
from patchwarden.core.approval import approved_targets, why_skipped
from patchwarden.core.releases import Known, State, targets
from patchwarden.core.scheduler import Start

NOT_APPROVED = "NotApproved"
NOTHING_TO_INSTALL = "NothingToInstall"


@dataclass(frozen=True)
class Due:
    """A due start and what it installs; or, with ``skipped``, why it does not start."""

    start: Start
    targets: list[Target] = field(default_factory=list)
    skipped: str | None = None
    """``NotApproved`` or ``NothingToInstall``: the window passes without a run."""
    why: str | None = None
    """What the skip says (for ``NotApproved``: which approval is missing)."""


def due_run(
    start: Start,
    spec: ManagedSystemSpec,
    components: Sequence[State],
    released: Callable[[Known], bool] | None = None,
    proposal: Mapping[str, Any] | None = None,
    approval_needed: bool = False,
) -> Due:
    """What ``start`` installs, or why it is skipped (see the module's rules)."""
    job = bool(spec.updates.template)
    dropped: list[str] = []
    if start.trigger != Trigger.REQUEST and approval_needed:
        answer = approved_targets(
            proposal, start.occurrence.start, components, start.classes, released
        )
        if answer is None:
            why = why_skipped(proposal, start.occurrence.start)
            return Due(start, skipped=NOT_APPROVED, why=why)
        chosen, dropped = answer  # what was approved and is still acceptable, nothing newer
    else:
        chosen = targets(components, start.classes, job, released)
    if not chosen and not (job and spec.updates.run_job == RunJob.EVERY_WINDOW):
        return Due(start, skipped=NOTHING_TO_INSTALL, why="; ".join(dropped) or None)
    return Due(start, chosen)
