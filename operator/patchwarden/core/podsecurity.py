"""The Pod Security Standards (``baseline``, ``restricted``; Kubernetes' "latest" policy) as a
pure check of a pod spec: the operator's own floor for the update Jobs it creates, which
holds whatever the namespace's Pod Security admission level is.

Written from the standard (kubernetes.io/docs/concepts/security/pod-security-standards/)
because no maintained Python implementation exists; ``tests/cluster/test_podsecurity.py``
checks every verdict against the API server's own Pod Security admission on the same pods.
Each violation names the field, as a user would find it in the ManagedSystem's
``spec.updates.template``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Any


class Level(StrEnum):
    BASELINE = "baseline"
    RESTRICTED = "restricted"


BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
VOLUME_NAME_KEYS = frozenset({"name"})


def _containers(pod: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for i, container in enumerate(pod.get(kind) or []):
            yield f"spec.{kind}[{i}]", container


def violations(
    pod: Mapping[str, Any], level: Level, annotations: Mapping[str, str] | None = None
) -> list[str]:
    """What in the pod spec ``pod`` (a PodSpec) breaks ``level``, each as ``field: why``;
    empty when it meets it. ``annotations`` are the pod template's (AppArmor's old form)."""
    found = list(_baseline(pod, annotations or {}))
    if level == Level.RESTRICTED:
        found += list(_restricted(pod))
    return found


def _baseline(pod: Mapping[str, Any], annotations: Mapping[str, str]) -> Iterator[str]:
    psc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            yield f"spec.{key}: host namespaces are not allowed"
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        yield "spec.securityContext.windowsOptions.hostProcess: not allowed"
    yield from _selinux("spec.securityContext", psc)
    yield from _seccomp_not_unconfined("spec.securityContext", psc)
    yield from _apparmor("spec.securityContext", psc)
    for i, sysctl in enumerate(psc.get("sysctls") or []):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            yield f"spec.securityContext.sysctls[{i}]: {sysctl.get('name')} is not a safe sysctl"
    for i, volume in enumerate(pod.get("volumes") or []):
        if "hostPath" in volume:
            yield f"spec.volumes[{i}].hostPath: hostPath volumes are not allowed"
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            yield f"metadata.annotations[{key}]: AppArmor profile {value} is not allowed"
    for where, container in _containers(pod):
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            yield f"{where}.securityContext.privileged: privileged containers are not allowed"
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            yield f"{where}.securityContext.windowsOptions.hostProcess: not allowed"
        added = set((sc.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
        if added:
            yield (
                f"{where}.securityContext.capabilities.add: {', '.join(sorted(added))} "
                "beyond the baseline set"
            )
        for j, port in enumerate(container.get("ports") or []):
            if port.get("hostPort"):
                yield f"{where}.ports[{j}].hostPort: host ports are not allowed"
        if sc.get("procMount") not in (None, "Default"):
            yield f"{where}.securityContext.procMount: must be Default"
        yield from _selinux(f"{where}.securityContext", sc)
        yield from _seccomp_not_unconfined(f"{where}.securityContext", sc)
        yield from _apparmor(f"{where}.securityContext", sc)


def _selinux(where: str, sc: Mapping[str, Any]) -> Iterator[str]:
    options = sc.get("seLinuxOptions") or {}
    if options.get("type", "") not in SELINUX_TYPES:
        yield f"{where}.seLinuxOptions.type: {options['type']} is not allowed"
    for key in ("user", "role"):
        if options.get(key):
            yield f"{where}.seLinuxOptions.{key}: must not be set"


def _seccomp_not_unconfined(where: str, sc: Mapping[str, Any]) -> Iterator[str]:
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        yield f"{where}.seccompProfile.type: Unconfined is not allowed"


def _apparmor(where: str, sc: Mapping[str, Any]) -> Iterator[str]:
    kind = (sc.get("appArmorProfile") or {}).get("type")
    if kind not in (None, "RuntimeDefault", "Localhost"):
        yield f"{where}.appArmorProfile.type: {kind} is not allowed"


def _restricted(pod: Mapping[str, Any]) -> Iterator[str]:
    psc = pod.get("securityContext") or {}
    for i, volume in enumerate(pod.get("volumes") or []):
        kinds = set(volume) - VOLUME_NAME_KEYS
        wrong = sorted(kinds - RESTRICTED_VOLUMES)
        if wrong:
            yield f"spec.volumes[{i}].{wrong[0]}: {wrong[0]} volumes are not allowed"
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    if psc.get("runAsUser") == 0:
        yield "spec.securityContext.runAsUser: must not be 0"
    for where, container in _containers(pod):
        sc = container.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            yield f"{where}.securityContext.allowPrivilegeEscalation: must be false"
        non_root = sc.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            yield f"{where}.securityContext.runAsNonRoot: must be true (here or for the pod)"
        if sc.get("runAsUser") == 0:
            yield f"{where}.securityContext.runAsUser: must not be 0"
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp is None and not pod_seccomp:
            yield (
                f"{where}.securityContext.seccompProfile.type: must be RuntimeDefault or "
                "Localhost (here or for the pod)"
            )
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            yield f"{where}.securityContext.capabilities.drop: must include ALL"
        added = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            yield (
                f"{where}.securityContext.capabilities.add: only NET_BIND_SERVICE may be added, "
                f"not {', '.join(sorted(added))}"
            )
