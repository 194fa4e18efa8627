"""What a real node does to the machine, and how it is undone.

A kubelet and containerd leave traces outside their state directory: pod
cgroups (``kubepods``), the CNI bridge, ``net.ipv4.ip_forward`` (the bridge
plugin turns it on when it is a gateway), bind mounts (the kubelet mounts its
root directory ``rshared``; volumes; network namespaces), processes (shims and
containers outlive containerd) and ``/var/log/containers`` links.
:func:`restore` removes them; :func:`snapshot` records what a test compares
before ``up`` and after ``down``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

CGROUPS = Path("/sys/fs/cgroup")
OUR_CGROUPS = ("kubepods", "kubepods.slice", "k8s.io")
"""Top-level cgroups the kubelet (cgroupfs driver) and containerd create."""
CONTAINER_LOGS = Path("/var/log/containers")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
WATCHED_DIRS = ("/run", "/var/run/netns", "/var/lib", "/etc/cni", "/opt", "/var/log")
MACHINE_PATHS = (
    "/run/containerd",  # shim sockets (/run/containerd/s): containerd does not move them
    "/run/mount",  # util-linux mount's utab, written when the kubelet or the CSI driver mounts
    "/var/lib/kubelet",  # device-plugins/kubelet.sock: the kubelet does not move it
    "/var/lib/cni",  # libcni's result cache
    "/var/log/containers",
    "/var/log/pods",
    "/var/run/netns",
    "/etc/cni",
    "/opt/cni",
)
"""Fixed paths a node writes to whatever its settings say; removed by :func:`restore`
when they did not exist before ``up``."""


def _mountpoints() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        points.append(point.encode().decode("unicode_escape"))  # \040 etc.
    return points


def _top_cgroups() -> dict[str, list[str]]:
    tops: dict[str, list[str]] = {}
    if not CGROUPS.is_dir():
        return tops
    for hierarchy in sorted(CGROUPS.iterdir()):
        if hierarchy.is_dir() and not hierarchy.is_symlink():
            tops[hierarchy.name] = sorted(p.name for p in hierarchy.iterdir() if p.is_dir())
    return tops


def _links() -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir())


def _entries(directory: str) -> list[str]:
    path = Path(directory)
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def _iptables() -> list[str]:
    """The rules (without counters); none where iptables is not installed."""
    if shutil.which("iptables-save") is None:
        return []
    proc = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False)
    return [line for line in proc.stdout.splitlines() if not line.startswith(("#", ":"))]


def node_processes(state_dir: Path) -> list[tuple[int, str]]:
    """(pid, command) of live processes that belong to a node under ``state_dir``:
    started from it or naming it, or inside a pod cgroup."""
    mine = str(state_dir)
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cgroups = (proc / "cgroup").read_text()
        except OSError:
            continue  # gone meanwhile
        in_pod = any(
            line.split(":", 2)[2].startswith(tuple(f"/{c}" for c in OUR_CGROUPS))
            for line in cgroups.splitlines()
            if line.count(":") >= 2
        )
        if mine in cmdline or in_pod:
            found.append((int(proc.name), cmdline.strip()[:200]))
    return found


def baseline() -> dict[str, Any]:
    """What :func:`restore` puts back: the sysctl and whether the logs dir existed."""
    return {
        "ip_forward": IP_FORWARD.read_text().strip(),
        "absent": [p for p in MACHINE_PATHS if not os.path.lexists(p)],
        "cgroups": _top_cgroups(),
    }


def snapshot(state_dir: Path) -> dict[str, Any]:
    """The machine state a node may change; equal before ``up`` and after ``down``."""
    return {
        "processes": [cmd for _, cmd in node_processes(state_dir)],
        "mounts": sorted(_mountpoints()),
        "cgroups": _top_cgroups(),
        "links": _links(),
        "ip_forward": IP_FORWARD.read_text().strip(),
        "iptables": _iptables(),
        **{f"entries {d}": _entries(d) for d in WATCHED_DIRS},
        "container logs": _entries(str(CONTAINER_LOGS)),
    }


def kill_group(pgid: int, grace: float) -> None:
    """SIGTERM a process group, SIGKILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def _kill_leftovers(state_dir: Path) -> None:
    for _ in range(3):
        left = node_processes(state_dir)
        if not left:
            return
        for pid, _cmd in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


def _unmount_under(state_dir: Path) -> None:
    root = str(state_dir)
    for _ in range(5):
        points = [p for p in _mountpoints() if p == root or p.startswith(root + "/")]
        if not points:
            return
        for point in sorted(set(points), key=lambda p: p.count("/"), reverse=True):
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _remove_cgroups(before: dict[str, list[str]]) -> None:
    for hierarchy, names in _top_cgroups().items():
        for name in names:
            if name in OUR_CGROUPS and name not in before.get(hierarchy, []):
                top = CGROUPS / hierarchy / name
                for directory in sorted(
                    (p for p in top.rglob("*") if p.is_dir()),
                    key=lambda p: len(p.parts),
                    reverse=True,
                ):
                    _rmdir(directory)
                _rmdir(top)


def _rmdir(path: Path) -> None:
    for _ in range(20):  # a cgroup is busy for a moment after its last process exits
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)


def restore(state_dir: Path, bridge: str, before: dict[str, Any]) -> None:
    """Undo what a node under ``state_dir`` did to the machine (idempotent)."""
    _kill_leftovers(state_dir)
    _unmount_under(state_dir)
    if (Path("/sys/class/net") / bridge).exists():
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)
    _remove_cgroups(before.get("cgroups", {}))
    restore_files(state_dir, before)


def restore_files(state_dir: Path, before: dict[str, Any]) -> None:
    """Put back ``ip_forward``; remove the node's log links and the fixed paths of
    :data:`MACHINE_PATHS` that did not exist before (no other path is ever removed)."""
    if "ip_forward" in before and IP_FORWARD.read_text().strip() != before["ip_forward"]:
        IP_FORWARD.write_text(before["ip_forward"])
    if CONTAINER_LOGS.is_dir():
        for link in CONTAINER_LOGS.iterdir():
            if link.is_symlink() and str(state_dir) in os.readlink(link):
                link.unlink()
    for path in before.get("absent", []):
        if path in MACHINE_PATHS and os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)
