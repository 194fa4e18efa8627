"""ReleaseCatalog: the provider's tested releases of the standard components it installs."""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, AwareDatetime, Field

from patchwarden.api.common import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    Duration,
    Model,
    Rule,
    UpdateClass,
    map_by,
    unique,
)

SEMVER_PATTERN = (
    r"^(0|[1-9][0-9]*)[.](0|[1-9][0-9]*)[.](0|[1-9][0-9]*)"
    r"(-[0-9A-Za-z-]+([.][0-9A-Za-z-]+)*)?([+][0-9A-Za-z-]+([.][0-9A-Za-z-]+)*)?$"
)
"""Semantic Versioning 2.0.0 (written without backslashes: it is also a CEL string)."""
DEBIAN_VERSION = r"^([0-9]+:)?[0-9][A-Za-z0-9.+~-]*$"
"""dpkg's syntax: ``[epoch:]upstream[-revision]``, the upstream part starting with a digit."""
DIGEST = r"@sha256:[a-f0-9]{64}$"


class VersionScheme(StrEnum):
    DEBIAN = "Debian"
    """dpkg's order (``deb-version(7)``): numbers compare as numbers (15.8 < 15.10), ``~``
    sorts before anything (2.0~rc1 < 2.0), an epoch (``1:``) outranks the rest; fits
    dotted versions and Debian packages (1.24.0-1+deb12u2)."""
    SEMVER = "SemVer"
    """Semantic Versioning 2.0.0: pre-releases sort before their release (1.0.0-rc.1 <
    1.0.0), build metadata is ignored."""


class Release(Model):
    """One tested release of a component."""

    version: str = Field(min_length=1, max_length=64, pattern=DEBIAN_VERSION)
    """The version in the component's ``versionScheme`` (both start with a digit)."""
    image: str = Field(min_length=1, max_length=512, pattern=r"^[^\s@]+(@sha256:[a-f0-9]{64})?$")
    """The OCI image reference the operator sets on the component's container, by tag or
    pinned by digest (``registry/repo@sha256:…`` or ``repo:tag@sha256:…``)."""
    classes: list[UpdateClass] = Field(
        min_length=1, max_length=2, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """What the release brings: ``security`` fixes, ``feature`` changes, or both."""
    released: AwareDatetime
    """When the provider released it (``updates.approveAfter`` counts from here)."""
    end_of_life: date | None = None
    """The last day the release is supported; it is never a target after that."""
    advisories: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=64
    )
    """Free-text references of what it fixes, e.g. CVE-2024-10979 or DSA-5812-1."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(self.endOfLife) || self.endOfLife + duration('24h') > self.released",
            "endOfLife must not be before the release",
            ".endOfLife",
            lambda r: r.end_of_life is None or r.end_of_life >= r.released.date(),
        ),
    )


def _versions_fit(component: CatalogComponent) -> bool:
    pattern = SEMVER_PATTERN if component.version_scheme == VersionScheme.SEMVER else DEBIAN_VERSION
    return all(re.fullmatch(pattern, r.version) for r in component.releases)


class CatalogComponent(Model):
    """A component and its releases (in any order: the version scheme orders them)."""

    name: str = Field(min_length=1, max_length=128, pattern=DNS_SUBDOMAIN)
    """Matched by name against the components of ManagedSystems."""
    version_scheme: VersionScheme = VersionScheme.DEBIAN
    releases: Annotated[list[Release], AfterValidator(unique("version", "versions"))] = Field(
        min_length=1,
        max_length=64,
        json_schema_extra=map_by("version"),
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            f"self.versionScheme != 'SemVer' || "
            f"self.releases.all(r, r.version.matches('{SEMVER_PATTERN}'))",
            "with versionScheme SemVer every version must be MAJOR.MINOR.PATCH[-pre][+build]",
            ".releases",
            _versions_fit,
        ),
    )


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class SelectorRequirement(Model):
    key: str = Field(min_length=1, max_length=317)
    operator: SelectorOperator
    values: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=64)

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "(self.operator in ['In', 'NotIn']) == (size(self.values) > 0)",
            "In and NotIn need values; Exists and DoesNotExist take none",
            ".values",
            lambda r: (
                (r.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)) == bool(r.values)
            ),
        ),
    )


class LabelSelector(Model):
    """A Kubernetes label selector (``matchLabels`` and ``matchExpressions``, ANDed)."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, max_length=32
    )
    match_expressions: list[SelectorRequirement] = Field(default_factory=list, max_length=32)


class Wave(Model):
    """One wave of a rollout: the ManagedSystems whose labels its selector matches."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    selector: LabelSelector
    """ManagedSystems (by their own labels) in this wave; a system is in the first wave
    whose selector matches it."""
    soak: Duration | None = None
    """After the wave's last run of a release succeeded, the next wave waits this long
    before it may take the release, e.g. ``24h``; default: not at all."""


class Rollout(Model):
    """The order in which this catalog's releases reach the systems (docs/waves.md)."""

    waves: Annotated[list[Wave], AfterValidator(unique("name", "wave names"))] = Field(
        min_length=1, max_length=10, json_schema_extra=map_by("name")
    )
    """In order; every system no wave selects is in a last, implicit wave. A wave takes a
    release only once every earlier wave has: each of its systems that needed it ran it
    successfully (and the wave's soak passed). A failed run of the release halts it."""


class ReleaseCatalogSpec(Model):
    """The provider's tested releases of the standard components it installs (cluster-wide:
    ManagedSystems of every namespace read it)."""

    rollout: Rollout | None = None
    """Waves: which systems take this catalog's releases first; default: all at once."""

    components: Annotated[
        list[CatalogComponent], AfterValidator(unique("name", "component names"))
    ] = Field(
        default_factory=list,
        max_length=128,
        json_schema_extra=map_by("name"),
    )


class WaveRecord(Model):
    """A wave that ran the release successfully: when its last successful run ended (the
    next wave's soak counts from it)."""

    name: str = Field(max_length=63)
    succeeded_time: str = Field(json_schema_extra={"format": "date-time"})


class HaltRecord(Model):
    """The failed run that halted the release: no system takes it any more."""

    run: str = Field(max_length=253)
    system: str = Field(max_length=317)
    """``namespace/name``."""
    wave: str = Field(max_length=63)
    phase: str = Field(max_length=32)
    """``RolledBack`` or ``Failed``."""
    time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    """When the run ended."""


class ReleaseRecord(Model):
    """How far one release has come through the waves, kept where deleting or pruning its
    runs cannot change it."""

    component: str = Field(max_length=63)
    version: str = Field(max_length=128)
    waves: list[WaveRecord] = Field(
        default_factory=list, max_length=11, json_schema_extra=map_by("name")
    )
    halted: HaltRecord | None = None


class ReleaseCatalogStatus(Model):
    """Written by the operator alone (its waves' ledger): the rollout's record."""

    rollout: list[ReleaseRecord] = Field(default_factory=list, max_length=2048)
    """Each release of this catalog a wave ran successfully or a failed run halted (the
    releases still listed in the spec)."""


class ReleaseCatalog(Model):
    api_version: Literal["patchwarden.io/v1alpha1"] = "patchwarden.io/v1alpha1"
    kind: Literal["ReleaseCatalog"] = "ReleaseCatalog"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ReleaseCatalogSpec
