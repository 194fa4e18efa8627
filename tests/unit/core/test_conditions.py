"""Setting a condition moves its lastTransitionTime only when its status changes."""

from __future__ import annotations

from patchwarden.core import conditions as c


def test_the_transition_time_moves_only_with_the_status() -> None:
    first = c.set_condition([], c.READY, True, "Reconciled", "ok", generation=3, now="T1")
    assert first == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Reconciled",
            "message": "ok",
            "lastTransitionTime": "T1",
            "observedGeneration": 3,
        }
    ]
    same = c.set_condition(first, c.READY, True, "Other", "still ok", generation=4, now="T2")
    assert same[0]["lastTransitionTime"] == "T1" and same[0]["reason"] == "Other"
    flipped = c.set_condition(same, c.READY, False, "Broken", "no", generation=4, now="T3")
    assert flipped[0]["lastTransitionTime"] == "T3" and c.is_true(same, c.READY)
    assert not c.is_true(flipped, c.READY)


def test_transitions_name_what_changed() -> None:
    old = c.set_condition([], c.STALLED, False, "Reconciled", "", generation=None, now="T")
    new = c.set_condition(
        old, c.STALLED, True, "WorkloadNotFound", "gone", generation=None, now="U"
    )
    new = c.set_condition(new, c.READY, False, "WorkloadNotFound", "gone", generation=None, now="U")
    assert c.transitions(old, new) == [
        ("Stalled", "True", "WorkloadNotFound", "gone"),
        ("Ready", "False", "WorkloadNotFound", "gone"),
    ]
    assert c.transitions(new, new) == []
