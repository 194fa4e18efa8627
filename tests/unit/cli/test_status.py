"""`patchwarden status` rows (pure)."""

from __future__ import annotations

from patchwarden.cli.status import rows


def test_rows_are_sorted_and_flattened() -> None:
    items = [
        {"metadata": {"namespace": "b", "name": "x"}, "spec": {"serviceModel": "IaaS"}},
        {
            "metadata": {"namespace": "a", "name": "y"},
            "spec": {"serviceModel": "PaaS", "package": "basic"},
            "status": {
                "eligible": True,
                "nextWindow": {"start": "2027-01-01T00:00:00Z"},
                "lastRun": {"name": "y-1", "result": "Failed", "needsAttention": True},
                "pendingUpdates": "security 1",
                "waves": [{"catalog": "tested", "wave": "canary"}],
                "conditions": [
                    {"type": "Ready", "status": "False"},
                    {"type": "ReleasesHeld", "status": "True", "reason": "ReleaseHalted"},
                    {"type": "Stalled", "status": "True", "reason": "RollbackFailed"},
                ],
            },
        },
    ]
    got = rows(items)
    assert [r["name"] for r in got] == ["y", "x"]
    assert got[0] == {
        "namespace": "a",
        "name": "y",
        "model": "PaaS",
        "package": "basic",
        "eligible": True,
        "nextWindow": "2027-01-01T00:00:00Z",
        "lastRun": "y-1",
        "result": "Failed",
        "pending": "security 1",
        "wave": "canary",
        "held": "ReleaseHalted",
        "ready": "False",
        "stalled": "RollbackFailed",
    }
    assert got[1]["ready"] == "Unknown" and got[1]["eligible"] is None
    assert got[1]["stalled"] == "" and got[1]["wave"] == "" and got[1]["held"] == ""
