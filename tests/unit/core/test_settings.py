"""The operator's settings, from PATCHWARDEN_* variables."""

from __future__ import annotations

import pytest

from patchwarden.core.scheduler import Limit
from patchwarden.core.settings import Settings


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHWARDEN_NAMESPACES", "a, b")
    monkeypatch.setenv("PATCHWARDEN_MAX_CONCURRENT_RUNS", "4")
    monkeypatch.setenv("PATCHWARDEN_DEFAULT_SNAPSHOT_CLASS", "csi")
    s = Settings.from_env()
    assert s.namespaces == ("a", "b") and s.max_concurrent_runs == Limit(4)
    assert s.default_snapshot_class == "csi"
    assert Settings(max_concurrent_runs=7).max_concurrent_runs == Limit(7), "arguments win"
    monkeypatch.setenv("PATCHWARDEN_MAX_RUNS_PER_CUSTOMER", "25%")
    assert Settings.from_env().max_runs_per_customer == Limit(25, percent=True)
    assert Settings(max_concurrent_runs="5%").run_threads == 64 + 4, "a percentage: the cap"
    assert Settings(max_concurrent_runs=7).run_threads == 7 + 4


def test_a_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHWARDEN_MAX_CONCURRENT_RUNS", "0")
    with pytest.raises(ValueError, match=r"PATCHWARDEN_MAX_CONCURRENT_RUNS: .*must be at least 1"):
        Settings.from_env()
    monkeypatch.setenv("PATCHWARDEN_MAX_CONCURRENT_RUNS", "many")
    with pytest.raises(ValueError, match=r"PATCHWARDEN_MAX_CONCURRENT_RUNS: .*whole number"):
        Settings.from_env()
    monkeypatch.setenv("PATCHWARDEN_MAX_CONCURRENT_RUNS", "150%")
    with pytest.raises(ValueError, match=r"at most 100%"):
        Settings.from_env()


def test_unset_namespaces_mean_the_whole_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATCHWARDEN_NAMESPACES", raising=False)
    assert Settings.from_env().namespaces == ()


def test_every_setting_is_documented_in_operator_md() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "operator.md").read_text()
    missing = [f for f in Settings.model_fields if f"`PATCHWARDEN_{f.upper()}`" not in doc]
    assert missing == [], f"add these to the settings table of docs/operator.md: {missing}"
