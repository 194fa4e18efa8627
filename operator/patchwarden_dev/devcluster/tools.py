"""Locate the upstream binaries (via ``hack/tools.sh``) and the repository."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from patchwarden_dev.devcluster.cluster import DevClusterError


def find_repo_root(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` that holds ``hack/tools.sh``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "hack" / "tools.sh").is_file():
            return candidate
    raise DevClusterError(
        f"no patchwarden checkout (hack/tools.sh) at or above {here}: "
        "run from the repository or set PATCHWARDEN_TOOLS_DIR"
    )


def resolve_tools(repo_root: Path | None = None, node: bool = False) -> Path:
    """The directory holding kubectl, kwokctl, kube-apiserver, etcd, helm ….

    ``PATCHWARDEN_TOOLS_DIR`` wins; otherwise ``hack/tools.sh`` resolves (and on
    first use builds) them, which it reports on stderr. ``node`` adds what the
    real-node cluster runs (kubelet, containerd, the CSI driver and sidecars).
    """
    given = os.environ.get("PATCHWARDEN_TOOLS_DIR")
    if given:
        return Path(given)
    root = repo_root or find_repo_root()
    proc = subprocess.run(
        [str(root / "hack" / "tools.sh"), *(["node"] if node else [])],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise DevClusterError(f"hack/tools.sh failed ({proc.returncode}); see its output above")
    return Path(proc.stdout.strip().splitlines()[-1])
