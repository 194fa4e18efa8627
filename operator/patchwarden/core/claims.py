"""Which PersistentVolumeClaims hold a system's data: decided once, when a run starts.

A run decides its claims in Pending, before it changes anything, and records them
(``status.claims``): the snapshots cover them, the guard before Updating checks them,
the rollback restores them. Nothing here reads a count the operator itself changes.

Issue 31 was the reason: a StatefulSet's claims were computed as
``<template>-<name>-<i>`` for ``i < spec.replicas``, read after ``backup.consistency:
Stopped`` had scaled it to zero — no claim, no snapshot, and a rollback that "restored
0 claims". A StatefulSet's claims are the ones that exist for its templates, every
ordinal found, as the StatefulSet controller itself finds them: by name. Those of the
ordinals its replicas cover must exist; those above them (kept after a scale-down,
``whenScaled: Retain``) hold data a scale-up would mount again, and are kept too.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from patchwarden.api.system import ManagedSystemSpec


@dataclass(frozen=True)
class Claims:
    """The claims of a system, or why a run must not start (nothing changed yet)."""

    names: tuple[str, ...] = ()
    problem: str | None = None


def pod_claims(pod: Mapping[str, Any]) -> list[str]:
    """The claims a pod spec's volumes name, in their order."""
    return [
        str(v["persistentVolumeClaim"]["claimName"])
        for v in pod.get("volumes") or []
        if (v.get("persistentVolumeClaim") or {}).get("claimName")
    ]


def mounted(workload: Mapping[str, Any]) -> list[str]:
    """The claims the pod template mounts by name (``spec.template.spec.volumes``)."""
    pod = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
    return sorted(set(pod_claims(pod)))


def templates(workload: Mapping[str, Any]) -> list[str]:
    """The names of a StatefulSet's volumeClaimTemplates (none for a Deployment)."""
    if workload.get("kind") != "StatefulSet":
        return []
    listed = (workload.get("spec") or {}).get("volumeClaimTemplates") or []
    return [str(t["metadata"]["name"]) for t in listed if (t.get("metadata") or {}).get("name")]


def template_claims(workload: Mapping[str, Any], existing: Collection[str]) -> dict[str, int]:
    """Claim → ordinal, for each existing claim named ``<template>-<statefulset>-<ordinal>``
    (the StatefulSet controller's names: ordinals in decimal, no leading zero)."""
    name = str(workload["metadata"]["name"])
    found: dict[str, int] = {}
    for template in templates(workload):
        pattern = re.compile(rf"{re.escape(template)}-{re.escape(name)}-(0|[1-9][0-9]*)")
        for claim in existing:
            match = pattern.fullmatch(claim)
            if match:
                found[claim] = int(match.group(1))
    return found


def expected_ordinals(workload: Mapping[str, Any]) -> range:
    """The ordinals a StatefulSet's replicas cover (``spec.ordinals.start`` on)."""
    spec = workload.get("spec") or {}
    start = int((spec.get("ordinals") or {}).get("start") or 0)
    return range(start, start + int(spec.get("replicas", 1)))


def deletes_claims_when_scaled(workload: Mapping[str, Any]) -> bool:
    """A StatefulSet whose ``persistentVolumeClaimRetentionPolicy.whenScaled`` is
    ``Delete``: its controller deletes the claims of the replicas it scales away, so
    scaling it to zero (a ``Stopped`` backup, every rollback) would delete them all."""
    if workload.get("kind") != "StatefulSet":
        return False
    policy = (workload.get("spec") or {}).get("persistentVolumeClaimRetentionPolicy") or {}
    return policy.get("whenScaled") == "Delete"


def of_workload(workload: Mapping[str, Any], existing: Collection[str]) -> Claims:
    """Every claim the workload's data is on, from the claims that ``existing`` names (the
    namespace's, listed before anything was changed)."""
    kind, name = workload.get("kind", "Workload"), workload["metadata"]["name"]
    names = set(mounted(workload))
    missing = sorted(c for c in names if c not in existing)
    tpls = templates(workload)
    if tpls:
        found = template_claims(workload, existing)
        names |= set(found)
        for template in tpls:
            for ordinal in expected_ordinals(workload):
                claim = f"{template}-{name}-{ordinal}"
                if claim not in existing:
                    missing.append(claim)
        if not found and not missing:
            return Claims(
                problem=(
                    f"{kind} {name} has volumeClaimTemplates ({', '.join(tpls)}) but none of "
                    "their claims exists, so there is nothing to back up and a rollback could "
                    "restore nothing; nothing was changed"
                )
            )
    if missing:
        return Claims(problem=_missing(kind, name, missing))
    return Claims(names=tuple(sorted(names)))


def of_system(
    spec: ManagedSystemSpec, workloads: Sequence[Mapping[str, Any]], existing: Collection[str]
) -> Claims:
    """The claims a run of the system backs up: ``spec.volumes`` when given, else every
    claim of every workload (:func:`of_workload`). A StatefulSet that deletes its claims
    when scaled down is refused: a rollback (and a ``Stopped`` backup) scales it to zero."""
    for workload in workloads:
        if deletes_claims_when_scaled(workload) and template_claims(workload, existing):
            name = workload["metadata"]["name"]
            return Claims(
                problem=(
                    f"StatefulSet {name} deletes the claims of the replicas it scales away "
                    "(persistentVolumeClaimRetentionPolicy.whenScaled: Delete): stopping it "
                    "for consistent snapshots or for a rollback would delete them; set "
                    "whenScaled: Retain (the default); nothing was changed"
                )
            )
    if spec.volumes:
        missing = [c for c in spec.volumes if c not in existing]
        if missing:
            return Claims(problem=_missing("ManagedSystem", "spec.volumes", missing, listed=True))
        return Claims(names=tuple(spec.volumes))
    names: list[str] = []
    for workload in workloads:
        found = of_workload(workload, existing)
        if found.problem:
            return found
        names += [n for n in found.names if n not in names]  # two may mount one claim
    return Claims(names=tuple(names))


def _missing(kind: str, name: str, claims: list[str], listed: bool = False) -> str:
    where = f"listed in {name}" if listed else f"of {kind} {name}"
    plural = "s" if len(claims) > 1 else ""
    return (
        f"PersistentVolumeClaim{plural} {', '.join(sorted(set(claims)))} {where} not found; "
        "nothing was changed"
    )
