"""Which claims hold a system's data: found from the claims that exist, never from a
replica count the operator changes (issue 31)."""

from __future__ import annotations

from typing import Any

import pytest

from patchwarden.api.system import ManagedSystemSpec
from patchwarden.core import claims


def statefulset(
    replicas: int, templates: tuple[str, ...] = ("data",), **spec: Any
) -> dict[str, Any]:
    return {
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {}},
            "volumeClaimTemplates": [{"metadata": {"name": t}} for t in templates],
            **spec,
        },
    }


def deployment(*mounted: str) -> dict[str, Any]:
    volumes = [
        {"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(mounted)
    ]
    return {
        "kind": "Deployment",
        "metadata": {"name": "app"},
        "spec": {"template": {"spec": {"volumes": [*volumes, {"name": "tmp", "emptyDir": {}}]}}},
    }


SIX = tuple(f"{t}-db-{i}" for t in ("data", "wal") for i in range(3))


def test_a_statefulsets_claims_are_every_ordinal_of_every_template() -> None:
    found = claims.of_workload(statefulset(3, ("data", "wal")), SIX)
    assert found == claims.Claims(names=tuple(sorted(SIX)))


def test_a_statefulset_scaled_to_zero_still_has_its_claims() -> None:
    """The bug: read after a Stopped backup scaled it to zero, it had none."""
    assert claims.of_workload(statefulset(0, ("data", "wal")), SIX).names == tuple(sorted(SIX))


def test_claims_kept_after_a_scale_down_are_the_statefulsets_too() -> None:
    found = claims.of_workload(statefulset(1), ("data-db-0", "data-db-1", "data-db-2"))
    assert found.names == ("data-db-0", "data-db-1", "data-db-2")


def test_only_the_statefulset_controllers_names_are_taken() -> None:
    existing = (
        "data-db-0",
        "data-db-01",
        "data-db-backup-0",
        "data-dbx-1",
        "xdata-db-2",
        "data-db-",
    )
    assert claims.of_workload(statefulset(1), existing).names == ("data-db-0",)


def test_ordinals_start_where_the_statefulset_says() -> None:
    sts = statefulset(2, ordinals={"start": 5})
    assert claims.of_workload(sts, ("data-db-5", "data-db-6")).names == ("data-db-5", "data-db-6")
    missing = claims.of_workload(sts, ("data-db-0", "data-db-1"))
    assert missing.problem == (
        "PersistentVolumeClaims data-db-5, data-db-6 of StatefulSet db not found; "
        "nothing was changed"
    )


def test_a_claim_its_replicas_need_and_that_does_not_exist_is_a_problem() -> None:
    found = claims.of_workload(statefulset(3), ("data-db-0", "data-db-2"))
    assert found.names == ()
    assert found.problem == (
        "PersistentVolumeClaim data-db-1 of StatefulSet db not found; nothing was changed"
    )


def test_templates_without_any_claim_are_a_problem_not_an_empty_backup() -> None:
    found = claims.of_workload(statefulset(0, ("data", "wal")), ("other",))
    assert found.problem == (
        "StatefulSet db has volumeClaimTemplates (data, wal) but none of their claims exists, "
        "so there is nothing to back up and a rollback could restore nothing; nothing was "
        "changed"
    )


def test_a_deployments_claims_are_the_ones_it_mounts() -> None:
    assert claims.of_workload(deployment("b", "a"), ("a", "b", "c")).names == ("a", "b")
    assert claims.of_workload(deployment(), ("a",)) == claims.Claims()
    assert claims.of_workload(deployment("a", "gone"), ("a",)).problem == (
        "PersistentVolumeClaim gone of Deployment app not found; nothing was changed"
    )


def test_a_statefulset_mounting_a_claim_besides_its_templates_has_both() -> None:
    sts = statefulset(1)
    sts["spec"]["template"]["spec"]["volumes"] = [
        {"name": "shared", "persistentVolumeClaim": {"claimName": "config"}}
    ]
    assert claims.of_workload(sts, ("config", "data-db-0")).names == ("config", "data-db-0")


SPEC = {"customer": "c", "serviceModel": "SaaS", "workload": {"kind": "StatefulSet", "name": "db"}}


@pytest.mark.parametrize(
    ("volumes", "existing", "names", "problem"),
    [
        (["wal-db-0"], SIX, ("wal-db-0",), None),
        (
            ["wal-db-0", "nope"],
            SIX,
            (),
            "PersistentVolumeClaim nope listed in spec.volumes not found; nothing was changed",
        ),
        ([], SIX, tuple(sorted(SIX)), None),
    ],
)
def test_the_systems_volumes_choose_among_them(
    volumes: list[str], existing: tuple[str, ...], names: tuple[str, ...], problem: str | None
) -> None:
    spec = ManagedSystemSpec.model_validate({**SPEC, "volumes": volumes})
    found = claims.of_system(spec, [statefulset(3, ("data", "wal"))], existing)
    assert (found.names, found.problem) == (names, problem)


def test_a_statefulset_that_deletes_its_claims_when_scaled_down_is_refused() -> None:
    """Scaled to zero (a Stopped backup, any rollback), its controller would delete every
    claim before the rollback could keep them."""
    policy = {"persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}}
    spec = ManagedSystemSpec.model_validate(SPEC)
    found = claims.of_system(
        spec, [statefulset(3, **policy)], ("data-db-0", "data-db-1", "data-db-2")
    )
    assert found.problem is not None and found.names == ()
    assert "persistentVolumeClaimRetentionPolicy.whenScaled: Delete" in found.problem
    assert found.problem.endswith("set whenScaled: Retain (the default); nothing was changed")
    retained = {
        "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Retain", "whenDeleted": "Delete"}
    }
    assert claims.of_system(spec, [statefulset(1, **retained)], ("data-db-0",)).names == (
        "data-db-0",
    )
