"""The local dev cluster: real upstream Kubernetes binaries, kwok, no Docker.

Dev and test tooling only; the operator never imports it.
"""

from patchwarden_dev.devcluster.cleanup import release_finalizers
from patchwarden_dev.devcluster.cluster import DevCluster, DevClusterError
from patchwarden_dev.devcluster.tools import find_repo_root, resolve_tools

__all__ = [
    "DevCluster",
    "DevClusterError",
    "find_repo_root",
    "release_finalizers",
    "resolve_tools",
]
