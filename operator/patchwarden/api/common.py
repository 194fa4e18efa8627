"""Types shared by the three resources of ``patchwarden.io/v1alpha1``.

The pydantic models in ``patchwarden.api`` are the single source of truth for
the CRDs (``make crds`` writes ``crds/`` from them). A model's docstring and
its fields' descriptions become the schema's descriptions, so they are written
for the user who reads ``kubectl explain``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

GROUP = "patchwarden.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Go-style durations as Kubernetes users write them: "90m", "1h30m", "45s".
DURATION_PATTERN = r"^([0-9]+(h|m|s))+$"
_DURATION_PART = re.compile(r"([0-9]+)(h|m|s)")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def parse_duration(text: str) -> timedelta:
    """``"1h30m"`` → 90 minutes. Raises ValueError naming the bad text."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as 90m, 1h30m or 45s")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The inverse of :func:`parse_duration` (whole seconds)."""
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in _UNIT_SECONDS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _positive_duration(text: str) -> str:
    if parse_duration(text) <= timedelta(0):
        raise ValueError(f"{text!r} must be longer than zero")
    return text


Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        max_length=32,
        examples=["4h", "1h30m"],
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self.matches('[1-9]')", "message": "must be longer than zero"}
            ]
        },
    ),
    AfterValidator(_positive_duration),
]


DurationOrZero = Annotated[
    str, Field(pattern=DURATION_PATTERN, max_length=32, examples=["2m", "0s"])
]
"""A duration that may be zero (``0s``: the step is skipped)."""


@dataclass(frozen=True)
class Rule:
    """A rule that spans fields, enforced twice from one definition.

    The API server enforces ``cel`` (an ``x-kubernetes-validations`` entry of
    the generated CRD); ``check`` enforces the same rule offline (``patchwarden
    plan``) and in the operator. ``field`` is the path, relative to the object
    that holds the rule, of the field to blame.
    """

    cel: str
    message: str
    field: str
    check: Callable[[Any], bool]


def _schema_extra(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    rules: tuple[Rule, ...] = getattr(cls, "rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [
            {"rule": r.cel, "message": r.message, "fieldPath": r.field} for r in rules
        ]


def describe_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    """``path.to.field[0]: what is wrong`` for each error, as a user reads it.

    A cross-field :class:`Rule` names its own field relative to the object
    that holds it; that field is appended to the path.
    """
    out = []
    for err in exc.errors():
        loc = prefix
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "rule":
            ctx = err.get("ctx") or {}
            loc, msg = (f"{loc}.{ctx['field']}" if loc else ctx["field"]), ctx["message"]
        out.append(f"{loc}: {msg}")
    return out


def unique(key: str, what: str) -> Callable[[list[Any]], list[Any]]:
    """A validator of a list whose items' ``key`` must differ (``what`` names them)."""

    def check(items: list[Any]) -> list[Any]:
        seen = [getattr(i, key) for i in items]
        dupes = sorted({v for v in seen if seen.count(v) > 1})
        if dupes:
            raise ValueError(f"{what} must be unique; repeated: {', '.join(dupes)}")
        return items

    return check


def map_by(key: str) -> dict[str, Any]:
    """The schema of a list keyed by ``key`` (the API server refuses a repeated key)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


class Model(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra=_schema_extra,
    )
    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in self.rules:
            if not rule.check(self):
                field = rule.field.lstrip(".")
                raise PydanticCustomError(
                    "rule", "{field}: {message}", {"field": field, "message": rule.message}
                )
        return self

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it (camelCase, unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def patch(self) -> dict[str, Any]:
        """The fields that were set, as a JSON merge patch (camelCase): one set to None
        removes what is stored."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


class ServiceModel(StrEnum):
    IAAS = "IaaS"
    PAAS = "PaaS"
    SAAS = "SaaS"


class Package(StrEnum):
    BASIC = "basic"
    ADVANCED = "advanced"


class UpdateClass(StrEnum):
    SECURITY = "security"
    FEATURE = "feature"


class Party(StrEnum):
    CUSTOMER = "Customer"
    PROVIDER = "Provider"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """A standard Kubernetes condition (``metav1.Condition``)."""

    type: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=316)
    status: ConditionStatus
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    observed_generation: int | None = Field(default=None, ge=0)


CONDITIONS_SCHEMA_EXTRA: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


def conditions_field() -> Any:
    """The ``conditions`` field of every status: a list keyed by ``type``."""
    return Field(default_factory=list, json_schema_extra=CONDITIONS_SCHEMA_EXTRA, max_length=32)


class LocalObjectReference(Model):
    """A reference to an object in the same namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
