"""The crash matrix's own logic (tests/chaos.py, tests/faultproxy.py): which points a
sampled run tries, which requests count as writes."""

from __future__ import annotations

from tests.chaos import chosen, sample
from tests.faultproxy import counted


def test_the_sample_spreads_over_the_writes_alternating_the_modes() -> None:
    assert sample(40) == [(10, "after"), (20, "before"), (30, "after")]
    assert sample(2) == [(1, "after"), (2, "before")]


def test_a_matrix_row_can_be_named_to_run_again() -> None:
    spec = "succeeds:14:after, request:19:before,succeeds:3:before"
    assert chosen(spec, "succeeds") == [(14, "after"), (3, "before")]
    assert chosen(spec, "rolls-back") is None


def test_every_point_is_each_write_in_both_modes() -> None:
    assert sample(2, every=True) == [(1, "after"), (1, "before"), (2, "after"), (2, "before")]


def test_writes_are_counted_but_events_and_peering_keep_alives_are_not() -> None:
    assert counted("PATCH", "/apis/patchwarden.io/v1alpha1/namespaces/a/updateruns/r/status")
    assert counted("DELETE", "/api/v1/namespaces/a/persistentvolumeclaims/c")
    assert not counted("GET", "/api/v1/namespaces/a/persistentvolumeclaims/c")
    assert not counted("POST", "/api/v1/namespaces/a/events")
    assert not counted("POST", "/apis/events.k8s.io/v1/namespaces/a/events")
    assert not counted("PATCH", "/apis/kopf.dev/v1/clusterkopfpeerings/pw")
