"""``python -m patchwarden.devcluster up|down|status|kubeconfig``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from patchwarden.devcluster.cluster import DevCluster, DevClusterError
from patchwarden.devcluster.tools import find_repo_root, resolve_tools


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m patchwarden.devcluster",
        description="The local dev cluster (no Docker needed).",
    )
    parser.add_argument("command", choices=["up", "down", "status", "kubeconfig"])
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where the cluster keeps its state (default: <repo>/.cluster)",
    )
    args = parser.parse_args(argv)
    try:
        root = find_repo_root()
        cluster = DevCluster(
            state_dir=args.state_dir or root / ".cluster", tools_dir=resolve_tools(root)
        )
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
