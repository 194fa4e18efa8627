"""The Helm chart and the Prometheus files, checked with the real helm, promtool,
kubectl and API server; and the operator running with exactly the chart's RBAC."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.conftest import REPO, Cluster
from tests.operator_harness import create, running_operator, system, wait_run, workload

CHART = REPO / "charts" / "patchwarden"
ALL_ON = [
    "--set",
    "serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboard.enabled=true",
    "--set",
    "watchNamespaces={a,b}",
    "--set",
    "settings.defaultSnapshotClass=fast",
]


def run(*args: str | Path, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], input=input, capture_output=True, text=True, check=False
    )


def template(tools: Path, namespace: str, *extra: str, release: str = "pw") -> list[dict[str, Any]]:
    out = run(
        tools / "helm",
        "template",
        release,
        CHART,
        "--namespace",
        namespace,
        "--kube-version",
        "1.34.4",
        *extra,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_helm_lint_is_clean(tools: Path) -> None:
    out = run(tools / "helm", "lint", "--strict", CHART)
    assert out.returncode == 0, out.stdout + out.stderr
    out = run(tools / "helm", "lint", "--strict", CHART, *ALL_ON)
    assert out.returncode == 0, out.stdout + out.stderr


def test_default_and_all_on_renderings(tools: Path) -> None:
    default = {d["kind"] for d in template(tools, "patchwarden")}
    assert default == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Deployment",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    roles = [d for d in template(tools, "patchwarden") if d["kind"] == "ClusterRole"]
    aggregated = {
        label
        for d in roles
        for label in d["metadata"]["labels"]
        if label.startswith("rbac.authorization.k8s.io/aggregate-to-")
    }
    assert aggregated == {
        "rbac.authorization.k8s.io/aggregate-to-admin",
        "rbac.authorization.k8s.io/aggregate-to-edit",
        "rbac.authorization.k8s.io/aggregate-to-view",
    }
    everything = template(tools, "patchwarden", *ALL_ON)
    kinds = {d["kind"] for d in everything}
    assert kinds == default | {"ServiceMonitor", "PrometheusRule", "ConfigMap"}
    deploy = next(d for d in everything if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PATCHWARDEN_NAMESPACES"] == "a,b"
    # Serving namespaces, its own peering object (a cluster's: two such installs must not
    # pause each other); serving the whole cluster, `patchwarden`; or the one named.
    assert env["PATCHWARDEN_PEERING_NAME"] == "pw-patchwarden-patchwarden"

    def peering(*extra: str) -> str:
        deploy = next(
            d for d in template(tools, "patchwarden", *extra) if d["kind"] == "Deployment"
        )
        env = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        return str(next(e["value"] for e in env if e["name"] == "PATCHWARDEN_PEERING_NAME"))

    assert peering() == "patchwarden"
    assert peering("--set", "settings.peeringName=ours", *ALL_ON) == "ours"
    assert env["PATCHWARDEN_DEFAULT_SNAPSHOT_CLASS"] == "fast"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    dashboard = next(d for d in everything if d["kind"] == "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_values_schema_rejects_bad_values(tools: Path) -> None:
    out = run(
        tools / "helm",
        "template",
        "pw",
        CHART,
        "--kube-version",
        "1.34.4",
        "--set",
        "replicaCount=-1",
    )
    assert out.returncode != 0 and "replicaCount" in out.stderr
    out = run(
        tools / "helm", "template", "pw", CHART, "--kube-version", "1.34.4", "--set", "sttings.x=1"
    )
    assert out.returncode != 0 and "sttings" in out.stderr


@pytest.mark.parametrize("values", [[], ALL_ON], ids=["default", "all-on"])
def test_renderings_pass_server_side_dry_run(
    cluster: Cluster, namespace: str, tools: Path, values: list[str]
) -> None:
    cluster.install_crds(REPO / "tests" / "fixtures")
    cluster.install_crds()
    docs = template(tools, namespace, *values)
    out = run(
        tools / "kubectl",
        "--kubeconfig",
        cluster.kubeconfig,
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("(server dry run)") == len(docs)


def test_promtool_checks_and_unit_tests_the_alerting_rules(tools: Path) -> None:
    out = run(tools / "promtool", "check", "rules", CHART / "files" / "alerts.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    out = run(
        tools / "promtool",
        "test",
        "rules",
        *sorted((REPO / "tests" / "prometheus").glob("*_test.yaml")),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == 2


def sa_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (a TokenRequest token)."""
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h").strip()
    cfg = cluster.api.configuration
    ca = Path(cfg.ssl_ca_cert).read_bytes() if cfg.ssl_ca_cert else b""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": cfg.host,
                            "certificate-authority-data": base64.b64encode(ca).decode(),
                        },
                    }
                ],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "sa",
                        "context": {"cluster": "c", "user": account, "namespace": namespace},
                    }
                ],
            }
        )
    )
    return path


