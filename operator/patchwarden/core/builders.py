"""Pure builders: manifests and names derived from validated models. No I/O."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from datetime import datetime
from typing import Any

from patchwarden.api.common import API_VERSION
from patchwarden.api.run import Target, Trigger
from patchwarden.api.system import Hook, ManagedSystemSpec, WindowRef
from patchwarden.core.podsecurity import Level, violations

LABEL_SYSTEM = "patchwarden.io/system"
LABEL_RUN = "patchwarden.io/run"
RUN_FINALIZER = "patchwarden.io/active-run"
"""On a ManagedSystem while one of its runs is in progress: deleting the system waits until
the run has rolled back or stopped."""
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_STATE = "patchwarden.io/state"
FAILED_STATE = "failed"
SNAPSHOT_API = "snapshot.storage.k8s.io"
GROUP_SNAPSHOT_API = "groupsnapshot.storage.k8s.io"
LABEL_GROUP = "patchwarden.io/group-snapshot"
"""On a run's claims (``backup.consistency: Group``): the run, which its VolumeGroupSnapshot's
selector selects."""


def label_value(text: str) -> str:
    """``text`` if it is a valid label value, else a stable hash of it."""
    if re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]", text):
        return text
    return "h-" + hashlib.sha256(text.encode()).hexdigest()[:20]


def short_name(*parts: str, limit: int) -> str:
    """A DNS-label-safe name of at most ``limit`` characters, unique through a hash."""
    full = "-".join(parts)
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: limit - 9].rstrip('-')}-{digest}"


def run_name(system: str, window_start: datetime) -> str:
    """One run per system and window occurrence: the name makes a second one impossible."""
    return short_name(system, window_start.strftime("%Y%m%d%H%M"), limit=63)


def snapshot_name(run: str, claim: str) -> str:
    return short_name(run, claim, limit=253)


def job_name(run: str) -> str:
    return short_name(run, "update", limit=63)


def owner(kind: str, name: str, uid: str, controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def update_run(
    *,
    system: str,
    system_uid: str,
    customer: str,
    trigger: Trigger,
    window: WindowRef,
    window_start: datetime,
    classes: list[str],
    components: list[str],
    targets: list[dict[str, Any]] | None = None,
    request: str | None = None,
    ticket: str | None = None,
    template: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "systemRef": {"name": system},
        "customer": customer,
        "trigger": trigger.value,
        "classes": sorted(classes),
        "components": components,
        "window": window.wire(),
    }
    if targets:
        spec["targets"] = targets
    if template:
        spec["templateHash"] = template_hash(template)
    if request:
        spec["requestRef"] = {"name": request}
    if ticket:
        spec["ticket"] = ticket
    return {
        "apiVersion": API_VERSION,
        "kind": "UpdateRun",
        "metadata": {
            "name": run_name(system, window_start),
            "labels": {LABEL_SYSTEM: label_value(system), LABEL_MANAGED_BY: "patchwarden"},
            "ownerReferences": [owner("ManagedSystem", system, system_uid)],
        },
        "spec": spec,
    }


def template_hash(template: dict[str, Any]) -> str:
    """``sha256:<hex>`` of a pod template's canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def failed_state_name(run: str, claim: str) -> str:
    return short_name(run, claim, "failed", limit=253)


def volume_snapshot(
    *, run: str, system: str, claim: str, snapshot_class: str | None, failed_state: bool = False
) -> dict[str, Any]:
    """A pre-update snapshot of ``claim``; with ``failed_state``, the snapshot of the claim
    as a failed update left it, taken before a rollback replaces the claim."""
    spec: dict[str, Any] = {"source": {"persistentVolumeClaimName": claim}}
    if snapshot_class:
        spec["volumeSnapshotClassName"] = snapshot_class
    labels = {LABEL_SYSTEM: label_value(system), LABEL_RUN: run, LABEL_MANAGED_BY: "patchwarden"}
    if failed_state:
        labels[LABEL_STATE] = FAILED_STATE
    return {
        "apiVersion": f"{SNAPSHOT_API}/v1",
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": failed_state_name(run, claim) if failed_state else snapshot_name(run, claim),
            "labels": labels,
            # Not owned by the run: snapshots must outlive it (retention decides).
        },
        "spec": spec,
    }


def group_snapshot_name(run: str) -> str:
    return short_name(run, "group", limit=253)


def volume_group_snapshot(*, run: str, system: str, group_class: str) -> dict[str, Any]:
    """The one group snapshot over every claim of the run (those labelled
    :data:`LABEL_GROUP` ``=<run>``); not owned by the run, like its snapshots."""
    return {
        "apiVersion": f"{GROUP_SNAPSHOT_API}/v1",
        "kind": "VolumeGroupSnapshot",
        "metadata": {
            "name": group_snapshot_name(run),
            "labels": {
                LABEL_SYSTEM: label_value(system),
                LABEL_RUN: run,
                LABEL_MANAGED_BY: "patchwarden",
            },
        },
        "spec": {
            "volumeGroupSnapshotClassName": group_class,
            "source": {"selector": {"matchLabels": {LABEL_GROUP: label_value(run)}}},
        },
    }


