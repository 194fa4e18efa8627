"""Benchmark: fleet sync — how long the operator takes to reconcile N systems.

    make bench                      # 2,000 systems in 50 namespaces
    .venv/bin/python bench/bench.py --systems 500

N ManagedSystems (SaaS, a weekly window) are created before the operator
starts; the figure is the time from the operator's start until every system's
status shows ``observedGeneration == metadata.generation`` and a next window.
Also reported: the operator's peak RSS, the API requests per system counted by
the API server (``apiserver_request_total``, minus the benchmark's own), and
the raw rate at which this machine's API server accepts the same status
writes from a plain client at the same parallelism.

The window-storm part of the issue is not written yet (see the issue note).
Prints a table and writes bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "operator"))

from patchwarden.devcluster import DevCluster, resolve_tools  # noqa: E402

GROUP, VERSION = "patchwarden.io", "v1alpha1"


def system(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ManagedSystem",
        "metadata": {"name": name},
        "spec": {
            "customer": f"c{hash(name) % 100}",
            "serviceModel": "SaaS",
            "workload": {"kind": "Deployment", "name": name},
            "backup": {"required": False},
            "updates": {"template": {"spec": {"containers": [{"name": "u", "image": "x"}]}}},
            "maintenance": {
                "timeZone": "Europe/Berlin",
                "windows": [{"name": "sunday", "cron": "0 23 * * 0", "duration": "4h"}],
            },
        },
    }


def server_requests(dev: DevCluster) -> float:
    text = dev.kubectl("get", "--raw", "/metrics")
    return sum(
        float(m.group(1))
        for m in re.finditer(r"^apiserver_request_total\{[^}]*\} (\S+)$", text, re.M)
    )


def synced(custom: client.CustomObjectsApi, namespaces: list[str]) -> tuple[int, int]:
    done = total = 0
    for ns in namespaces:
        for item in custom.list_namespaced_custom_object(GROUP, VERSION, ns, "managedsystems")[
            "items"
        ]:
            total += 1
            status = item.get("status") or {}
            if status.get("observedGeneration") == item["metadata"]["generation"] and (
                "nextWindow" in status or status.get("conditions")
            ):
                done += 1
    return done, total


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=2000)
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    dev = DevCluster(state_dir=REPO / ".cluster", tools_dir=resolve_tools(REPO))
    dev.up()
    dev.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    api = config.new_client_from_config(str(dev.kubeconfig))
    api.configuration.connection_pool_maxsize = args.parallelism * 2
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    run_id = uuid.uuid4().hex[:6]
    namespaces = [f"bench-{run_id}-{i}" for i in range(args.namespaces)]
    for ns in namespaces:
        core.create_namespace({"metadata": {"name": ns}})
    names = [(namespaces[i % len(namespaces)], f"s{i}") for i in range(args.systems)]

    started = time.monotonic()
    with ThreadPoolExecutor(args.parallelism) as pool:
        list(
            pool.map(
                lambda k: custom.create_namespaced_custom_object(
                    GROUP, VERSION, k[0], "managedsystems", system(k[1])
                ),
                names,
            )
        )
    create_seconds = time.monotonic() - started

    # The raw limit: the same status writes from a plain client at the same parallelism.
    status = {"status": {"observedGeneration": 1, "eligible": True}}
    started = time.monotonic()
    with ThreadPoolExecutor(args.parallelism) as pool:
        list(
            pool.map(
                lambda k: custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, k[0], "managedsystems", k[1], status
                ),
                names,
            )
        )
    raw_seconds = time.monotonic() - started
    for ns in namespaces:  # let the operator start from systems without status
        for item in custom.list_namespaced_custom_object(GROUP, VERSION, ns, "managedsystems")[
            "items"
        ]:
            custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, "managedsystems", item["metadata"]["name"], {"status": None}
            )

    before = server_requests(dev)
    env = {**os.environ, "KUBECONFIG": str(dev.kubeconfig), "PATCHWARDEN_METRICS_PORT": "0"}
    cmd = [sys.executable, "-m", "patchwarden", "run"]
    for ns in namespaces:
        cmd += ["-n", ns]
    log = (REPO / "bench" / "operator.log").open("wb")
    operator = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    started, polls, done, sync_seconds = time.monotonic(), 0, 0, None
    try:
        while time.monotonic() - started < args.timeout:
            done, total = synced(custom, namespaces)
            polls += len(namespaces)
            if done == total == args.systems:
                sync_seconds = time.monotonic() - started
                break
            time.sleep(1)
        rss = peak_rss_mb(operator.pid)
    finally:
        operator.terminate()
        operator.wait(timeout=60)
    requests = server_requests(dev) - before - polls - 2

    results = {
        "inputs": {
            "systems": args.systems,
            "namespaces": args.namespaces,
            "parallelism": args.parallelism,
        },
        "fleet_sync_seconds": sync_seconds,
        "systems_synced": done,
        "operator_peak_rss_mb": round(rss, 1),
        "api_requests_per_system_server_side": round(requests / args.systems, 2),
        "raw_status_writes_seconds": round(raw_seconds, 2),
        "raw_status_writes_per_second": round(args.systems / raw_seconds, 1),
        "create_seconds": round(create_seconds, 2),
        "ratio_operator_to_raw": round(sync_seconds / raw_seconds, 2) if sync_seconds else None,
        "machine": {
            "cores": os.cpu_count(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(),
        },
    }
    (REPO / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    for ns in namespaces:
        subprocess.run(
            [
                str(dev.tools_dir / "kubectl"),
                "--kubeconfig",
                str(dev.kubeconfig),
                "delete",
                "ns",
                ns,
                "--wait=false",
            ],
            capture_output=True,
            check=False,
        )
    return 0 if sync_seconds is not None else 1


if __name__ == "__main__":
    sys.exit(main())
