"""The crash matrix's own logic (tests/chaos.py, tests/faultproxy.py): which points a
sampled run tries, which requests count as writes."""

from __future__ import annotations

from tests.chaos import sample
from tests.faultproxy import counted


def test_the_sample_spreads_over_the_writes_alternating_the_modes() -> None:
    assert sample(31) == [
        (1, "after"),
        (7, "before"),
        (13, "after"),
        (19, "before"),
        (25, "after"),
        (31, "before"),
    ]
    assert sample(3) == [(1, "after"), (2, "before"), (3, "after")]


def test_every_point_is_each_write_in_both_modes() -> None:
    assert sample(2, every=True) == [(1, "after"), (1, "before"), (2, "after"), (2, "before")]


def test_writes_are_counted_but_events_and_peering_keep_alives_are_not() -> None:
    assert counted("PATCH", "/apis/patchwarden.io/v1alpha1/namespaces/a/updateruns/r/status")
    assert counted("DELETE", "/api/v1/namespaces/a/persistentvolumeclaims/c")
    assert not counted("GET", "/api/v1/namespaces/a/persistentvolumeclaims/c")
    assert not counted("POST", "/api/v1/namespaces/a/events")
    assert not counted("POST", "/apis/events.k8s.io/v1/namespaces/a/events")
    assert not counted("PATCH", "/apis/kopf.dev/v1/clusterkopfpeerings/pw")
