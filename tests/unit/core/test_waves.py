"""Waves: which systems may take a release, from what the fleet shows of it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from patchwarden.api.catalog import LabelSelector, Rollout
from patchwarden.core.releases import Catalogs
from patchwarden.core.waves import build, matches, proactive_classes, wave_of

NOW = datetime(2027, 2, 10, 12, 0, tzinfo=UTC)
ROLLOUT = {
    "waves": [
        {"name": "canary", "selector": {"matchLabels": {"ring": "canary"}}, "soak": "24h"},
        {
            "name": "early",
            "selector": {
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["bronze"]}]
            },
        },
    ]
}
CATALOGS = Catalogs.of(
    [
        {
            "metadata": {"name": "tested"},
            "spec": {
                "rollout": ROLLOUT,
                "components": [
                    {
                        "name": "postgresql",
                        "releases": [
                            {
                                "version": v,
                                "image": f"pg:{v}",
                                "classes": ["security"],
                                "released": "2027-01-01T00:00:00Z",
                            }
                            for v in ("15.8", "15.10")
                        ],
                    }
                ],
            },
        }
    ]
)
PG = ("postgresql", "15.10")


def system(
    name: str, labels: dict[str, str], installed: str = "15.8", model: str = "SaaS"
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "labels": labels},
        "spec": {
            "serviceModel": model,
            "package": "basic" if model == "PaaS" else None,
            "components": [{"name": "postgresql", "container": "db", "track": "major"}],
        },
        "status": {
            "eligible": True,
            "components": [{"name": "postgresql", "inScope": True, "installed": installed}],
        },
    }


def run(
    system_name: str, phase: str, completed: str | None = None, **status: Any
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": f"{system_name}-run"},
        "spec": {
            "systemRef": {"name": system_name},
            "targets": [{"component": "postgresql", "to": "15.10"}],
        },
        "status": {
            "phase": phase,
            **({"completionTime": completed} if completed else {}),
            **status,
        },
    }


def ledger(fleet: list[dict[str, Any]], runs: list[dict[str, Any]], now: datetime = NOW) -> Any:
    return build(CATALOGS, fleet, runs, now)


CANARY, BRONZE, OTHER = {"ring": "canary"}, {"tier": "bronze"}, {"tier": "gold"}


def test_systems_are_in_their_first_matching_wave_or_the_rest() -> None:
    rollout = Rollout.model_validate(ROLLOUT)
    assert [wave_of(rollout, x) for x in (CANARY, BRONZE, OTHER, {**CANARY, **BRONZE})] == [
        0,
        1,
        2,
        0,
    ]
    assert matches(
        LabelSelector.model_validate(
            {"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}
        ),
        {},
    )
    assert not matches(
        LabelSelector.model_validate({"matchExpressions": [{"key": "x", "operator": "Exists"}]}), {}
    )
    assert matches(
        LabelSelector.model_validate(
            {"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["a"]}]}
        ),
        {"x": "b"},
    )


def test_a_release_goes_wave_by_wave_after_each_waves_systems_took_it_and_soaked() -> None:
    fleet = [system("c1", CANARY), system("b1", BRONZE), system("g1", OTHER)]
    ledger = build(CATALOGS, fleet, [], NOW)
    assert ledger.allows("tested", PG, CANARY) and not ledger.allows("tested", PG, BRONZE)
    assert ledger.why_not("tested", PG, OTHER) == (
        "postgresql 15.10 waits for wave canary (this system: wave rest): 1 systems still need it"
    )
    # c1 ran it (an hour ago): canary soaks for 24 h.
    fleet[0] = system("c1", CANARY, installed="15.10")
    done = [run("c1", "Succeeded", "2027-02-10T11:00:00Z")]
    ledger = build(CATALOGS, fleet, done, NOW)
    assert not ledger.allows("tested", PG, BRONZE)
    assert "soaking until 2027-02-11T11:00:00Z" in ledger.why_not("tested", PG, BRONZE)
    later = datetime(2027, 2, 11, 11, 0, tzinfo=UTC)
    ledger = build(CATALOGS, fleet, done, later)
    assert ledger.allows("tested", PG, BRONZE) and not ledger.allows("tested", PG, OTHER)
    # early has no soak: once b1 ran it, the rest may.
    fleet[1] = system("b1", BRONZE, installed="15.10")
    ledger = build(CATALOGS, fleet, [*done, run("b1", "Succeeded", "2027-02-11T11:00:00Z")], later)
    assert ledger.allows("tested", PG, OTHER)


def test_a_run_in_progress_holds_the_next_wave() -> None:
    fleet = [system("c1", CANARY, installed="15.10"), system("g1", OTHER)]
    ledger = build(CATALOGS, fleet, [run("c1", "Updating")], NOW)
    assert "1 runs in progress" in ledger.why_not("tested", PG, OTHER)


def test_a_failed_run_halts_the_release_for_everyone() -> None:
    fleet = [system("c1", CANARY), system("c2", CANARY), system("g1", OTHER)]
    ledger = build(CATALOGS, fleet, [run("c1", "RolledBack", "2027-02-10T11:00:00Z")], NOW)
    assert not ledger.allows("tested", PG, CANARY), "not even the rest of its wave"
    assert ledger.why_not("tested", PG, OTHER) == (
        "postgresql 15.10 is halted: run c1-run of ns/c1 ended RolledBack in wave canary; "
        "publish a fixed release"
    )
    stopped = run("c1", "Cancelled", "2027-02-10T11:00:00Z", gateStopped=True)
    assert build(CATALOGS, fleet, [stopped], NOW).allows("tested", PG, CANARY)
    unasked = run(
        "c1",
        "RolledBack",
        "2027-02-10T11:00:00Z",
        gateStopped=True,
        gateDecision="AlertGateUnreachable",
    )
    assert build(CATALOGS, fleet, [unasked], NOW).allows("tested", PG, CANARY), "not its fault"


def test_a_canary_rolled_back_by_its_own_alert_halts_the_release() -> None:
    """Issue 33, 1.3: the gate stopped the canary in Verifying because alerts about it
    fired, and it rolled back: exactly what a canary is for. It read "still need it"."""
    fleet = [system("c1", CANARY), system("g1", OTHER)]
    own = run(
        "c1", "RolledBack", "2027-02-10T11:00:00Z", gateStopped=True, gateDecision="AlertsFiring"
    )
    found = build(CATALOGS, fleet, [own], NOW)
    assert found.why_not("tested", PG, OTHER).startswith(
        "postgresql 15.10 is halted: run c1-run of ns/c1 ended RolledBack in wave canary"
    )


def test_the_rollout_is_recorded_so_deleting_or_pruning_its_runs_changes_nothing() -> None:
    """Issue 33, 1.3: the soak and the halt were derived from runs that still exist, so
    ``history.*Runs: 0`` or ``kubectl delete urun`` lifted a halt or skipped a soak."""
    fleet = [system("c1", CANARY, installed="15.10"), system("c2", CANARY), system("g1", OTHER)]
    runs = [
        run("c1", "Succeeded", "2027-02-10T11:00:00Z"),
        {
            **run("c2", "RolledBack", "2027-02-10T11:30:00Z"),
            "metadata": {"namespace": "ns", "name": "c2-run"},
        },
    ]
    first = build(CATALOGS, fleet, runs, NOW)
    assert first.records == {
        "tested": [
            {
                "component": "postgresql",
                "version": "15.10",
                "waves": [{"name": "canary", "succeededTime": "2027-02-10T11:00:00Z"}],
                "halted": {
                    "run": "c2-run",
                    "system": "ns/c2",
                    "wave": "canary",
                    "phase": "RolledBack",
                    "time": "2027-02-10T11:30:00Z",
                },
            }
        ]
    }
    # The runs are gone (pruned, or deleted by hand): the record keeps the halt.
    kept = build(CATALOGS, fleet, [], NOW, first.records)
    assert kept.records == first.records
    assert not kept.allows("tested", PG, CANARY)
    assert "is halted: run c2-run of ns/c2 ended RolledBack" in kept.why_not("tested", PG, OTHER)
    # Without the halt, the canary's success still soaks: the record keeps its time.
    soaking = [{**first.records["tested"][0], "halted": None}]
    del soaking[0]["halted"]
    fleet = [system("c1", CANARY, installed="15.10"), system("g1", OTHER)]
    soaked = build(CATALOGS, fleet, [], NOW, {"tested": soaking})
    assert "soaking until 2027-02-11T11:00:00Z" in soaked.why_not("tested", PG, OTHER)
    assert build(CATALOGS, fleet, [], NOW).allows("tested", PG, OTHER), "what it was without"
    # A halt edited by hand into something incomplete is ignored, not a crash.
    broken = [{**first.records["tested"][0], "halted": {"wave": "canary"}}]
    assert build(CATALOGS, fleet, [], NOW, {"tested": broken}).allows("tested", PG, CANARY)
    # A release no longer in the catalog is forgotten.
    gone = [{**soaking[0], "version": "15.99"}]
    assert build(CATALOGS, fleet, [], NOW, {"tested": gone}).records == {"tested": []}


def test_an_empty_wave_and_systems_updated_only_on_request_hold_nothing_back() -> None:
    fleet = [system("p1", CANARY, model="PaaS"), system("g1", OTHER)]  # PaaS basic: on request
    ledger = build(CATALOGS, fleet, [], NOW)
    assert ledger.allows("tested", PG, OTHER)
    assert build(Catalogs({}), fleet, [], NOW).allows("tested", PG, OTHER), "no waves: no hold"


def test_a_release_nobody_is_known_to_need_goes_to_the_first_wave_only() -> None:
    """A ledger built before any status showed an installed version (a catalog just
    changed, the operator just started): only the first wave may take the release."""
    empty = build(CATALOGS, [], [], NOW)
    assert empty.allows("tested", PG, CANARY) and not empty.allows("tested", PG, OTHER)
    assert "no system of the fleet is known to need it yet" in empty.why_not("tested", PG, OTHER)


def test_what_a_system_needs_follows_its_track_and_approval_not_its_status() -> None:
    """Needs come from the installed version and the catalog as it is now."""
    unapproved = system("c1", CANARY)
    unapproved["spec"]["updates"] = {"approveAfter": "2000h"}  # released 40 days ago
    fleet = [unapproved, system("g1", OTHER)]
    assert ledger(fleet, []).allows("tested", PG, OTHER), "the canary would not take it yet"
    off_track = system("c1", CANARY, installed="14.9")  # track major: 15.10 is not for it
    assert ledger([off_track, system("g1", OTHER)], []).allows("tested", PG, OTHER)


@pytest.mark.parametrize(
    ("spec", "classes"),
    [
        ({"serviceModel": "SaaS"}, {"security", "feature"}),
        ({"serviceModel": "SaaS", "updates": {"classes": ["security"]}}, {"security"}),
        ({"serviceModel": "PaaS", "package": "advanced"}, {"security"}),
        ({"serviceModel": "PaaS", "package": "basic"}, set()),
        ({"serviceModel": "IaaS"}, set()),
        ({"serviceModel": "Mainframe"}, set()),
    ],
)
def test_only_what_a_system_takes_unasked_counts(spec: dict[str, Any], classes: set[str]) -> None:
    assert proactive_classes(spec) == classes
