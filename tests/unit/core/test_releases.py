"""Version order, tracks, images, approval delay, end of life and targets per contract."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from patchwarden.api.catalog import ReleaseCatalogSpec, VersionScheme
from patchwarden.api.system import ManagedSystemSpec
from patchwarden.core.policy import assess
from patchwarden.core.releases import (
    Catalogs,
    end_of_life_passed,
    in_track,
    pending_counts,
    split_image,
    states,
    targets,
    version_key,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
DEB, SEM = VersionScheme.DEBIAN, VersionScheme.SEMVER


@pytest.mark.parametrize(
    ("older", "newer", "scheme"),
    [
        ("15.8", "15.10", DEB),
        ("1.24.0-1+deb12u2", "1.24.0-1+deb12u10", DEB),
        ("1.24.0-1", "1.24.0-1+deb12u2", DEB),
        ("2.0~rc1", "2.0", DEB),
        ("9.9", "1:1.0", DEB),
        ("1.9.0", "1.10.0", SEM),
        ("1.0.0-rc.1", "1.0.0", SEM),
        ("1.0.0-alpha", "1.0.0-alpha.1", SEM),
    ],
)
def test_versions_compare_as_their_users_expect(
    older: str, newer: str, scheme: VersionScheme
) -> None:
    assert version_key(older, scheme) < version_key(newer, scheme)


def test_semver_ignores_build_metadata_and_refuses_what_is_not_semver() -> None:
    assert version_key("1.0.0+a", SEM) == version_key("1.0.0+b", SEM)
    with pytest.raises(ValueError):
        version_key("15.8", SEM)


@pytest.mark.parametrize(
    ("track", "installed", "candidate", "ok"),
    [
        ("major", "15.8", "15.10", True),
        ("major", "15.8", "16.1", False),
        ("minor", "1.24.0-1+deb12u2", "1.24.0-1+deb12u3", True),
        ("minor", "1.24.0-1", "1.26.0-1", False),
        ("any", "15.8", "17.0", True),
        (">=15, <17", "15.8", "16.4", True),
        (">=15, <17", "15.8", "17.0", False),
        ("!=16.2", "16.1", "16.2", False),
        ("major", "1:2.0", "2.1", False),  # a different epoch is a different series
    ],
)
def test_tracks(track: str, installed: str, candidate: str, ok: bool) -> None:
    assert in_track(track, installed, candidate, DEB) is ok


def test_semver_tracks() -> None:
    assert in_track("major", "1.2.3", "1.9.0-rc.1", SEM)
    assert not in_track("minor", "1.2.3", "1.3.0", SEM)


def test_image_references() -> None:
    digest = "sha256:" + "a" * 64
    assert split_image("postgres") == ("postgres", "latest", None)
    assert split_image("localhost:5000/pg:16.4") == ("localhost:5000/pg", "16.4", None)
    assert split_image(f"reg.example/pg:16.4@{digest}") == ("reg.example/pg", "16.4", digest)
    assert split_image(f"reg.example/pg@{digest}") == ("reg.example/pg", None, digest)


def _release(
    version: str, classes: list[str], released: str = "2026-01-01T00:00:00Z", **kw: Any
) -> dict[str, Any]:
    return {
        "version": version,
        "image": kw.pop("image", f"reg.example/pg:{version}"),
        "classes": classes,
        "released": released,
        **kw,
    }


def catalogs(
    *releases: dict[str, Any], name: str = "postgres", **more: list[dict[str, Any]]
) -> Catalogs:
    components = [{"name": name, "releases": list(releases)}]
    components += [{"name": k, "releases": v} for k, v in more.items()]
    return Catalogs.of([{"metadata": {"name": "tested"}, "spec": {"components": components}}])


def system(model: str = "SaaS", **updates: Any) -> ManagedSystemSpec:
    return ManagedSystemSpec.model_validate(
        {
            "customer": "acme",
            "serviceModel": model,
            **({"package": "basic"} if model == "PaaS" else {}),
            "workload": {"kind": "Deployment", "name": "db"},
            "updates": updates,
            "components": [
                {
                    "name": "postgres",
                    "container": "db",
                    "installedBy": "provider",
                    "source": "standard-repository",
                    "layer": "middleware",
                },
                {
                    "name": "shop",
                    "container": "app",
                    "installedBy": "customer",
                    "source": "other",
                    "layer": "application",
                },
            ],
        }
    )


def workload(
    db: str = "reg.example/pg:16.3", app: str = "reg.example/shop:1.0.0", name: str = "db"
) -> dict[str, Any]:
    """The system's workloads as ``states`` reads them: its one (``name``), by name."""
    containers = [{"name": "db", "image": db}, {"name": "app", "image": app}]
    return {name: {"spec": {"template": {"spec": {"containers": containers}}}}}


CATALOG = catalogs(
    _release("16.3", ["security"]),
    _release("16.4", ["security"], advisories=["CVE-2024-10979"]),
    _release("16.5", ["feature"]),
    _release("17.0", ["security", "feature"]),
    shop=[
        _release("1.0.0", ["feature"], image="reg.example/shop:1.0.0"),
        _release("1.1.0", ["security", "feature"], image="reg.example/shop:1.1.0"),
    ],
)


