"""``python -m patchwarden_dev.devcluster [--node kwok|real] up|down|status|kubeconfig``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from patchwarden_dev.devcluster.cluster import DevCluster, DevClusterError
from patchwarden_dev.devcluster.tools import find_repo_root, resolve_tools

STATE_DIRS = {"kwok": ".cluster", "real": ".cluster-node"}


def make_cluster(root: Path, node: str, state_dir: Path | None = None) -> DevCluster:
    """The dev cluster of profile ``node``: ``kwok`` (a faked node, the default) or
    ``real`` (kubelet, containerd, CSI hostpath; see realnode.py)."""
    state = state_dir or root / STATE_DIRS[node]
    if node == "real":
        from patchwarden_dev.devcluster.realnode import RealNodeCluster

        return RealNodeCluster(state_dir=state, tools_dir=resolve_tools(root, node=True), repo=root)
    return DevCluster(state_dir=state, tools_dir=resolve_tools(root))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m patchwarden_dev.devcluster",
        description="The local dev cluster (no Docker needed).",
    )
    parser.add_argument("command", choices=["up", "down", "status", "kubeconfig"])
    parser.add_argument(
        "--node",
        choices=sorted(STATE_DIRS),
        default=os.environ.get("PATCHWARDEN_NODE") or "kwok",
        help="kwok: a faked node (default); real: kubelet, containerd, CSI hostpath "
        "(root, Linux; see README)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where the cluster keeps its state (default: <repo>/.cluster, "
        "<repo>/.cluster-node for --node real)",
    )
    args = parser.parse_args(argv)
    try:
        root = find_repo_root()
        cluster = make_cluster(root, args.node, args.state_dir)
        if args.command == "up":
            started = time.monotonic()
            cluster.up()
            print(
                f"dev cluster ready in {time.monotonic() - started:.1f}s; "
                f"export KUBECONFIG={cluster.kubeconfig}"
            )
        elif args.command == "down":
            cluster.down()
            print("dev cluster removed")
        elif args.command == "status":
            healthy = cluster.healthy()
            print("running" if healthy else "not running")
            return 0 if healthy else 1
        else:
            print(cluster.kubeconfig)
    except DevClusterError as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
