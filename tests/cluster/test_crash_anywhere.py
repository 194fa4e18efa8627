"""Crash anywhere, lose nothing (issue 35, part 1).

For each scenario — a run that succeeds, one whose Job fails and is rolled back (two
claims), one deleted mid-update, one serving an UpdateRequest — the scenario runs once
without a crash (its baseline: the outcome, and how many writes it takes), then once per
crash point: the operator behind the fault proxy is SIGKILLed at its ``n``-th write,
which landed (``after``) or did not (``before``), and a new operator finishes. Each
point must leave exactly what the baseline left (tests/chaos.py: ``Outcome``), and no
claim may go before its failed-state snapshot is ready.

``make test`` runs a sample of the points (tests/chaos.py: ``sample``, three spread
over each scenario's writes, alternating the modes); ``make chaos`` runs every point of
every scenario (``PATCHWARDEN_CHAOS=all``) and writes the matrix to
``bench/results-chaos.json`` (the reference: ``bench/reference/chaos.json``). One row
again: ``PATCHWARDEN_CHAOS=succeeds:14:after pytest tests/cluster/test_crash_anywhere.py
-k succeeds``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.chaos import (
    SCENARIOS,
    Point,
    chosen,
    compare,
    matrix_text,
    run_point,
    sample,
    write_matrix,
)
from tests.conftest import REPO, Cluster, _fresh_namespace
from tests.faultproxy import Mode

pytestmark = pytest.mark.usefixtures("crds")

CHAOS = os.environ.get("PATCHWARDEN_CHAOS", "")
EVERY = CHAOS == "all"
JOBS = int(os.environ.get("PATCHWARDEN_CHAOS_JOBS", "3"))
RESULTS = REPO / "bench" / "results-chaos.json"
MATRIX: list[Point] = []


def _record(points: list[Point]) -> None:
    """Add to the matrix and write it at once (a long ``make chaos`` stopped midway keeps
    what it found)."""
    MATRIX.extend(points)
    write_matrix(
        RESULTS,
        MATRIX,
        {"every_point": EVERY, "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    )


@pytest.fixture(scope="module", autouse=True)
def matrix() -> Iterator[None]:
    yield
    if MATRIX:
        print("\n" + matrix_text(MATRIX))


def _point(cluster: Cluster, root: Path, scenario: str, n: int | None, mode: Mode) -> Point:
    directory = root / f"{scenario}-{n or 0}-{mode}"
    directory.mkdir()
    namespaces = _fresh_namespace(cluster, "chaos")
    ns = next(namespaces)
    try:
        return run_point(cluster, ns, directory, SCENARIOS[scenario], n, mode)
    finally:
        namespaces.close()


@pytest.mark.timeout(0 if EVERY else 1500)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_crash_at_any_write_ends_as_without_it(
    cluster: Cluster, tmp_path: Path, scenario: str
) -> None:
    baseline = _point(cluster, tmp_path, scenario, None, "after")
    _record([baseline])
    assert baseline.ok, matrix_text([baseline])
    assert baseline.writes > 2, f"{scenario} took only {baseline.writes} writes"
    points = (None if EVERY else chosen(CHAOS, scenario)) or sample(baseline.writes, every=EVERY)
    with ThreadPoolExecutor(JOBS) as pool:
        found = list(
            pool.map(lambda p: compare(_point(cluster, tmp_path, scenario, *p), baseline), points)
        )
    _record(found)
    bad = [p for p in found if not p.ok]
    assert not bad, matrix_text([baseline, *bad])
