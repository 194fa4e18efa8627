"""The Pod Security Standards check, case by case (the cluster test compares each verdict
with the API server's Pod Security admission)."""

from __future__ import annotations

from typing import Any

import pytest

from patchwarden.core.podsecurity import Level, violations
from tests.podsecurity_cases import CASES


@pytest.mark.parametrize(
    ("name", "spec", "baseline", "restricted", "field"), CASES, ids=[c[0] for c in CASES]
)
def test_each_case(
    name: str, spec: dict[str, Any], baseline: bool, restricted: bool, field: str
) -> None:
    assert (violations(spec, Level.BASELINE) == []) is baseline, violations(spec, Level.BASELINE)
    found = violations(spec, Level.RESTRICTED)
    assert (found == []) is restricted, found
    if field:
        assert any(field in v for v in found), found


def test_apparmor_annotations_of_the_old_form() -> None:
    spec = {"containers": [{"name": "c", "image": "x"}]}
    bad = {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}
    assert violations(spec, Level.BASELINE, bad) == [
        "metadata.annotations[container.apparmor.security.beta.kubernetes.io/c]: "
        "AppArmor profile unconfined is not allowed"
    ]
    good = {"container.apparmor.security.beta.kubernetes.io/c": "runtime/default"}
    assert violations(spec, Level.BASELINE, good) == []
