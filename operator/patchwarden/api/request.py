"""UpdateRequest: the customer's instruction, e.g. a help-desk ticket."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, Field

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


class RequestState(StrEnum):
    PENDING = "Pending"
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    RUNNING = "Running"
    COMPLETED = "Completed"


class UpdateRequestStatus(Model):
    observed_generation: int | None = None
    conditions: list[Condition] = conditions_field()
    state: RequestState | None = None
    message: str | None = None
    """Why the request was accepted or rejected, for the customer to read."""
    scheduled_window: WindowRef | None = None
    run_ref: LocalObjectReference | None = None


class UpdateRequest(Model):
    api_version: Literal["patchwarden.io/v1alpha1"] = "patchwarden.io/v1alpha1"
    kind: Literal["UpdateRequest"] = "UpdateRequest"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: UpdateRequestSpec
    status: UpdateRequestStatus | None = None
