"""The API of patchwarden.io/v1alpha1: pydantic models, the source of the CRDs."""

from patchwarden.api.common import (
    API_VERSION,
    GROUP,
    VERSION,
    Condition,
    Package,
    Party,
    ServiceModel,
    UpdateClass,
    format_duration,
    parse_duration,
)
from patchwarden.api.request import UpdateRequest, UpdateRequestSpec
from patchwarden.api.run import Phase, Trigger, UpdateRun, UpdateRunSpec
from patchwarden.api.system import ManagedSystem, ManagedSystemSpec

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Condition",
    "ManagedSystem",
    "ManagedSystemSpec",
    "Package",
    "Party",
    "Phase",
    "ServiceModel",
    "Trigger",
    "UpdateClass",
    "UpdateRequest",
    "UpdateRequestSpec",
    "UpdateRun",
    "UpdateRunSpec",
    "format_duration",
    "parse_duration",
]