def update_job(
    *,
    run: str,
    run_uid: str,
    system: str,
    spec: ManagedSystemSpec,
    classes: list[str],
    ticket: str | None,
    deadline_seconds: int,
    targets: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The update Job: the system's pod template with patchwarden's labels and variables
    (docs/update-job.md)."""
    template = pod_template(spec)
    meta = template.setdefault("metadata", {})
    labels = meta.setdefault("labels", {})
    labels.update({LABEL_SYSTEM: label_value(system), LABEL_RUN: run})
    pod = template["spec"]
    env = [
        {"name": "PATCHWARDEN_SYSTEM", "value": system},
        {"name": "PATCHWARDEN_RUN", "value": run},
        {"name": "PATCHWARDEN_CLASSES", "value": ",".join(sorted(classes))},
        {"name": "PATCHWARDEN_TICKET", "value": ticket or ""},
        {"name": "PATCHWARDEN_TARGETS", "value": json.dumps(targets or [], sort_keys=True)},
    ]
    for container in pod.get("containers", []):
        # A failed container's last log lines become its termination message, which
        # the run records (the Job's pods are removed before a rollback restores claims).
        container.setdefault("terminationMessagePolicy", "FallbackToLogsOnError")
        names = {e.get("name") for e in container.get("env", [])}
        container["env"] = [*container.get("env", []), *(e for e in env if e["name"] not in names)]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(run),
            "labels": {
                LABEL_SYSTEM: label_value(system),
                LABEL_RUN: run,
                LABEL_MANAGED_BY: "patchwarden",
            },
            "ownerReferences": [owner("UpdateRun", run, run_uid)],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(1, deadline_seconds),
            "ttlSecondsAfterFinished": 7 * 24 * 3600,
            "template": template,
        },
    }


LABEL_HOOK = "patchwarden.io/hook"
"""On a hook Job's pods (besides the run's label): ``<stage>-<hook name>``."""


def hook_job_name(run: str, stage: str, hook: str) -> str:
    return short_name(run, f"{stage}-{hook}", limit=63)


def hook_job(
    *,
    run: str,
    run_uid: str,
    system: str,
    spec: ManagedSystemSpec,
    hook: Hook,
    stage: str,
    deadline_seconds: int,
) -> dict[str, Any]:
    """A ``job`` hook's Job: its template as the update Job's is made (the restricted
    defaults, the run's variables and labels), plus ``PATCHWARDEN_HOOK`` (the stage)."""
    assert hook.job is not None
    job = update_job(
        run=run,
        run_uid=run_uid,
        system=system,
        spec=spec.model_copy(
            update={"updates": spec.updates.model_copy(update={"template": hook.job.template})}
        ),
        classes=[],
        ticket=None,
        deadline_seconds=deadline_seconds,
    )
    job["metadata"]["name"] = hook_job_name(run, stage, hook.name)
    job["metadata"]["labels"][LABEL_HOOK] = f"{stage}-{hook.name}"
    job["spec"]["template"]["metadata"]["labels"][LABEL_HOOK] = f"{stage}-{hook.name}"
    for container in job["spec"]["template"]["spec"].get("containers", []):
        container["env"].append({"name": "PATCHWARDEN_HOOK", "value": stage})
    return job


def pod_template(spec: ManagedSystemSpec) -> dict[str, Any]:
    """The update Job's pod template as the operator would create it (before its labels and
    variables): the system's, restartPolicy Never and the restricted defaults filled in."""
    template = copy.deepcopy(spec.updates.template or {})
    pod = template.setdefault("spec", {})
    pod.setdefault("restartPolicy", "Never")
    restrict(pod)
    return template


def pod_security(spec: ManagedSystemSpec, level: Level) -> list[str]:
    """What in the system's update Job template, or a ``job`` hook's, breaks the operator's
    Pod Security ``level``, each naming its field in the ManagedSystem (empty: none)."""
    templates: list[tuple[str, dict[str, Any]]] = []
    if spec.updates.template:
        templates.append(("spec.updates.template", spec.updates.template))
    hooks = spec.updates.hooks
    for stage, listed in (("pre", hooks.pre), ("post", hooks.post)) if hooks else ():
        for i, hook in enumerate(listed):
            if hook.job is not None:
                templates.append(
                    (f"spec.updates.hooks.{stage}[{i}].job.template", hook.job.template)
                )
    found = []
    for where, given in templates:
        template = copy.deepcopy(given)
        pod = template.setdefault("spec", {})
        pod.setdefault("restartPolicy", "Never")
        restrict(pod)
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        found += [f"{where}.{v}" for v in violations(pod, level, annotations)]
    return found


def target_variable(target: Target) -> dict[str, Any]:
    """One target as the update Job reads it in ``PATCHWARDEN_TARGETS``."""
    return {
        "component": target.component,
        "container": target.container,
        "workload": target.workload,
        "from": target.from_version,
        "to": target.to_version,
        "image": target.image,
        "classes": [x.value for x in target.classes],
        "advisories": target.advisories,
    }


RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def restrict(pod: dict[str, Any]) -> None:
    """Default the pod to the restricted Pod Security profile; what the template sets wins."""
    pod["securityContext"] = {**RESTRICTED_POD, **(pod.get("securityContext") or {})}
    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        container["securityContext"] = {
            **copy.deepcopy(RESTRICTED_CONTAINER),
            **(container.get("securityContext") or {}),
        }


def restored_claim(original: dict[str, Any], snapshot: str) -> dict[str, Any]:
    """The claim recreated under its own name from ``snapshot`` (same class, size, modes)."""
    spec = original.get("spec", {})
    meta = original.get("metadata", {})
    keep = {
        k: spec[k]
        for k in ("accessModes", "resources", "storageClassName", "volumeMode", "selector")
        if k in spec
    }
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": meta["name"],
            "labels": meta.get("labels", {}),
            "annotations": {"patchwarden.io/restored-from": snapshot},
        },
        "spec": {
            **keep,
            "dataSource": {"apiGroup": SNAPSHOT_API, "kind": "VolumeSnapshot", "name": snapshot},
        },
    }
