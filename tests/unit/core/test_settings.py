"""The operator's settings, from PATCHWARDEN_* variables."""

from __future__ import annotations

import pytest

from patchwarden.core.settings import Settings


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHWARDEN_NAMESPACES", "a, b")
    monkeypatch.setenv("PATCHWARDEN_MAX_CONCURRENT_RUNS", "4")
    monkeypatch.setenv("PATCHWARDEN_DEFAULT_SNAPSHOT_CLASS", "csi")
    s = Settings.from_env()
    assert s.namespaces == ("a", "b") and s.max_concurrent_runs == 4
    assert s.default_snapshot_class == "csi"
    assert Settings(max_concurrent_runs=7).max_concurrent_runs == 7, "arguments win"


def test_a_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHWARDEN_MAX_CONCURRENT_RUNS", "0")
    with pytest.raises(ValueError, match="PATCHWARDEN_MAX_CONCURRENT_RUNS: Input should be"):
        Settings.from_env()
    monkeypatch.setenv("PATCHWARDEN_MAX_CONCURRENT_RUNS", "many")
    with pytest.raises(ValueError, match=r"PATCHWARDEN_MAX_CONCURRENT_RUNS: .*integer"):
        Settings.from_env()


def test_unset_namespaces_mean_the_whole_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATCHWARDEN_NAMESPACES", raising=False)
    assert Settings.from_env().namespaces == ()
