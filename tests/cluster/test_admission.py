"""The chart's ValidatingAdmissionPolicies on the real API server, with impersonated users:
no confused deputy — a field that makes the operator act needs the requester's own right to
do it; customers still ask for updates; only the operator creates UpdateRuns."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.catalogue import SYSTEM
from tests.conftest import REPO, Cluster
from tests.helpers import kubectl_plugin, wait_for

pytestmark = pytest.mark.usefixtures("crds")
CHART = REPO / "charts" / "patchwarden"

CONTRACT = {
    "apiGroups": ["patchwarden.io"],
    "resources": ["managedsystems/contract"],
    "verbs": ["update"],
}
"""Trusted with the contract (docs/rbac.md): the provider's people below all are."""
ROLES: dict[str, list[dict[str, Any]]] = {
    # The provider's help desk: edits systems' descriptions, asks for updates; runs nothing.
    "alice": [
        {
            "apiGroups": ["patchwarden.io"],
            "resources": ["managedsystems", "updaterequests", "updateruns"],
            "verbs": ["get", "list", "create", "update", "patch"],
        },
        CONTRACT,
    ],
    # The provider's operations team in this namespace: may run Jobs, change the workload
    # (and, by a too-wide role, create UpdateRuns: the policy still refuses them).
    "bob": [
        {
            "apiGroups": ["patchwarden.io"],
            "resources": ["managedsystems", "updaterequests", "updateruns"],
            "verbs": ["get", "list", "create", "update", "patch"],
        },
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["update"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["delete"]},
        CONTRACT,
    ],
}
# The provider's deploy team: bob's rights, acting as ServiceAccount deployer, exec.
ROLES["carol"] = [
    *ROLES["bob"],
    {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
    {
        "apiGroups": [""],
        "resources": ["serviceaccounts/token"],
        "resourceNames": ["deployer"],
        "verbs": ["create"],
    },
]


def kubectl(cluster: Cluster, tools: Path, *args: str, stdin: str = "") -> tuple[bool, str]:
    out = subprocess.run(
        [str(tools / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    return out.returncode == 0, out.stdout + out.stderr


def bind(cluster: Cluster, ns: str, name: str, user: str, kind: str, role: str) -> None:
    """A RoleBinding in ``ns`` giving ``user`` the Role or ClusterRole ``role``."""
    client.RbacAuthorizationV1Api(cluster.api).create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": name[:63]},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )


@pytest.fixture
def policies(cluster: Cluster, tools: Path, namespace: str) -> Iterator[str]:
    """The chart's policies and aggregated roles, the bindings limited to this namespace."""
    release = f"adm-{namespace[-6:]}"
    values = {
        "admissionPolicy": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
        }
    }
    path = Path(f"/tmp/{release}-values.yaml")
    path.write_text(yaml.safe_dump(values))
    rendered = subprocess.run(
        [
            str(tools / "helm"),
            "template",
            release,
            str(CHART),
            "--namespace",
            "patchwarden",
            "-f",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    docs = [
        d
        for d in yaml.safe_load_all(rendered)
        if d
        and (
            d["kind"].startswith("ValidatingAdmissionPolicy")
            or d["metadata"]["name"].endswith(("-edit", "-view", "-approver", "-contract-editor"))
        )
    ]
    text = yaml.safe_dump_all(docs)
    ok, out = kubectl(cluster, tools, "apply", "-f", "-", stdin=text)
    if not ok:
        kubectl(cluster, tools, "delete", "-f", "-", "--ignore-not-found", stdin=text)
    assert ok, out
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    for user, rules in ROLES.items():
        rbac.create_namespaced_role(namespace, {"metadata": {"name": user}, "rules": rules})
        bind(cluster, namespace, user, user, "Role", user)
    yield release
    kubectl(cluster, tools, "delete", "-f", "-", "--ignore-not-found", "--wait=false", stdin=text)
    path.unlink()


def system(name: str, ns: str, **updates: Any) -> dict[str, Any]:
    body = copy.deepcopy(SYSTEM)
    body["metadata"] = {"name": name, "namespace": ns}
    body["spec"]["updates"] = updates
    return body


TEMPLATE = {"spec": {"containers": [{"name": "u", "image": "example.com/u:1"}]}}
EVIL = {"spec": {"containers": [{"name": "u", "image": "example.com/evil:1"}]}}


def attempt(cluster: Cluster, tools: Path, user: str, obj: dict[str, Any]) -> tuple[bool, str]:
    return kubectl(cluster, tools, "--as", user, "create", "-f", "-", stdin=yaml.safe_dump(obj))


def test_only_who_may_do_it_themselves_can_make_the_operator_do_it(
    cluster: Cluster, tools: Path, namespace: str, policies: str
) -> None:
    ns = namespace
    # The policy is in force once the API server refuses the first attempt (it loads them
    # asynchronously): wait for that, with a deadline.
    deadline = time.monotonic() + 30
    while True:
        allowed, _ = attempt(cluster, tools, "alice", system("s0", ns, template=TEMPLATE))
        if not allowed or time.monotonic() > deadline:
            break
        kubectl(cluster, tools, "delete", "managedsystem", "s0", "-n", ns)
        time.sleep(0.5)
    tried: list[tuple[str, str, bool, str]] = []

    def expect(user: str, what: str, obj: dict[str, Any], allowed: bool, says: str = "") -> None:
        ok, out = attempt(cluster, tools, user, obj)
        tried.append((user, what, ok, out.strip().splitlines()[-1] if out.strip() else ""))
        assert ok is allowed, (user, what, out)
        assert says in out, (user, what, out)

    expect(
        "alice",
        "an update Job template",
        system("s1", ns, template=TEMPLATE),
        False,
        "spec.updates.template: the operator runs this pod template as an update Job, and "
        "alice may not create Jobs",
    )
    expect(
        "alice",
        "a system bound to a workload",
        system("s2", ns),
        False,
        "it sets images on Deployment app and a rollback replaces its claims",
    )
    expect("bob", "an update Job template", system("s3", ns, template=TEMPLATE), True)
    with_sa = copy.deepcopy(TEMPLATE)
    with_sa["spec"]["serviceAccountName"] = "deployer"
    expect(
        "bob",
        "a template naming ServiceAccount deployer",
        system("s4", ns, template=with_sa),
        False,
        "may not act as it (create serviceaccounts/token)",
    )
    expect(
        "carol",
        "a template naming ServiceAccount deployer",
        system("s6", ns, template=with_sa),
        True,
    )
    flush = {"pre": [{"name": "flush", "exec": {"container": "db", "command": ["sync"]}}]}
    expect(
        "bob",
        "an exec hook (a command in the workload's container)",
        system("s7", ns, template=TEMPLATE, hooks=flush),
        False,
        "spec.updates.hooks: the operator runs these commands in the workload's containers "
        "(pods/exec) and these Jobs, and bob may not create pods/exec and Jobs",
    )
    expect("carol", "an exec hook", system("s8", ns, template=TEMPLATE, hooks=flush), True)
    as_deployer = {"post": [{"name": "smoke", "job": {"template": with_sa}}]}
    expect(
        "carol",
        "a hook Job as ServiceAccount deployer",
        system("s9", ns, template=TEMPLATE, hooks=as_deployer),
        True,
    )
    as_admin = {
        "post": [
            {
                "name": "smoke",
                "job": {"template": {"spec": {**with_sa["spec"], "serviceAccountName": "admin"}}},
            }
        ]
    }
    expect(
        "carol",
        "a hook Job as ServiceAccount admin",
        system("s10", ns, template=TEMPLATE, hooks=as_admin),
        False,
        "a hook Job would run as a ServiceAccount carol may not act as",
    )
    privileged = {
        "spec": {
            "containers": [{"name": "u", "image": "x", "securityContext": {"privileged": True}}]
        }
    }
    expect(
        "bob",
        "a privileged template (stopped later by the operator's Pod Security floor)",
        system("s5", ns, template=privileged),
        True,
    )
    request = {
        "apiVersion": "patchwarden.io/v1alpha1",
        "kind": "UpdateRequest",
        "metadata": {"name": "r1", "namespace": ns},
        "spec": {"systemRef": {"name": "s3"}, "ticket": "HD-1"},
    }
    expect("alice", "an UpdateRequest", request, True)
    run = {
        "apiVersion": "patchwarden.io/v1alpha1",
        "kind": "UpdateRun",
        "metadata": {"name": "forged", "namespace": ns},
        "spec": {
            "systemRef": {"name": "s3"},
            "customer": "acme",
            "trigger": "Request",
            "classes": ["security"],
            "window": {
                "name": "w",
                "start": "2026-01-01T00:00:00Z",
                "end": "2026-01-01T01:00:00Z",
                "cutoff": "2026-01-01T00:30:00Z",
            },
        },
    }
    expect("alice", "a forged UpdateRun", run, False, "UpdateRuns are created by the operator")
    expect("bob", "a forged UpdateRun", run, False, "UpdateRuns are created by the operator")

    def change(what: str, spec: dict[str, Any], allowed: bool, says: str) -> None:
        ok, out = kubectl(
            cluster,
            tools,
            "--as",
            "alice",
            "patch",
            "managedsystem",
            "s3",
            "-n",
            ns,
            "--type=merge",
            "-p",
            json.dumps({"spec": spec}),
        )
        tried.append(("alice", what, ok, out.strip()))
        assert ok is allowed and says in out, out

    # A change that makes the operator do nothing new needs no such right.
    change("the customer name of a system", {"customer": "acme-gmbh"}, True, "patched")
    change(
        "the image of an existing update Job template",
        {"updates": {"template": EVIL}},
        False,
        "may not create Jobs",
    )
    components = copy.deepcopy(SYSTEM["spec"]["components"])
    components[0]["track"] = "any"  # a major upgrade the provider did not plan
    change(
        "a component's track (which images are set)",
        {"components": components},
        False,
        "spec.components",
    )
    stopped = sum(1 for *_, ok, _ in tried if not ok)
    print(f"{len(tried)} attempts, {stopped} stopped at admission:")
    for user, what, ok, line in tried:
        print(f"  {user}: {what}: {'allowed' if ok else 'refused: ' + line}")


def test_the_built_in_roles_cover_patchwarden_through_aggregation(
    cluster: Cluster, tools: Path, namespace: str, policies: str
) -> None:
    """A namespace's `view` user reads ManagedSystems, an `edit` user manages them; neither
    creates UpdateRuns (the operator's); with no hand-written role."""
    for user, role in (("dave", "view"), ("erin", "edit")):
        bind(cluster, namespace, f"builtin-{user}", user, "ClusterRole", role)

    def can(user: str, verb: str, resource: str) -> bool:
        _, out = kubectl(
            cluster, tools, "auth", "can-i", verb, resource, "-n", namespace, "--as", user
        )
        return out.strip().splitlines()[0] == "yes"

    # The aggregation controller copies the rules into the built-in roles: wait for it.
    wait_for(
        lambda: can("dave", "list", "managedsystems.patchwarden.io"),
        timeout=30,
        what="the view role to cover ManagedSystems",
    )
    wait_for(
        lambda: can("erin", "create", "managedsystems.patchwarden.io"),
        timeout=30,
        what="the edit role to cover ManagedSystems",
    )
    assert can("dave", "list", "updateruns.patchwarden.io")
    assert not can("dave", "create", "updaterequests.patchwarden.io")
    assert can("erin", "create", "updaterequests.patchwarden.io")
    assert not can("erin", "create", "updateruns.patchwarden.io")
    assert can("erin", "delete", "updateruns.patchwarden.io")


def test_customers_approve_with_a_role_that_can_do_nothing_else_in_their_own_name(
    cluster: Cluster, tools: Path, namespace: str, policies: str
) -> None:
    """Issue 33, section 2: approving needed `patch managedsystems` — the role that rewrites
    the contract. Now: frank (the approver role) answers proposals and nothing else, only
    in his own name and only in his namespace; gina (`edit`) no longer rewrites contracts;
    henry (`edit` and the contract editor) does."""
    ns = namespace
    for user, role in (
        ("frank", f"{policies}-patchwarden-approver"),
        ("gina", "edit"),
        ("henry", "edit"),
        ("henry", f"{policies}-patchwarden-contract-editor"),
    ):
        bind(cluster, ns, f"{user}-{role}", user, "ClusterRole", role)
    shop = system("shop", ns)
    ok, out = kubectl(cluster, tools, "create", "-f", "-", stdin=yaml.safe_dump(shop))
    assert ok, out
    # The policies and the aggregated edit role are in force once gina's change is refused
    # by the policy (the API server loads them asynchronously): wait, with a deadline.
    change = json.dumps({"spec": {"customer": "someone-else"}})

    def patch(user: str, *args: str, target: str = "shop", where: str = ns) -> tuple[bool, str]:
        return kubectl(
            cluster, tools, "--as", user, "-n", where, "patch", "managedsystem", target, *args
        )

    def guarded() -> str | None:
        ok, out = patch("gina", "--type=merge", "-p", change)
        if ok:  # admitted before the policy was in force: put the contract back
            kubectl(
                cluster,
                tools,
                "-n",
                ns,
                "patch",
                "managedsystem",
                "shop",
                "--type=merge",
                "-p",
                json.dumps({"spec": {"customer": shop["spec"]["customer"]}}),
            )
        return out if "are the customer's contract" in out else None

    wait_for(guarded, timeout=30, what="the contract guard in force for an edit user")
    tried: list[tuple[str, str, bool, str]] = []

    def expect(user: str, what: str, allowed: bool, says: str, *args: str, **kw: str) -> None:
        ok, out = patch(user, *args, **kw)
        tried.append((user, what, ok, out.strip().splitlines()[-1] if out.strip() else ""))
        assert ok is allowed, (user, what, out)
        assert says in out, (user, what, out)

    contract = (
        "the spec, labels and annotations of ManagedSystem shop are the customer's contract: "
    )
    expect(
        "gina",
        "the customer (edit role)",
        False,
        contract + "gina may only answer",
        "--type=merge",
        "-p",
        change,
    )
    expect("henry", "the customer (contract editor)", True, "patched", "--type=merge", "-p", change)
    model = json.dumps({"spec": {"backup": {"required": False}}})
    expect(
        "frank",
        "backup.required (no snapshot before an update)",
        False,
        contract + "frank may only answer",
        "--type=merge",
        "-p",
        model,
    )
    label = json.dumps({"metadata": {"labels": {"ring": "canary"}}})
    expect("frank", "a label (waves select on them)", False, contract, "--type=merge", "-p", label)
    ack = json.dumps({"metadata": {"annotations": {"patchwarden.io/acknowledged-run": "x"}}})
    expect("frank", "acknowledging a failed rollback", False, contract, "--type=merge", "-p", ack)
    start = "2030-01-05T01:00:00Z"

    def answer(**annotations: str) -> tuple[str, str]:
        return ("--type=merge", "-p", json.dumps({"metadata": {"annotations": annotations}}))

    approve, by = "patchwarden.io/approve", "patchwarden.io/approved-by"
    expect(
        "frank",
        "an approval in alice's name",
        False,
        "an approval records who gave it, as the API server knows them: it must be frank",
        *answer(**{approve: start, by: "alice"}),
    )
    expect(
        "frank",
        "an approval in his own name",
        True,
        "patched",
        *answer(**{approve: start, by: "frank"}),
    )
    stored = json.loads(
        kubectl(cluster, tools, "-n", ns, "get", "managedsystem", "shop", "-o", "json")[1]
    )
    assert stored["metadata"]["annotations"][by] == "frank", "the recorded approver is the real one"
    expect(
        "gina",
        "an approval re-attributed to someone else",
        False,
        "it must be gina",
        *answer(**{by: "henry"}),
    )
    expect(
        "frank",
        "a rejection with a reason",
        True,
        "patched",
        *answer(
            **{
                "patchwarden.io/reject": start,
                "patchwarden.io/rejected-by": "frank",
                "patchwarden.io/reject-reason": "month-end closing",
            }
        ),
    )
    ok, out = kubectl(cluster, tools, "--as", "frank", "-n", ns, "delete", "managedsystem", "shop")
    tried.append(("frank", "deleting the system", ok, out.strip().splitlines()[-1]))
    assert not ok and "forbidden" in out, out
    # Another customer's namespace: frank has no role there.
    other = f"{ns}-other"
    client.CoreV1Api(cluster.api).create_namespace({"metadata": {"name": other}})
    try:
        elsewhere = system("theirs", other)
        ok, out = kubectl(cluster, tools, "create", "-f", "-", stdin=yaml.safe_dump(elsewhere))
        assert ok, out
        expect(
            "frank",
            "an approval in another customer's namespace",
            False,
            "forbidden",
            *answer(**{approve: start, by: "frank"}),
            target="theirs",
            where=other,
        )
    finally:
        client.CoreV1Api(cluster.api).delete_namespace(other)
    # The plugin answers in the caller's name as the API server knows it (SelfSubjectReview,
    # impersonated here): a proposal written into the status, as the operator would.
    proposal = {
        "window": "w",
        "start": "2030-01-12T01:00:00Z",
        "approveBy": "2030-01-11T01:00:00Z",
        "state": "Pending",
        "targets": [],
    }
    ok, out = kubectl(
        cluster,
        tools,
        "-n",
        ns,
        "patch",
        "managedsystem",
        "shop",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"proposal": proposal}}),
    )
    assert ok, out
    said = kubectl_plugin(cluster, "--as", "frank", "-n", ns, "approve", "shop").stdout
    assert said.strip().endswith("approved as frank"), said
    stored = json.loads(
        kubectl(cluster, tools, "-n", ns, "get", "managedsystem", "shop", "-o", "json")[1]
    )
    annotations = stored["metadata"]["annotations"]
    assert (annotations[approve], annotations[by]) == ("2030-01-12T01:00:00Z", "frank")
    refused = sum(1 for *_, ok, _ in tried if not ok)
    print(f"{len(tried)} attempts, {refused} refused:")
    for user, what, ok, line in tried:
        print(f"  {user}: {what}: {'allowed' if ok else 'refused: ' + line}")
