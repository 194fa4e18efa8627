"""The systems controller's reads, without a cluster."""

from __future__ import annotations

from typing import Any

from patchwarden.controllers.systems import Systems
from patchwarden.core.scheduler import Limits
from patchwarden.core.settings import Settings
from patchwarden.runtime.fleet import Fleet

LIMITS = Limits(10, 2, 3)


def test_one_list_per_namespace_answers_yes_and_a_no_is_confirmed_by_a_get() -> None:
    asked: list[str] = []

    class Kube:
        def names(self, kind: str, ns: str) -> list[str]:
            asked.append(f"list {kind} {ns}")
            return ["web", "db"] if kind == "Deployment" else ["data"]

        def get_workload(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
            asked.append(f"get {name}")
            return {"kind": kind} if name == "newer-than-the-list" else None

        def get_claim(self, ns: str, name: str) -> dict[str, Any] | None:
            asked.append(f"get {name}")
            return None

    app = Systems(Settings(), Kube(), lambda *_: None, Fleet(LIMITS), lambda *_: [])  # type: ignore[arg-type]
    assert app._exists("Deployment", "ns", "web")
    assert app._exists("Deployment", "ns", "db")
    assert app._exists("PersistentVolumeClaim", "ns", "data")
    assert asked == ["list Deployment ns", "list PersistentVolumeClaim ns"]
    assert app._exists("Deployment", "ns", "newer-than-the-list")
    assert not app._exists("Deployment", "ns", "gone")
    assert asked[2:] == ["get newer-than-the-list", "get gone"]
    assert app._exists("Deployment", "other", "web") and asked[-1] == "list Deployment other"
