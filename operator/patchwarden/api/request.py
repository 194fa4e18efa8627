"""UpdateRequest: the customer's instruction, e.g. a help-desk ticket."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, Field, StrictInt

from patchwarden.api.common import (
    Condition,
    LocalObjectReference,
    Model,
    UpdateClass,
    conditions_field,
)
from patchwarden.api.system import WindowRef


class UpdateRequestSpec(Model):
    """Asks for an update of one system in its next usable maintenance window."""

    system_ref: LocalObjectReference
    """The ManagedSystem, in the same namespace as this request."""
    classes: list[UpdateClass] = Field(
        default_factory=lambda: [UpdateClass.SECURITY],
        min_length=1,
        max_length=2,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    ticket: str = Field(min_length=1, max_length=128)
    """The help-desk reference this request comes from."""
    not_before: AwareDatetime | None = None
    """No run starts before this instant."""
    reason: str | None = Field(default=None, max_length=1024)
    retries: StrictInt = Field(default=1, ge=0, le=5)
    """How often an update run of this request that rolled back is tried again, each in
    the next usable window after it; then the request ends RolledBack."""


class RequestState(StrEnum):
    PENDING = "Pending"
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    COMPLETED = "Completed"
    """Written by earlier versions for any ended run; no longer written."""


SERVED = frozenset(
    {
        RequestState.RUNNING,
        RequestState.SUCCEEDED,
        RequestState.ROLLED_BACK,
        RequestState.FAILED,
        RequestState.COMPLETED,
    }
)
"""States of a request a run has served (or serves)."""


class UpdateRequestStatus(Model):
    observed_generation: int | None = None
    conditions: list[Condition] = conditions_field()
    state: RequestState | None = None
    message: str | None = None
    """Why the request was accepted or rejected, for the customer to read."""
    scheduled_window: WindowRef | None = None
    run_ref: LocalObjectReference | None = None
    """The newest run started for this request."""
    attempts: int | None = None
    """Runs started for this request so far."""


class UpdateRequest(Model):
    api_version: Literal["patchwarden.io/v1alpha1"] = "patchwarden.io/v1alpha1"
    kind: Literal["UpdateRequest"] = "UpdateRequest"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: UpdateRequestSpec
    status: UpdateRequestStatus | None = None
