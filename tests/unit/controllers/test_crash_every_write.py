"""The crash matrix in miniature (issue 35; the real one is tests/chaos.py on the local
cluster): the runs controller against the in-memory API, its process "killed" at every
write of a run — the write landed and its answer was lost (``after``), or it never landed
(``before``) — and a new controller, with nothing of the old one's memory, finishing the
run. Each must end exactly as the run without a crash did: same phase, same workload, same
claims, no object made twice. It takes a second; the cluster matrix takes an hour."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from patchwarden.controllers.runs import Runner
from patchwarden.core.settings import Settings
from patchwarden_dev.fakekube import FakeKube
from tests.unit.controllers.test_runs import NS, setup
from tests.unit.runs import NOW, RUN_SPEC

WRITES = (
    "create",
    "patch_status",
    "set_finalizer",
    "annotate",
    "delete",
    "create_snapshot",
    "delete_snapshot",
    "create_group_snapshot",
    "delete_group_snapshot",
    "label_claim",
    "replace_workload",
    "apply_images",
    "scale",
    "delete_pod",
    "delete_claim",
    "create_claim",
    "create_job",
    "suspend_job",
)
"""Every method of the API the controller writes with."""

TARGET = {
    "component": "app",
    "container": "a",
    "from": "1",
    "to": "2",
    "fromImage": "v1",
    "image": "v2",
    "classes": ["security"],
}


class Crash(Exception):
    """The process died here."""


class Crashing:
    """Counts the writes made through ``kube``; at write ``at`` the process dies, after the
    write landed (``after``) or before it was sent (``before``). ``at=None``: never."""

    def __init__(self, kube: FakeKube, at: int | None, mode: str) -> None:
        self.trace: list[str] = []
        self.at, self.mode = at, mode
        for name in WRITES:
            setattr(kube, name, self._counted(name, getattr(kube, name)))

    def _counted(self, name: str, write: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(write)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.trace.append(name)
            if len(self.trace) != self.at:
                return write(*args, **kwargs)
            self.at = None  # one crash per point
            if self.mode == "after":
                write(*args, **kwargs)
            raise Crash(f"killed at write {len(self.trace)} ({name}, {self.mode})")

        return counted


@dataclass(frozen=True)
class Outcome:
    phase: str
    image: str
    replicas: int
    claim_source: str | None
    objects: tuple[tuple[str, int], ...]
    recorded_image: str


def world(kube: FakeKube, job_result: str) -> None:
    """What the cluster's controllers (and people) do between two steps: the Deployment's
    rollout completes, the update Job ends with ``job_result`` — or, ``Deleted``, runs on
    while a person deletes the run."""
    deployment = kube.stored("deployments", NS, "app")
    replicas = deployment["spec"].get("replicas", 1)
    deployment["status"] = {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": replicas,
        "updatedReplicas": replicas,
        "availableReplicas": replicas,
    }
    job = kube.objects.get(("jobs", NS, "run-update"))
    if job is None:
        return
    if job_result == "Deleted":
        meta = kube.stored("updateruns", NS, "run")["metadata"]
        meta.setdefault("deletionTimestamp", "2027-02-10T12:00:00Z")
    elif not job.get("status"):
        job["status"] = {"conditions": [{"type": job_result, "status": "True", "message": "m"}]}


def play(
    job_result: str, targets: bool, at: int | None = None, mode: str = "after"
) -> tuple[Outcome, int]:
    """The run from Pending to its end (crashing at write ``at``); its outcome and how many
    writes it made. ``targets``: the run sets an image before its Job (else only the Job)."""
    kube, runner = setup()
    if targets:
        kube.stored("updateruns", NS, "run")["spec"] = {**RUN_SPEC, "targets": [TARGET]}
    crashing = Crashing(kube, at, mode)
    settings = Settings(run_poll_seconds=1, priority=1)
    for _ in range(80):
        world(kube, job_result)
        body = kube.get("updateruns", NS, "run")
        assert body is not None
        try:
            if runner.step(body) is None:
                break
        except Crash:
            runner = Runner(kube, settings, lambda *_: None, now=lambda: NOW)  # a new process
    else:
        raise AssertionError(f"the run never ended: {kube.stored('updateruns', NS, 'run')}")
    status = kube.stored("updateruns", NS, "run")["status"]
    deployment = kube.stored("deployments", NS, "app")["spec"]
    claim = kube.objects.get(("persistentvolumeclaims", NS, "data")) or {}
    [recorded] = [w["recorded"] for w in status["workloads"]]
    outcome = Outcome(
        phase=status["phase"],
        image=deployment["template"]["spec"]["containers"][0]["image"],
        replicas=deployment["replicas"],
        claim_source=(claim.get("spec", {}).get("dataSource") or {}).get("name"),
        objects=tuple(sorted(Counter(plural for plural, _, _ in kube.objects).items())),
        recorded_image=recorded["template"]["spec"]["containers"][0]["image"],
    )
    return outcome, len(crashing.trace)


@pytest.mark.parametrize("targets", [True, False], ids=["image-and-job", "job-only"])
@pytest.mark.parametrize(
    "job_result", ["Complete", "Failed", "Deleted"], ids=["succeeds", "rolls-back", "run-deleted"]
)
def test_a_crash_at_any_write_ends_the_run_as_if_there_had_been_none(
    job_result: str, targets: bool
) -> None:
    baseline, writes = play(job_result, targets)
    if job_result == "Complete":
        assert (baseline.phase, baseline.claim_source) == ("Succeeded", None)
        assert baseline.image == ("v2" if targets else "v1")
    else:
        assert (baseline.phase, baseline.image, baseline.claim_source) == (
            "RolledBack",
            "v1",
            "run-data",
        )
    assert baseline.recorded_image == "v1"
    assert writes >= 6, "the scenario reaches the Job and the end"
    wrong = {}
    for at in range(1, writes + 1):
        for mode in ("after", "before"):
            outcome, _ = play(job_result, targets, at, mode)
            if outcome != baseline:
                wrong[f"{at} {mode}"] = outcome
    assert not wrong, f"baseline {baseline}; differs: {wrong}"
