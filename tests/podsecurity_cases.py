"""Pod specs on either side of the Pod Security Standards, each with the levels it meets.

Used twice: the pure check (tests/unit/core/test_podsecurity.py) and the API server's own
Pod Security admission (tests/cluster/test_podsecurity.py), which must agree.
"""

from __future__ import annotations

import copy
from typing import Any

RESTRICTED_CONTAINER: dict[str, Any] = {
    "name": "c",
    "image": "example.com/u:1",
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
}


def pod(**spec: Any) -> dict[str, Any]:
    """A restricted pod spec, changed by ``spec`` (a key whose value is None is removed)."""
    out: dict[str, Any] = {"containers": [copy.deepcopy(RESTRICTED_CONTAINER)]}
    for key, value in spec.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def container(**security: Any) -> list[dict[str, Any]]:
    """One container whose securityContext is the restricted one changed by ``security``."""
    c = copy.deepcopy(RESTRICTED_CONTAINER)
    for key, value in security.items():
        if value is None:
            c["securityContext"].pop(key, None)
        else:
            c["securityContext"][key] = value
    return [c]


# (name, pod spec, meets baseline, meets restricted, field the violation names)
CASES: list[tuple[str, dict[str, Any], bool, bool, str]] = [
    ("restricted", pod(), True, True, ""),
    (
        "privileged",
        pod(containers=container(privileged=True, allowPrivilegeEscalation=None)),
        False,
        False,
        "privileged",
    ),
    ("host network", pod(hostNetwork=True), False, False, "spec.hostNetwork"),
    ("host PID", pod(hostPID=True), False, False, "spec.hostPID"),
    (
        "hostPath volume",
        pod(volumes=[{"name": "h", "hostPath": {"path": "/etc"}}]),
        False,
        False,
        "spec.volumes[0].hostPath",
    ),
    (
        "host port",
        pod(
            containers=[{**RESTRICTED_CONTAINER, "ports": [{"containerPort": 80, "hostPort": 80}]}]
        ),
        False,
        False,
        "hostPort",
    ),
    (
        "SYS_ADMIN",
        pod(containers=container(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]})),
        False,
        False,
        "capabilities.add",
    ),
    (
        "CHOWN added",
        pod(containers=container(capabilities={"drop": ["ALL"], "add": ["CHOWN"]})),
        True,
        False,
        "capabilities.add",
    ),
    (
        "unconfined seccomp",
        pod(containers=container(seccompProfile={"type": "Unconfined"})),
        False,
        False,
        "seccompProfile.type",
    ),
    (
        "unsafe sysctl",
        pod(securityContext={"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}),
        False,
        False,
        "sysctls[0]",
    ),
    ("runs as root", pod(containers=container(runAsNonRoot=None)), True, False, "runAsNonRoot"),
    (
        "root user",
        pod(containers=container(runAsUser=0)),
        True,
        False,
        "runAsUser",
    ),
    (
        "privilege escalation",
        pod(containers=container(allowPrivilegeEscalation=None)),
        True,
        False,
        "allowPrivilegeEscalation",
    ),
    (
        "capabilities kept",
        pod(containers=container(capabilities=None)),
        True,
        False,
        "capabilities.drop",
    ),
    (
        "no seccomp profile",
        pod(containers=container(seccompProfile=None)),
        True,
        False,
        "seccompProfile.type",
    ),
    (
        "pod-level non-root and seccomp",
        pod(
            securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            containers=container(runAsNonRoot=None, seccompProfile=None),
        ),
        True,
        True,
        "",
    ),
    (
        "NFS volume",
        pod(volumes=[{"name": "n", "nfs": {"server": "nfs.example.com", "path": "/"}}]),
        True,
        False,
        "spec.volumes[0].nfs",
    ),
    (
        "claim and emptyDir",
        pod(
            volumes=[
                {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "t", "emptyDir": {}},
            ]
        ),
        True,
        True,
        "",
    ),
    (
        "SELinux user",
        pod(containers=container(seLinuxOptions={"user": "system_u"})),
        False,
        False,
        "seLinuxOptions.user",
    ),
    (
        "unmasked proc",
        pod(hostUsers=False, containers=container(procMount="Unmasked")),
        False,
        False,
        "procMount",
    ),
]
