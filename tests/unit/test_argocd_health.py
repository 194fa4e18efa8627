"""The Argo CD health checks of docs/argocd/*.lua, run in a real Lua runtime (lupa)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lupa import LuaRuntime

DOCS = Path(__file__).resolve().parents[2] / "docs" / "argocd"


def health(script: str, obj: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)

    def table(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: table(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([table(v) for v in value])
        return value

    fn = lua.eval(f"function(obj) {(DOCS / script).read_text()} end")
    result = fn(table(obj))
    return str(result["status"]), str(result["message"])


def cond(type_: str, status: str, message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "message": message}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"metadata": {"generation": 1}}, "Progressing"),
        (
            {
                "metadata": {"generation": 2},
                "status": {"observedGeneration": 1, "conditions": [cond("Ready", "True")]},
            },
            "Progressing",
        ),
        (
            {
                "metadata": {"generation": 1},
                "status": {
                    "observedGeneration": 1,
                    "eligibilityReason": "SaaS: …",
                    "conditions": [cond("Stalled", "False"), cond("Ready", "True")],
                },
            },
            "Healthy",
        ),
        (
            {
                "metadata": {"generation": 1},
                "status": {
                    "observedGeneration": 1,
                    "conditions": [
                        cond("Stalled", "True", "Deployment app not found"),
                        cond("Ready", "False"),
                    ],
                },
            },
            "Degraded",
        ),
    ],
)
def test_managed_system_health(obj: dict[str, Any], expected: str) -> None:
    status, message = health("managedsystem.lua", obj)
    assert status == expected
    if expected == "Degraded":
        assert message == "Deployment app not found"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (None, "Progressing"),
        ("Pending", "Progressing"),
        ("Accepted", "Healthy"),
        ("Running", "Progressing"),
        ("Succeeded", "Healthy"),
        ("Completed", "Healthy"),  # written by earlier versions
        ("RolledBack", "Degraded"),
        ("Failed", "Degraded"),
        ("Rejected", "Degraded"),
    ],
)
def test_update_request_health(state: str | None, expected: str) -> None:
    obj: dict[str, Any] = {"metadata": {}}
    if state:
        obj["status"] = {"state": state, "message": f"it is {state}"}
    assert health("updaterequest.lua", obj)[0] == expected


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (None, "Progressing"),
        ("Snapshotting", "Progressing"),
        ("RollingBack", "Progressing"),
        ("Succeeded", "Healthy"),
        ("RolledBack", "Degraded"),
        ("Failed", "Degraded"),
        ("Cancelled", "Healthy"),
    ],
)
def test_update_run_health(phase: str | None, expected: str) -> None:
    obj: dict[str, Any] = {"metadata": {}}
    if phase:
        obj["status"] = {"phase": phase, "message": "m"}
    assert health("updaterun.lua", obj)[0] == expected
