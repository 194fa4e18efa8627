"""Pure builders: names, the update Job, the restored claim."""

from __future__ import annotations

from datetime import UTC, datetime

from patchwarden.api import ManagedSystemSpec
from patchwarden.core import builders


def spec() -> ManagedSystemSpec:
    return ManagedSystemSpec.model_validate(
        {
            "customer": "acme",
            "serviceModel": "SaaS",
            "workload": {"kind": "Deployment", "name": "app"},
            "updates": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "u",
                                "image": "x",
                                "env": [{"name": "PATCHWARDEN_TICKET", "value": "mine"}],
                            }
                        ]
                    }
                }
            },
        }
    )


def test_run_names_are_deterministic_per_system_and_window() -> None:
    start = datetime(2027, 1, 3, 22, 0, tzinfo=UTC)
    assert builders.run_name("shop-db", start) == "shop-db-202701032200"
    assert builders.run_name("shop-db", start) == builders.run_name("shop-db", start)


def test_long_names_are_shortened_with_a_hash_and_stay_unique() -> None:
    a = builders.job_name("x" * 80 + "a")
    b = builders.job_name("x" * 80 + "b")
    assert len(a) <= 63 and len(b) <= 63 and a != b


def test_label_values_are_valid_or_hashed() -> None:
    assert builders.label_value("shop.db-1") == "shop.db-1"
    hashed = builders.label_value("Ünïcode customer")
    assert hashed.startswith("h-") and len(hashed) <= 63


def test_update_job_carries_owner_labels_env_and_deadline() -> None:
    job = builders.update_job(
        run="r1",
        run_uid="u1",
        system="app",
        spec=spec(),
        classes=["security", "feature"],
        ticket="HD-1",
        deadline_seconds=1800,
        targets=[{"component": "postgres", "container": "db", "from": "16.3", "to": "16.4"}],
    )
    assert job["metadata"]["name"] == "r1-update"
    assert job["metadata"]["ownerReferences"][0] == {
        "apiVersion": "patchwarden.io/v1alpha1",
        "kind": "UpdateRun",
        "name": "r1",
        "uid": "u1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert job["spec"]["activeDeadlineSeconds"] == 1800
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"] == {builders.LABEL_SYSTEM: "app", builders.LABEL_RUN: "r1"}
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env == {
        "PATCHWARDEN_TICKET": "mine",
        "PATCHWARDEN_SYSTEM": "app",
        "PATCHWARDEN_RUN": "r1",
        "PATCHWARDEN_CLASSES": "feature,security",
        "PATCHWARDEN_TARGETS": '[{"component": "postgres", "container": "db", "from": "16.3", '
        '"to": "16.4"}]',
    }  # the template's own value wins
    assert pod["spec"]["restartPolicy"] == "Never"
    assert spec().updates.template["spec"]["containers"][0]["env"] == [  # type: ignore[index]
        {"name": "PATCHWARDEN_TICKET", "value": "mine"}
    ], "the spec is not mutated"


def test_restored_claim_keeps_the_spec_and_points_at_the_snapshot() -> None:
    original = {
        "metadata": {"name": "data", "labels": {"a": "b"}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "5Gi"}},
            "storageClassName": "fast",
            "volumeName": "pv-1",
        },
    }
    claim = builders.restored_claim(original, "snap-1")
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "5Gi"}},
        "storageClassName": "fast",
        "dataSource": {
            "apiGroup": "snapshot.storage.k8s.io",
            "kind": "VolumeSnapshot",
            "name": "snap-1",
        },
    }


def test_update_job_defaults_to_the_restricted_pod_security_profile() -> None:
    job = builders.update_job(
        run="r",
        run_uid="u",
        system="app",
        spec=spec(),
        classes=["security"],
        ticket=None,
        deadline_seconds=60,
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_the_template_may_say_otherwise() -> None:
    custom = ManagedSystemSpec.model_validate(
        {
            "customer": "acme",
            "serviceModel": "SaaS",
            "workload": {"kind": "Deployment", "name": "app"},
            "updates": {
                "template": {
                    "spec": {
                        "securityContext": {"runAsUser": 0, "runAsNonRoot": False},
                        "containers": [
                            {
                                "name": "u",
                                "image": "x",
                                "securityContext": {
                                    "privileged": True,
                                    "allowPrivilegeEscalation": True,
                                },
                            }
                        ],
                    }
                }
            },
        }
    )
    job = builders.update_job(
        run="r",
        run_uid="u",
        system="app",
        spec=custom,
        classes=["security"],
        ticket=None,
        deadline_seconds=60,
    )
    pod = job["spec"]["template"]["spec"]
    assert (
        pod["securityContext"]["runAsNonRoot"] is False and pod["securityContext"]["runAsUser"] == 0
    )
    container = pod["containers"][0]["securityContext"]
    assert container["privileged"] is True and container["allowPrivilegeEscalation"] is True


def test_the_run_records_the_hash_of_the_template_it_may_start() -> None:
    from datetime import UTC, datetime

    from patchwarden.api.run import Trigger
    from patchwarden.api.system import WindowRef

    window = WindowRef(
        name="w",
        start="2027-01-01T00:00:00Z",
        end="2027-01-01T01:00:00Z",
        cutoff="2027-01-01T00:30:00Z",
    )
    template = {"spec": {"containers": [{"name": "u", "image": "x"}]}}

    def run(t: dict[str, object] | None) -> dict[str, object]:
        return builders.update_run(
            system="s",
            system_uid="u",
            customer="c",
            trigger=Trigger.REQUEST,
            window=window,
            window_start=datetime(2027, 1, 1, tzinfo=UTC),
            classes=["security"],
            components=[],
            request="r1",
            template=t,
        )["spec"]

    spec = run(template)
    assert spec["templateHash"] == builders.template_hash(
        {"spec": {"containers": [{"image": "x", "name": "u"}]}}
    )
    assert spec["templateHash"].startswith("sha256:") and len(spec["templateHash"]) == 71
    assert spec["requestRef"] == {"name": "r1"}
    assert "templateHash" not in run(None)