def test_installed_version_is_read_from_the_container_image() -> None:
    found = states(system(), CATALOG, workload(), NOW)
    assert [(s.component.name, s.installed) for s in found] == [
        ("postgres", "16.3"),
        ("shop", "1.0.0"),
    ]
    pg = found[0]
    assert (pg.security and pg.security.version, pg.feature and pg.feature.version) == (
        "16.4",
        "16.5",
    )
    assert pg.behind_since == datetime(2026, 1, 1, tzinfo=UTC)


def test_saas_targets_take_the_newest_release_of_either_class_in_the_track() -> None:
    found = states(system(), CATALOG, workload(), NOW)
    got = targets(found, ["security", "feature"])
    assert [(t.component, t.from_version, t.to_version, t.image) for t in got] == [
        ("postgres", "16.3", "16.5", "reg.example/pg:16.5"),
        ("shop", "1.0.0", "1.1.0", "reg.example/shop:1.1.0"),
    ]
    assert got[0].advisories == ["CVE-2024-10979"]  # brought by 16.4 on the way
    assert got[0].classes == ["feature", "security"]


def test_paas_targets_security_releases_of_provider_components_only() -> None:
    spec = system("PaaS")
    found = states(spec, CATALOG, workload(), NOW)
    got = targets(found, sorted(assess(spec).classes))
    assert [(t.component, t.to_version) for t in got] == [("postgres", "16.4")]
    assert not found[1].in_scope  # the customer's application is never a target
    assert pending_counts(found, ["security"]) == {"security": 1}


def test_a_release_younger_than_the_approval_delay_is_not_a_target() -> None:
    recent = catalogs(
        _release("16.3", ["security"]),
        _release("16.4", ["security"], released="2026-11-25T00:00:00Z"),
    )
    assert targets(states(system(approveAfter="168h"), recent, workload(), NOW), ["security"]) == []
    got = targets(states(system(approveAfter="48h"), recent, workload(), NOW), ["security"])
    assert [t.to_version for t in got] == ["16.4"]


def test_the_instant_a_release_becomes_a_target_or_an_end_of_life_passes_is_known() -> None:
    recent = catalogs(
        _release("16.3", ["security"], endOfLife="2026-12-31"),
        _release("16.4", ["security"], released="2026-11-25T00:00:00Z"),
        _release("17.1", ["feature"], released="2026-11-27T00:00:00Z"),  # off the major track
    )
    week = states(system(approveAfter="168h"), recent, workload(), NOW)[0]
    assert week.changes_at == datetime(2026, 12, 2, tzinfo=UTC), "16.4 approved a week after"
    now = states(system(), recent, workload(), NOW)[0]
    assert [k.version for k in now.newer] == ["16.4"]
    assert now.changes_at == datetime(2027, 1, 1, tzinfo=UTC), "16.3's end of life passes"
    settled = states(system(), catalogs(_release("16.3", ["security"])), workload(), NOW)[0]
    assert settled.changes_at is None, "nothing the clock alone would change"


def test_end_of_life() -> None:
    old = catalogs(
        _release("16.3", ["security"], endOfLife="2026-06-30"),
        _release("16.9", ["security"], endOfLife="2026-10-31"),
    )
    found = states(system(), old, workload(), NOW)
    assert targets(found, ["security"]) == []  # 16.9's end of life has passed: never a target
    assert end_of_life_passed(found[0], NOW.date())


def test_unknown_images_and_missing_containers_are_said_not_guessed() -> None:
    found = states(system(), CATALOG, workload(db="reg.example/pg:custom"), NOW)
    assert found[0].installed is None and "no release of postgres" in (found[0].problem or "")
    assert [t.component for t in targets(found, ["security"])] == ["shop"]  # not postgres
    lone = {"db": {"spec": {"template": {"spec": {"containers": [{"name": "db", "image": "x"}]}}}}}
    missing = states(system(), CATALOG, lone, NOW)[1]
    assert missing.stalls and "container app not found" in (missing.problem or "")


def test_digest_pinned_release_matches_its_digest_only() -> None:
    digest = "sha256:" + "b" * 64
    pinned = catalogs(
        _release("16.3", ["security"], image=f"reg.example/pg@{digest}"),
        _release("16.4", ["security"]),
    )
    ok = states(system(), pinned, workload(db=f"reg.example/pg:16.3@{digest}"), NOW)[0]
    assert ok.installed == "16.3"
    other = states(system(), pinned, workload(db="reg.example/pg@sha256:" + "c" * 64), NOW)[0]
    assert other.installed is None


def test_catalog_rules() -> None:
    base = {"name": "pg", "releases": [_release("16.3", ["security"])]}
    with pytest.raises(ValidationError, match="versions must be unique"):
        ReleaseCatalogSpec.model_validate(
            {"components": [{**base, "releases": [_release("1.0", ["security"])] * 2}]}
        )
    with pytest.raises(ValidationError, match="versionScheme"):
        ReleaseCatalogSpec.model_validate({"components": [{**base, "versionScheme": "SemVer"}]})
    with pytest.raises(ValidationError, match="endOfLife must not be before"):
        ReleaseCatalogSpec.model_validate(
            {
                "components": [
                    {
                        "name": "pg",
                        "releases": [_release("1.0", ["security"], endOfLife="2025-01-01")],
                    }
                ]
            }
        )
    bad = Catalogs.of([{"metadata": {"name": "broken"}, "spec": {"components": [{"name": "pg"}]}}])
    assert "releases" in bad.invalid["broken"] and not bad.specs
