"""`make demo` (python -m patchwarden_dev.demo) ends with the prescribed outcomes."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO, Cluster


def test_the_demo_ends_with_every_prescribed_outcome(cluster: Cluster) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "patchwarden_dev.demo",
            "--examples",
            str(REPO / "examples"),
            "--timeout",
            "120",
        ],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    print(proc.stdout)  # the table, for the log
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every outcome is the prescribed one" in proc.stdout
    for name in ("shop-db", "crm-cache", "files", "build-vm", "legacy-erp", "mail"):
        assert name in proc.stdout
    assert "RolledBack" in proc.stdout
    # What each successful run changed, from the catalog (examples/02-release-catalog.yaml).
    for change in ("postgresql 15.8→15.10", "redis 7.2.5→7.2.6", "nextcloud 32.0.1→32.0.2"):
        assert change in proc.stdout
