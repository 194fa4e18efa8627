"""``patchwarden plan`` and the operator decide alike: the same fleet (waves, approvals, a
release catalog, a request, a stalled system, one up to date) is planned offline and
reconciled by the systems controller at the same instant, and their answers compared."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import yaml

from patchwarden.controllers.requests import Requests
from patchwarden.controllers.systems import Systems
from patchwarden.core.plan import as_json, load, plan
from patchwarden.core.scheduler import Limits
from patchwarden.core.settings import Settings
from patchwarden.runtime.fleet import Fleet
from patchwarden_dev.fakekube import FakeKube, FakeView
from tests.unit.systems import CATALOG as SHARED
from tests.unit.systems import POSTGRES

BEFORE = datetime(2027, 2, 10, 12, 0, tzinfo=UTC)
"""The first look: two days before the window (statuses written, proposals made)."""
IN_WINDOW = datetime(2027, 2, 13, 1, 5, tzinfo=UTC)
WINDOW = {"windows": [{"name": "sat", "once": "2027-02-13T01:00:00Z", "duration": "3h"}]}
TEMPLATE = {"spec": {"containers": [{"name": "u", "image": "registry.invalid/u:1"}]}}
CANARY = {"name": "canary", "selector": {"matchLabels": {"ring": "canary"}}, "soak": "24h"}
CATALOG = {**SHARED, "spec": {**SHARED["spec"], "rollout": {"waves": [CANARY]}}}


def system(
    name: str, image: str | None = "pg:16.3", ring: str | None = "canary", **spec: Any
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A ManagedSystem (SaaS unless ``spec`` says otherwise) and its Deployment."""
    body: dict[str, Any] = {
        "apiVersion": "patchwarden.io/v1alpha1",
        "kind": "ManagedSystem",
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": f"uid-{name}",
            "generation": 1,
            "labels": {"ring": ring} if ring else {},
        },
        "spec": {
            "customer": "acme",
            "serviceModel": "SaaS",
            "workload": {"kind": "Deployment", "name": name},
            "maintenance": WINDOW,
            "backup": {"required": False},
            "components": [POSTGRES] if image else [],
            **spec,
        },
    }
    if image is None:
        return body, None
    pod = {"containers": [{"name": "db", "image": image}]}
    workload = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"namespace": "ns", "name": name, "generation": 1},
        "spec": {"template": {"spec": pod}},
    }
    return body, workload


FLEET = [
    system("canary"),  # the first wave: takes the newest release
    system("later", ring=None),  # the last wave: the canary has not soaked
    system("current", image="pg:16.5"),  # nothing newer
    system("approved", updates={"approval": {"before": "24h"}}),
    system("no-template", image=None),  # no Job, no component: stalled
    system(
        "requested",
        image=None,
        serviceModel="PaaS",
        package="basic",
        updates={"template": TEMPLATE, "runJob": "EveryWindow"},
    ),
]
REQUEST = {
    "apiVersion": "patchwarden.io/v1alpha1",
    "kind": "UpdateRequest",
    "metadata": {"namespace": "ns", "name": "cve", "creationTimestamp": "2027-02-09T00:00:00Z"},
    "spec": {"systemRef": {"name": "requested"}, "ticket": "T-1"},
}


def operate() -> tuple[FakeKube, list[dict[str, Any]]]:
    """The operator's answers: a look before the window (statuses, the proposal, which the
    customer then approves), and one inside it."""
    kube, clock = FakeKube(), [BEFORE]
    fleet = Fleet(Limits(10, 10, 3))
    requests = Requests(kube, lambda *_: None, fleet)
    view = FakeView(kube)
    controller = Systems(
        Settings(),
        kube,
        lambda *_: None,
        fleet,
        requests.reconcile_for_system,
        view,
        lambda: clock[0],
    )
    names = [body["metadata"]["name"] for body, _ in FLEET]
    kube.put("releasecatalogs", "", copy.deepcopy(CATALOG))
    for body, workload in FLEET:
        if workload is not None:
            kube.put("deployments", "ns", copy.deepcopy(workload))
        else:
            kube.put("deployments", "ns", {"metadata": {"name": body["metadata"]["name"]}})
        kube.put("managedsystems", "ns", copy.deepcopy(body))
    fleet.observe_request(kube.put("updaterequests", "ns", copy.deepcopy(REQUEST)))
    for name in names:
        controller.reconcile(kube.stored("managedsystems", "ns", name))
    approved = kube.stored("managedsystems", "ns", "approved")
    assert approved["status"]["proposal"]["state"] == "Pending"
    approved["metadata"]["annotations"] = {
        "patchwarden.io/approve": "2027-02-13T01:00:00Z",
        "patchwarden.io/approved-by": "jane@acme.example",
    }
    controller.reconcile(approved)
    stored = [copy.deepcopy(kube.stored("managedsystems", "ns", n)) for n in names]
    clock[0] = IN_WINDOW
    controller.refresh_ledger()  # the waves counted from the statuses just written
    for name in names:
        controller.reconcile(kube.stored("managedsystems", "ns", name))
    return kube, stored


def test_the_plan_and_the_operator_start_the_same_runs_with_the_same_targets() -> None:
    kube, stored = operate()
    # The plan reads what a user exports: the systems as stored, the catalog, the workloads,
    # the request.
    docs = [
        *stored,
        CATALOG,
        REQUEST,
        *(workload for _, workload in FLEET if workload is not None),
    ]
    planned = as_json(*plan(load(yaml.safe_dump_all(docs)), IN_WINDOW, 1))
    by_plan = {s["name"]: s["windows"][0] for s in planned["systems"]}
    operator: dict[str, Any] = {}
    for body, _ in FLEET:
        name = body["metadata"]["name"]
        run = kube.objects.get(("updateruns", "ns", f"{name}-202702130100"))
        operator[name] = None if run is None else [t["to"] for t in run["spec"].get("targets", [])]
    plan_answers = {
        name: ([t["to"] for t in w["targets"] or []] if w["update"] else None)
        for name, w in by_plan.items()
    }
    assert plan_answers == operator
    # And what they are, so that agreeing on nothing cannot pass.
    assert operator == {
        "canary": ["16.5"],
        "later": None,
        "current": None,
        "approved": ["16.5"],
        "no-template": None,
        "requested": [],
    }
    assert "held: postgres 16.4, postgres 16.5" in by_plan["later"]["why"]
    assert by_plan["no-template"]["why"].startswith("stalled: spec.updates.template")
    assert "needs the customer's approval" in by_plan["approved"]["why"]
    assert by_plan["requested"]["why"] == "on request (T-1)"
