"""Shared test helpers: waiting with a deadline, never a bare sleep."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> T:
    """Call ``probe`` until it returns something truthy, or fail after ``timeout`` seconds.

    The failure message says what was awaited and what ``probe`` saw last.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; last saw {last!r}"
            )
        time.sleep(interval)


def holds_for(
    probe: Callable[[], bool], *, duration: float, what: str, interval: float = 0.2
) -> None:
    """Assert that ``probe`` stays true for ``duration`` seconds (a bounded negative check)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert probe(), f"{what} stopped holding before {duration}s passed"
        time.sleep(interval)


def kubectl_plugin(
    cluster: Any, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``kubectl patchwarden ARGS`` as a user runs it: kubectl finds the plugin
    ``kubectl-patchwarden`` on the PATH (the venv's, where the package installs it)."""
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    out = subprocess.run(
        [str(cluster.tools / "kubectl"), "patchwarden", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out
