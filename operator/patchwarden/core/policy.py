"""The responsibility policy: who plans, who executes, what may be updated when.

Pure functions of a validated spec; the source is the provider's help-desk
article restated in MISSION.md:

=========  ===========  ============  =========================================
model      plans        executes      patchwarden
=========  ===========  ============  =========================================
IaaS       Customer     Customer      runs nothing; rejects every request
PaaS       Customer     Provider      security updates of provider-installed
                                      standard-repository OS and middleware;
                                      basic: on request only; advanced: also
                                      on its cadence (quarterly by default)
SaaS       Provider     Provider      security and feature updates, proactively
                                      in every window
=========  ===========  ============  =========================================

A customer with administrative access makes a PaaS or SaaS system ineligible:
managed updates are only possible where the operational responsibilities are
separated. Reasons are written for the customer to read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from patchwarden.api.common import Package, Party, ServiceModel, UpdateClass
from patchwarden.api.request import UpdateRequestSpec
from patchwarden.api.run import Trigger
from patchwarden.api.system import InstalledBy, Layer, ManagedSystemSpec, Source

_MODEL_CLASSES = {
    ServiceModel.IAAS: frozenset[UpdateClass](),
    ServiceModel.PAAS: frozenset({UpdateClass.SECURITY}),
    ServiceModel.SAAS: frozenset({UpdateClass.SECURITY, UpdateClass.FEATURE}),
}


@dataclass(frozen=True)
class Assessment:
    """What the contract of one system says about its updates."""

    planning: Party
    execution: Party
    eligible: bool
    reason: str
    classes: frozenset[UpdateClass]
    """Update classes in scope (empty when not eligible)."""
    components: tuple[str, ...]
    """Names of the components in scope (empty: none declared, the Job decides)."""
    proactive: Trigger | None
    """What starts an update without a request: the cadence, the SaaS schedule, or nothing."""
    code: str = "ContractAllowsUpdates"
    """A CamelCase reason for conditions: why (not) eligible."""


def contract_classes(
    model: ServiceModel, wanted: Iterable[UpdateClass] | None
) -> frozenset[UpdateClass]:
    """The update classes a system's updates cover: those it asks for (default: all its
    service model allows) that the model allows."""
    allowed = _MODEL_CLASSES[model]
    return frozenset(set(wanted or allowed) & allowed)


def in_scope(spec: ManagedSystemSpec) -> tuple[str, ...]:
    """Components the provider updates under this system's model."""
    if spec.service_model == ServiceModel.SAAS:
        return tuple(c.name for c in spec.components)
    return tuple(
        c.name
        for c in spec.components
        if c.installed_by == InstalledBy.PROVIDER
        and c.source == Source.STANDARD_REPOSITORY
        and c.layer != Layer.APPLICATION
    )


def assess(spec: ManagedSystemSpec) -> Assessment:
    model = spec.service_model
    if model == ServiceModel.IAAS:
        return Assessment(
            Party.CUSTOMER,
            Party.CUSTOMER,
            False,
            "IaaS: you maintain this system yourself; the provider has no access and "
            "runs no updates on it",
            frozenset(),
            (),
            None,
            "CustomerManaged",
        )
    planning = Party.CUSTOMER if model == ServiceModel.PAAS else Party.PROVIDER

    def ineligible(reason: str, code: str) -> Assessment:
        return Assessment(planning, Party.PROVIDER, False, reason, frozenset(), (), None, code)

    if spec.customer_admin_access:
        return ineligible(
            "you have administrative (root/admin) access to this system; managed updates "
            "are only possible on systems without customer admin access",
            "CustomerAdminAccess",
        )
    classes = contract_classes(model, spec.updates.classes)
    components = in_scope(spec)
    if spec.components and not components:
        return ineligible(
            "no component is in scope: PaaS updates cover only OS and middleware the "
            "provider installed from standard repositories",
            "NothingInScope",
        )
    return _eligible(spec, planning, classes, components)


def _eligible(
    spec: ManagedSystemSpec,
    planning: Party,
    classes: frozenset[UpdateClass],
    components: tuple[str, ...],
) -> Assessment:
    """An eligible system: what triggers its updates, by its model and package."""
    trigger: Trigger | None
    if spec.service_model == ServiceModel.SAAS:
        why = "SaaS: the provider runs security and feature updates proactively"
        trigger = Trigger.SCHEDULE
    elif spec.package == Package.ADVANCED:
        period = spec.maintenance.cadence.period if spec.maintenance.cadence else "quarterly"
        why = f"PaaS advanced: security updates run automatically ({period}) and on request"
        trigger = Trigger.CADENCE
    else:
        why, trigger = "PaaS basic: security updates run only on your explicit request", None
    return Assessment(planning, Party.PROVIDER, True, why, classes, components, trigger)


def may_start(assessment: Assessment, trigger: Trigger) -> bool:
    """Whether an update of this system may start for ``trigger``."""
    if not assessment.eligible:
        return False
    return trigger == Trigger.REQUEST or trigger == assessment.proactive


@dataclass(frozen=True)
class RequestDecision:
    accepted: bool
    reason: str
    classes: frozenset[UpdateClass] = frozenset()


def decide_request(spec: ManagedSystemSpec | None, request: UpdateRequestSpec) -> RequestDecision:
    """Accept or reject a customer's UpdateRequest for the system ``spec`` (None: not found)."""
    if spec is None:
        return RequestDecision(
            False, f"there is no system {request.system_ref.name!r} in this namespace"
        )
    assessment = assess(spec)
    if not assessment.eligible:
        return RequestDecision(False, f"rejected: {assessment.reason}")
    wanted = frozenset(request.classes)
    refused = sorted(wanted - assessment.classes)
    if refused:
        if spec.service_model == ServiceModel.PAAS and UpdateClass.FEATURE in refused:
            why = (
                "PaaS managed services include security updates only; feature updates of "
                "your application are yours to plan and run"
            )
        else:
            why = f"the contract of this system does not cover {', '.join(refused)} updates"
        return RequestDecision(False, f"rejected: {why}")
    return RequestDecision(
        True, f"accepted: {', '.join(sorted(wanted))} updates in the next usable window", wanted
    )


def installed_classes(assessment: Assessment) -> list[str]:
    """The update classes the contract installs (both where it names none: an ineligible
    system is still told what it runs behind), sorted."""
    return sorted(x.value for x in assessment.classes) or ["security", "feature"]