@pytest.mark.parametrize("scope", ["cluster", "namespaced"])
def test_the_operator_runs_with_exactly_the_charts_rbac(
    cluster: Cluster, namespace: str, tools: Path, tmp_path: Path, scope: str
) -> None:
    """A success and a rollback with exactly the chart's rights: one ClusterRole, or (scope
    namespaced) a Role in the served namespace and cluster-scoped reads only."""
    cluster.install_crds()
    release = f"rbac-{namespace}"
    # With the admission policies in force (bound to this namespace only): the operator's
    # ServiceAccount creates its UpdateRuns through them.
    only_here = f'{{"matchLabels": {{"kubernetes.io/metadata.name": "{namespace}"}}}}'
    scoped = ["--set", f"rbac.scope={scope}", "--set", f"watchNamespaces={{{namespace}}}"]
    rbac = [
        d
        for d in template(
            tools,
            namespace,
            "--set-json",
            f"admissionPolicy.namespaceSelector={only_here}",
            *scoped,
            release=release,
        )
        if d["kind"]
        in {
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        }
    ]
    assert ("Role" in {d["kind"] for d in rbac}) is (scope == "namespaced")
    out = run(
        tools / "kubectl",
        "--kubeconfig",
        cluster.kubeconfig,
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump_all(rbac),
    )
    assert out.returncode == 0, out.stderr
    account = next(d for d in rbac if d["kind"] == "ServiceAccount")["metadata"]["name"]
    try:
        kubeconfig = sa_kubeconfig(cluster, namespace, account, tmp_path / "sa-kubeconfig")

        def can(verb: str, resource: str, where: str) -> bool:
            answer = cluster.kubectl(
                "auth",
                "can-i",
                verb,
                resource,
                "-n",
                where,
                f"--as=system:serviceaccount:{namespace}:{account}",
                check=False,
            )
            return answer.strip() == "yes"

        assert not can("delete", "deployments", namespace)
        assert can("delete", "persistentvolumeclaims", namespace)
        # Namespaced: no right on the claims of a namespace it does not serve.
        assert can("delete", "persistentvolumeclaims", "kube-system") is (scope == "cluster")
        core, apps = client.CoreV1Api(cluster.api), client.AppsV1Api(cluster.api)
        workload(core, apps, namespace, name="ok")
        workload(core, apps, namespace, name="bad")
        with running_operator(cluster, namespace, tmp_path, KUBECONFIG=str(kubeconfig)) as op:
            create(cluster, namespace, system("ok", "SaaS", workload_name="ok"))
            create(
                cluster,
                namespace,
                system(
                    "bad",
                    "SaaS",
                    workload_name="bad",
                    job={"devcluster.patchwarden.io/outcome": "fail"},
                ),
            )
            ok = wait_run(cluster, namespace, "ok", {"Succeeded", "RolledBack", "Failed"})
            bad = wait_run(cluster, namespace, "bad", {"Succeeded", "RolledBack", "Failed"})
            log = op.output()
        assert ok["status"]["phase"] == "Succeeded", ok["status"]
        assert bad["status"]["phase"] == "RolledBack", bad["status"]
        assert "Forbidden" not in log and " 403" not in log, log[-3000:]
    finally:
        run(
            tools / "kubectl",
            "--kubeconfig",
            cluster.kubeconfig,
            "delete",
            "--ignore-not-found",
            "-f",
            "-",
            input=yaml.safe_dump_all(rbac),
        )


def test_helm_knows_its_kubernetes_version(tools: Path) -> None:
    """helm is stamped with its client-go's Kubernetes version as upstream builds it,
    so the chart (kubeVersion >= 1.28) renders without --kube-version."""
    out = run(tools / "helm", "template", "pw", CHART)
    assert out.returncode == 0, out.stderr
    assert "kind: Deployment" in out.stdout
