"""A system of several workloads (``spec.workloads``): one run snapshots the claims of all,
sets each workload's images in the system's order (each ready before the next), verifies
all, and rolls back all of them when any step of any fails."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from patchwarden.api.run import Phase, RollbackStep, UpdateRunStatus
from patchwarden.api.system import ManagedSystemSpec
from patchwarden.cli.render import installs_text
from patchwarden.core import run as m
from patchwarden.core.releases import states
from patchwarden.core.run import Observed, Wait
from tests.unit.core.test_releases import CATALOG
from tests.unit.runs import NOW, RUN_SPEC, STAMP, TIMEOUTS, status, system

WORKLOADS = [
    {"kind": "StatefulSet", "name": "db", "role": "database"},
    {"kind": "Deployment", "name": "app", "role": "app"},
]
COMPONENTS = [
    {"name": "postgres", "container": "pg", "workload": "db"},
    {"name": "shop", "container": "web", "workload": "app"},
]
TARGETS = [
    {"component": "postgres", "container": "pg", "workload": "db", "from": "16.3", "to": "16.4"}
    | {"image": "pg:16.4", "fromImage": "pg:16.3"},
    {"component": "shop", "container": "web", "workload": "app", "from": "1.0.0", "to": "1.1.0"}
    | {"image": "shop:1.1.0", "fromImage": "shop:1.0.0"},
]
RUN = m.Run.of(
    {
        "metadata": {"namespace": "ns", "name": "run", "uid": "u1", "generation": 1},
        "spec": {**RUN_SPEC, "targets": TARGETS},
    }
)


def shop(**spec: Any) -> dict[str, Any]:
    """The system ``app`` of two workloads: the database ``db`` first, then ``app``."""
    body = system(workloads=WORKLOADS, **spec)
    del body["spec"]["workload"]
    return body


def db(replicas: int = 1, ready: bool = True, image: str = "pg:16.3") -> dict[str, Any]:
    return {
        "kind": "StatefulSet",
        "metadata": {"name": "db", "generation": 2, "resourceVersion": "3"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"spec": {"containers": [{"name": "pg", "image": image}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}}],
        },
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas if ready else 0,
        },
    }


def app(replicas: int = 2, ready: bool = True, image: str = "shop:1.0.0") -> dict[str, Any]:
    pod = {
        "containers": [{"name": "web", "image": image}],
        "volumes": [{"name": "f", "persistentVolumeClaim": {"claimName": "files"}}],
    }
    return {
        "kind": "Deployment",
        "metadata": {"name": "app", "generation": 2, "resourceVersion": "5"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {"spec": pod},
        },
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas if ready else 0,
        },
    }


def go(st: UpdateRunStatus, now: Any = NOW, **seen: Any) -> m.Transition:
    seen.setdefault("system", shop())
    seen.setdefault("workloads", {"db": db(), "app": app()})
    return m.advance(RUN, st, Observed(**seen), now, TIMEOUTS)


def decided(**fields: Any) -> UpdateRunStatus:
    """The run's workloads as it decided them in Pending (``fields``: each one's, by name)."""
    workloads = [
        {"kind": w["kind"], "name": w["name"], "role": w["role"], **fields.get(w["name"], {})}
        for w in WORKLOADS
    ]
    return UpdateRunStatus.model_validate({"workloads": workloads})


def recorded(**extra: Any) -> dict[str, Any]:
    return {
        name: {
            "recorded": {"kind": kind, "name": name, "replicas": n, "spec": body["spec"]}
            | {"template": body["spec"]["template"]}
        }
        | extra.get(name, {})
        for kind, name, n, body in (
            ("StatefulSet", "db", 1, db()),
            ("Deployment", "app", 2, app()),
        )
    }


def at(phase: Phase, since: str = STAMP, **fields: Any) -> UpdateRunStatus:
    workloads = fields.pop("workloads", decided().workloads)
    st = status(phase, since=since, **fields)
    st.workloads = copy.deepcopy(workloads)
    return st


CLAIMS = ("data-db-0", "files")
BY_PROVIDER = {"installedBy": "provider", "source": "standard-repository"}


def test_pending_decides_the_claims_and_replicas_of_every_workload_in_order() -> None:
    pods = ({"metadata": {"name": "app-x", "labels": {"app": "app"}}, "spec": {}},)
    out = go(UpdateRunStatus(), namespace_claims=CLAIMS, namespace_pods=pods)
    assert out.status.phase == Phase.SNAPSHOTTING, out.status.message
    assert out.status.claims == ["data-db-0", "files"]
    assert [(w.kind, w.name, w.role, w.start_replicas) for w in out.status.workloads] == [
        ("StatefulSet", "db", "database", 1),
        ("Deployment", "app", "app", 2),
    ]


def test_a_missing_workload_or_a_claim_mounted_outside_all_of_them_changes_nothing() -> None:
    gone = go(UpdateRunStatus(), workloads={"db": db(), "app": None}, namespace_claims=CLAIMS)
    assert gone.status.phase == Phase.FAILED
    assert gone.status.message == "Deployment app not found; nothing was changed"
    # A pod of db mounting app's claim is the system's own; a pod of neither is not.
    mine = {"metadata": {"name": "db-0", "labels": {"app": "db"}}}
    mine["spec"] = {"volumes": [{"persistentVolumeClaim": {"claimName": "files"}}]}
    other = copy.deepcopy(mine)
    other["metadata"] = {"name": "backup", "labels": {"app": "backup"}}
    ok = go(UpdateRunStatus(), namespace_claims=CLAIMS, namespace_pods=(mine,))
    assert ok.status.phase == Phase.SNAPSHOTTING
    shared = go(UpdateRunStatus(), namespace_claims=CLAIMS, namespace_pods=(mine, other))
    assert shared.status.phase == Phase.FAILED
    assert "claim files is also used by pod backup, outside StatefulSet db, Deployment app" in (
        shared.status.message or ""
    )


def test_stopped_stops_every_workload_at_once_and_starts_them_again_in_order() -> None:
    system_ = shop(backup={"consistency": "Stopped"})
    start = decided(db={"startReplicas": 1}, app={"startReplicas": 2})
    st = at(Phase.SNAPSHOTTING, claims=list(CLAIMS), workloads=start.workloads)
    claims = {c: {"metadata": {"name": c}, "spec": {}} for c in CLAIMS}
    seen: dict[str, Any] = {"system": system_, "claims": claims, "snapshot_class": "std"}
    stopping = go(st, **seen)
    assert stopping.actions == [
        m.ScaleToZero("StatefulSet", "db"),
        m.ScaleToZero("Deployment", "app"),
    ]
    assert [w.stopped_replicas for w in stopping.status.workloads] == [1, 2]
    waiting = go(stopping.status, workload_pods=1, **seen)
    assert waiting.wait == Wait.POLL and not waiting.status.snapshots
    at_rest = go(waiting.status, workload_pods=0, **seen)
    assert [r.claim for r in at_rest.status.snapshots] == list(CLAIMS)
    ready = at_rest.status.model_copy(deep=True)
    for record in ready.snapshots:
        record.ready_to_use = True
    snapshots = {r.snapshot: {"status": {"readyToUse": True}} for r in ready.snapshots}
    back = go(ready, snapshots=snapshots, **seen)
    assert back.status.phase == Phase.RECORDING
    assert back.actions[:2] == [
        m.ScaleBack("StatefulSet", "db", 1),
        m.ScaleBack("Deployment", "app", 2),
    ]
    assert "StatefulSet db scaled back to 1 replicas; Deployment app scaled back to 2" in (
        back.status.message or ""
    )


def test_recording_keeps_every_workload_as_it_was() -> None:
    out = go(at(Phase.RECORDING, claims=[], backupSkipped="none"))
    assert out.status.phase == Phase.UPDATING
    assert [w.recorded.kind if w.recorded else None for w in out.status.workloads] == [
        "StatefulSet",
        "Deployment",
    ]
    app_record = out.status.workloads[1].recorded
    assert app_record is not None and app_record.replicas == 2


def test_images_are_set_workload_by_workload_each_ready_before_the_next_then_the_job() -> None:
    st = at(Phase.UPDATING, workloads=decided(**recorded()).workloads)
    first = go(st)
    assert first.actions == [] and first.wait == Wait.NOW, "recorded before it is set"
    assert [c.workload for c in first.status.changes] == ["db"]
    setting = go(first.status)
    assert setting.actions == [m.SetImages("StatefulSet", "db", {"pg": "pg:16.4"}, "3")]
    rolling = go(first.status, workloads={"db": db(image="pg:16.4", ready=False), "app": app()})
    assert rolling.actions == [] and rolling.wait == Wait.POLL, "app waits for db"
    second = go(rolling.status, workloads={"db": db(image="pg:16.4"), "app": app()})
    assert second.actions == [] and second.wait == Wait.NOW
    assert second.status.summary == "postgres 16.3→16.4, shop 1.0.0→1.1.0"
    assert [c.workload for c in second.status.changes] == ["db", "app"]
    newer = {"db": db(image="pg:16.4"), "app": app(image="shop:1.1.0")}
    setting = go(second.status, workloads={**newer, "app": app()})
    assert setting.actions == [m.SetImages("Deployment", "app", {"web": "shop:1.1.0"}, "5")]
    job = go(second.status, workloads=newer)
    assert [type(a).__name__ for a in job.actions] == ["CreateJob"]


def test_a_failure_in_the_second_workload_rolls_back_both() -> None:
    done = {"db": {"imagesSet": True}, "app": {"imagesSet": True}}
    st = at(
        Phase.UPDATING,
        since="2027-02-10T11:40:00Z",
        workloads=decided(**recorded(**done)).workloads,
    )
    new = {"db": db(image="pg:16.4"), "app": app(image="shop:1.1.0", ready=False)}
    out = go(st, workloads=new)
    assert out.status.phase == Phase.ROLLING_BACK
    assert "the rollout of Deployment app with the new images did not complete" in (
        out.status.failure or ""
    )
    down = go(out.status)
    assert down.actions == [m.ScaleToZero("StatefulSet", "db"), m.ScaleToZero("Deployment", "app")]
    st = at(
        Phase.ROLLING_BACK,
        workloads=down.status.workloads,
        restore={"step": RollbackStep.RESTORE_WORKLOAD.value, "claims": list(CLAIMS)},
        claims=list(CLAIMS),
        snapshots=[{"claim": c, "snapshot": f"run-{c}", "readyToUse": True} for c in CLAIMS],
    )
    replaced = go(st, workloads={"db": db(replicas=0), "app": app(replicas=0)})
    assert [(a.kind, a.body["spec"]["replicas"]) for a in replaced.actions] == [
        ("StatefulSet", 1),
        ("Deployment", 2),
    ]
    halfway = go(replaced.status, workloads={"db": db(), "app": app(ready=False)})
    assert halfway.wait == Wait.POLL, "RolledBack only once both are ready"
    ended = go(replaced.status)
    assert ended.status.phase == Phase.ROLLED_BACK
    assert "restored 2 claims and the workloads (StatefulSet db, Deployment app)" in (
        ended.status.message or ""
    )


def test_the_bake_watches_every_workload() -> None:
    baking = at(
        Phase.BAKING,
        workloads=decided(**recorded()).workloads,
        bake={"startTime": STAMP, "until": "2027-02-10T12:02:00Z", "restarts": 0},
    )
    lost = go(baking, workloads={"db": db(ready=False), "app": app()})
    assert lost.status.phase == Phase.ROLLING_BACK
    assert lost.status.bake is not None
    assert lost.status.bake.reason == "StatefulSet db lost its readiness during the bake"
    restarted = go(baking, workload_restarts=2)
    assert "the containers of StatefulSet db, Deployment app restarted 2 times" in (
        restarted.status.failure or ""
    )


def test_a_run_an_older_operator_started_is_adopted_into_workloads() -> None:
    one = system()  # the older form: spec.workload
    legacy = UpdateRunStatus.model_validate(
        {
            "phase": "Updating",
            "phaseStartTime": STAMP,
            "recorded": {"kind": "Deployment", "name": "app", "replicas": 2, "template": {}},
            "imagesSet": True,
            "startReplicas": 2,
        }
    )
    seen = Observed(system=one, workloads={})
    assert m.reads(legacy) == frozenset({m.Read.WORKLOAD}), "the rollout is awaited"
    out = m.advance(RUN, legacy, seen, NOW + timedelta(minutes=1), TIMEOUTS)
    (only,) = out.status.workloads
    assert (only.kind, only.name, only.images_set, only.start_replicas) == (
        "Deployment",
        "app",
        True,
        2,
    )
    assert only.recorded is not None and only.recorded.replicas == 2
    assert out.status.recorded is None and out.status.images_set is None


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"workload": {"kind": "Deployment", "name": "a"}}, "not both"),
        ({"components": [{**COMPONENTS[0], "workload": None}]}, "names its workload"),
        ({"components": [{**COMPONENTS[0], "workload": "cache"}]}, "must name a workload"),
        ({"workloads": [*WORKLOADS, WORKLOADS[0]]}, "workload names must be unique"),
    ],
)
def test_the_spec_says_which_workload_each_component_is_in(
    spec: dict[str, Any], error: str
) -> None:
    base = {**shop()["spec"], "components": COMPONENTS, **spec}
    base["components"] = [
        {k: v for k, v in c.items() if v is not None} | BY_PROVIDER for c in base["components"]
    ]
    with pytest.raises(ValidationError, match=error):
        ManagedSystemSpec.model_validate(base)


def test_each_component_is_read_from_its_own_workloads_container() -> None:
    components = [c | BY_PROVIDER for c in COMPONENTS]
    spec = ManagedSystemSpec.model_validate({**shop()["spec"], "components": components})
    pod = {"containers": [{"name": "pg", "image": "reg.example/pg:16.3"}]}
    images = {"db": {"spec": {"template": {"spec": pod}}}, "app": None}
    pg, web = states(spec, CATALOG, images, NOW)
    assert (pg.workload, pg.installed) == ("db", "16.3")
    assert (web.workload, web.problem) == ("app", "Deployment app not found")


def test_the_plan_groups_what_a_window_installs_by_workload() -> None:
    assert (
        installs_text(TARGETS, by_workload=True) == "db: postgres 16.3→16.4; app: shop 1.0.0→1.1.0"
    )
    assert installs_text(TARGETS, by_workload=False) == "postgres 16.3→16.4, shop 1.0.0→1.1.0"
