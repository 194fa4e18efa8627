"""Table-driven tests of the responsibility policy: every combination."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from patchwarden.api import ManagedSystemSpec, Party, Trigger, UpdateRequestSpec
from patchwarden.core.policy import assess, decide_request, may_start

MODELS = ["IaaS", "PaaS", "SaaS"]
PACKAGES = [None, "basic", "advanced"]
CLASSES = [["security"], ["feature"], ["security", "feature"]]
TRIGGERS = list(Trigger)


def spec(model: str, package: str | None, admin: bool, **extra: Any) -> ManagedSystemSpec:
    data: dict[str, Any] = {
        "customer": "acme",
        "serviceModel": model,
        "customerAdminAccess": admin,
        "workload": {"kind": "Deployment", "name": "app"},
        **extra,
    }
    if package:
        data["package"] = package
    return ManagedSystemSpec.model_validate(data)


def valid_combinations() -> list[tuple[str, str | None, bool]]:
    """The schema allows a package for PaaS only, and requires one there."""
    return [
        (m, p, a)
        for m, p, a in itertools.product(MODELS, PACKAGES, [False, True])
        if (m == "PaaS") == (p is not None)
    ]


# The expectations, written independently of the implementation:
# (model, package) -> planning, execution, proactive trigger, classes in scope.
EXPECTED = {
    ("IaaS", None): (Party.CUSTOMER, Party.CUSTOMER, None, set()),
    ("PaaS", "basic"): (Party.CUSTOMER, Party.PROVIDER, None, {"security"}),
    ("PaaS", "advanced"): (Party.CUSTOMER, Party.PROVIDER, Trigger.CADENCE, {"security"}),
    ("SaaS", None): (Party.PROVIDER, Party.PROVIDER, Trigger.SCHEDULE, {"security", "feature"}),
}


@pytest.mark.parametrize(("model", "package", "admin"), valid_combinations())
def test_responsibility_and_eligibility(model: str, package: str | None, admin: bool) -> None:
    planning, execution, proactive, classes = EXPECTED[(model, package)]
    got = assess(spec(model, package, admin))
    assert (got.planning, got.execution) == (planning, execution)
    eligible = model != "IaaS" and not admin
    assert got.eligible is eligible
    assert got.proactive == (proactive if eligible else None)
    assert set(got.classes) == (classes if eligible else set())
    if model == "IaaS":
        assert "IaaS" in got.reason
    elif admin:
        assert "administrative" in got.reason


@pytest.mark.parametrize(
    ("model", "package", "admin", "trigger"),
    [(*c, t) for c in valid_combinations() for t in TRIGGERS],
)
def test_what_may_start_an_update(
    model: str, package: str | None, admin: bool, trigger: Trigger
) -> None:
    allowed = {
        ("IaaS", None): set(),
        ("PaaS", "basic"): {Trigger.REQUEST},
        ("PaaS", "advanced"): {Trigger.REQUEST, Trigger.CADENCE},
        ("SaaS", None): {Trigger.REQUEST, Trigger.SCHEDULE},
    }[(model, package)]
    expected = trigger in allowed and not admin
    assert may_start(assess(spec(model, package, admin)), trigger) is expected


@pytest.mark.parametrize(
    ("model", "package", "admin", "classes"),
    [(*c, k) for c in valid_combinations() for k in CLASSES],
)
def test_update_requests(model: str, package: str | None, admin: bool, classes: list[str]) -> None:
    request = UpdateRequestSpec.model_validate(
        {"systemRef": {"name": "app"}, "classes": classes, "ticket": "HD-1"}
    )
    decision = decide_request(spec(model, package, admin), request)
    accepted = model != "IaaS" and not admin and (model == "SaaS" or classes == ["security"])
    assert decision.accepted is accepted, decision.reason
    assert decision.reason.startswith("accepted" if accepted else "rejected")
    if model == "PaaS" and not admin and "feature" in classes:
        assert "security updates only" in decision.reason


def test_a_request_for_a_missing_system_is_rejected_with_its_name() -> None:
    request = UpdateRequestSpec.model_validate({"systemRef": {"name": "ghost"}, "ticket": "HD-2"})
    decision = decide_request(None, request)
    assert not decision.accepted
    assert "'ghost'" in decision.reason


COMPONENTS = [
    {
        "name": "os",
        "version": "1",
        "installedBy": "provider",
        "source": "standard-repository",
        "layer": "os",
    },
    {
        "name": "db",
        "version": "1",
        "installedBy": "provider",
        "source": "standard-repository",
        "layer": "middleware",
    },
    {
        "name": "custom-db",
        "version": "1",
        "installedBy": "provider",
        "source": "other",
        "layer": "middleware",
    },
    {
        "name": "plugin",
        "version": "1",
        "installedBy": "customer",
        "source": "standard-repository",
        "layer": "os",
    },
    {
        "name": "app",
        "version": "1",
        "installedBy": "provider",
        "source": "standard-repository",
        "layer": "application",
    },
]


def test_paas_scope_is_provider_installed_standard_repository_os_and_middleware() -> None:
    got = assess(spec("PaaS", "basic", False, components=COMPONENTS))
    assert got.components == ("os", "db")


def test_saas_scope_covers_application_and_os() -> None:
    got = assess(spec("SaaS", None, False, components=COMPONENTS))
    assert got.components == tuple(c["name"] for c in COMPONENTS)


def test_paas_with_only_customer_software_is_not_eligible() -> None:
    got = assess(spec("PaaS", "advanced", False, components=COMPONENTS[2:4]))
    assert not got.eligible
    assert "standard repositories" in got.reason


def test_saas_contract_limited_to_security_rejects_feature_requests() -> None:
    system = spec("SaaS", None, False, updates={"classes": ["security"]})
    request = UpdateRequestSpec.model_validate(
        {"systemRef": {"name": "app"}, "classes": ["feature"], "ticket": "x"}
    )
    decision = decide_request(system, request)
    assert not decision.accepted
    assert "does not cover feature" in decision.reason
