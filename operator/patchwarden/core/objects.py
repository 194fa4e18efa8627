"""Reading the Kubernetes objects a run acts on: is a workload ready, how did a Job end,
what did it report, who else mounts a claim, what a restored workload looks like. Pure."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from patchwarden.api.run import Change, RunWorkload, Target, UpdateRunSpec, WorkloadRecord
from patchwarden.core import builders
from patchwarden.core.claims import pod_claims

CONTROLLER_ANNOTATIONS = frozenset({"deployment.kubernetes.io/revision"})
"""Annotations of a workload its controller keeps: neither recorded nor restored."""


TERMINATION_LIMIT = 1024
"""Characters of a failed update container's termination message kept in the run."""


def job_ended(job: Mapping[str, Any] | None) -> bool:
    """Whether the update Job ended: the step then also reads its pods (how they ended, and
    the changes a successful one reports in its termination message)."""
    return job is not None and job_result(job) is not None


def wakes_its_run(event_type: str, body: Mapping[str, Any]) -> bool:
    """Whether a watch event of a run's snapshot or Job is news for the run waiting on it:
    it went, or it shows what a run acts on (a snapshot ready or failed; a Job with a
    condition: complete, failed, suspended). A snapshot or Job just created, or a Job whose
    pod merely started, is not: a step for it would read the run and the object for
    nothing, two requests a run at a window's opening. (Listed again after a broken watch,
    one that is ready or ended comes as ADDED, and wakes its run; the runs' safety poll
    stays.)"""
    if event_type == "DELETED":
        return True
    status = body.get("status") or {}
    return bool(status.get("readyToUse") or status.get("error") or status.get("conditions"))


def foreign_users(
    claims: Sequence[str],
    workloads: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
) -> list[tuple[str, str]]:
    """(claim, pod) for each pod that mounts one of ``claims`` but belongs to none of the
    system's workloads (neither matching a selector's labels nor owned by one or its
    ReplicaSets) nor to an update Job: a rollback would have to delete a claim such a pod
    keeps in use."""
    wanted = set(claims)
    found = []
    for pod in pods:
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        if meta.get("deletionTimestamp") or builders.LABEL_RUN in labels:
            continue
        if any(_belongs(meta, labels, w) for w in workloads):
            continue
        for claim in pod_claims(pod.get("spec") or {}):
            if claim in wanted:
                found.append((claim, str(meta["name"])))
    return sorted(found)


def _belongs(
    meta: Mapping[str, Any], labels: Mapping[str, str], workload: Mapping[str, Any]
) -> bool:
    selector = (workload.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
    if selector:
        return all(labels.get(k) == v for k, v in selector.items())
    return _owned_by(meta, workload)


def _owned_by(pod_meta: Mapping[str, Any], workload: Mapping[str, Any]) -> bool:
    """The pod is the StatefulSet's, or one of the Deployment's ReplicaSets' (named
    ``<deployment>-<hash>``): for selectors written with matchExpressions only."""
    name = workload.get("metadata", {}).get("name", "")
    for owner in pod_meta.get("ownerReferences") or []:
        kind, owner_name = owner.get("kind"), str(owner.get("name", ""))
        if kind == workload.get("kind") == "StatefulSet" and owner_name == name:
            return True
        hash_ = owner_name.removeprefix(f"{name}-")
        if kind == "ReplicaSet" and hash_ != owner_name and hash_.isalnum():
            return True
    return False


def restored_workload(current: Mapping[str, Any], recorded: WorkloadRecord) -> dict[str, Any]:
    """The workload as recorded before the update, on the current object (its
    resourceVersion: a concurrent write conflicts and is retried): the whole spec, the
    labels and the annotations (but the ones its controller keeps). A record made before
    whole specs were recorded restores the template and replicas only."""
    body = {k: copy.deepcopy(v) for k, v in current.items() if k != "status"}
    if recorded.spec is None:
        body["spec"] = {
            **body["spec"],
            "template": recorded.template,
            "replicas": recorded.replicas,
        }
        return body
    body["spec"] = copy.deepcopy(recorded.spec)
    meta = body["metadata"]
    kept = {k: v for k, v in (meta.get("annotations") or {}).items() if k in CONTROLLER_ANNOTATIONS}
    meta["labels"] = dict(recorded.labels)
    meta["annotations"] = {**recorded.annotations, **kept}
    return body


def workload_ready(workload: Mapping[str, Any]) -> bool:
    """The rollout is complete and every replica is ready."""
    spec, status = workload.get("spec", {}), workload.get("status", {}) or {}
    replicas = spec.get("replicas", 1)
    if status.get("observedGeneration", 0) < workload["metadata"].get("generation", 0):
        return False
    if replicas == 0:
        return True
    ready_key = "availableReplicas" if workload.get("kind") == "Deployment" else "readyReplicas"
    if workload.get("kind") == "StatefulSet" and status.get("updateRevision") != status.get(
        "currentRevision", status.get("updateRevision")
    ):
        return False
    return bool(
        status.get("updatedReplicas", 0) == replicas
        and status.get(ready_key, 0) == replicas
        and status.get("replicas", 0) == replicas
    )


def not_ready(
    workloads: Sequence[RunWorkload], seen: Mapping[str, Mapping[str, Any] | None]
) -> list[str]:
    """Those of ``workloads`` (``Kind name``) absent or not ready (:func:`workload_ready`)
    in what a step read; empty when all are ready."""
    out = []
    for workload in workloads:
        body = seen.get(workload.name)
        if body is None or not workload_ready(body):
            out.append(f"{workload.kind} {workload.name}")
    return out


def job_result(job: Mapping[str, Any]) -> str | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in {"Complete", "Failed"} and cond.get("status") == "True":
            return str(cond["type"])
    return None


def job_message(job: Mapping[str, Any]) -> str:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed":
            return f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
    return "failed"


def termination(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """How the update Job's first failed container ended: exit code, reason and its
    termination message (with FallbackToLogsOnError: the log's last lines), truncated."""
    for pod in pods:
        for state in (pod.get("status") or {}).get("containerStatuses") or []:
            ended = (state.get("state") or {}).get("terminated") or {}
            if ended and ended.get("exitCode", 0) != 0:
                text = (
                    f"container {state.get('name')} exited with code {ended.get('exitCode')}"
                    f" ({ended.get('reason', 'Error')})"
                )
                message = (ended.get("message") or "").strip()
                if message:
                    text += ":\n" + message[-TERMINATION_LIMIT:]
                return text
    return None


def job_changes(pods: Sequence[Mapping[str, Any]]) -> tuple[list[Change], str | None]:
    """The changes a successful update Job reports in its termination message (JSON:
    ``{"changes": [{"component": …, "from": …, "to": …, "classes": […], "advisories": […]}]}``,
    docs/update-job.md), and what was wrong with a message that does not follow it."""
    for pod in pods:
        for state in (pod.get("status") or {}).get("containerStatuses") or []:
            ended = (state.get("state") or {}).get("terminated") or {}
            message = (ended.get("message") or "").strip()
            if not ended or ended.get("exitCode", 0) != 0 or not message.startswith("{"):
                continue
            try:
                reported = json.loads(message).get("changes") or []
                changes = [
                    Change.model_validate({**item, "source": "job"}) for item in reported[:256]
                ]
            except (ValueError, AttributeError, TypeError) as exc:
                first = str(exc).splitlines()[0][:200]
                return [], (
                    f"container {state.get('name')}'s termination message is not the documented "
                    f"changes JSON ({first}); its changes are not recorded"
                )
            return changes, None
    return [], None


def image_targets(spec: UpdateRunSpec, workload: str | None = None) -> list[Target]:
    """The run's targets bound to containers (of ``workload`` only, when named; a target of
    a run made before systems had several workloads names none: its one workload's)."""
    found = [t for t in spec.targets if t.container and t.image]
    if workload is None:
        return found
    return [t for t in found if t.workload in (None, workload)]


def target_images(spec: UpdateRunSpec, workload: str | None = None) -> dict[str, str]:
    """Container → image of the run's targets bound to containers (of ``workload``)."""
    return {t.container: t.image for t in image_targets(spec, workload) if t.container and t.image}


def images_of(template: Mapping[str, Any]) -> dict[str, str]:
    """Container → image of a pod template."""
    containers = template.get("spec", {}).get("containers") or []
    return {str(c.get("name")): str(c.get("image")) for c in containers}


def same_image(live: str | None, wanted: str | None) -> bool:
    """``live`` names the image ``wanted`` names, as admission may have rewritten it: with
    a digest added (a policy engine pinning tags), or another registry host or path in
    front (a mirror); the image's name and tag must be the same."""
    if live is None or wanted is None:
        return live == wanted
    if live == wanted:
        return True

    def name_and_tag(reference: str) -> str:
        return reference.split("@", 1)[0].rsplit("/", 1)[-1]

    return name_and_tag(live) == name_and_tag(wanted) and ":" in name_and_tag(wanted)


def has_images(workload: Mapping[str, Any], images: Mapping[str, str]) -> bool:
    """Every container named in ``images`` (container → image) runs that image in the
    workload's spec (:func:`same_image`)."""
    live = images_of(workload.get("spec", {}).get("template", {}))
    return all(same_image(live.get(name), image) for name, image in images.items())


def catalog_changes(spec: UpdateRunSpec, workload: str | None = None) -> list[Change]:
    return [
        Change.model_validate(
            {
                "component": t.component,
                "container": t.container,
                "workload": t.workload or workload,
                "from": t.from_version,
                "to": t.to_version,
                "fromImage": t.from_image,
                "toImage": t.image,
                "classes": [x.value for x in t.classes],
                "advisories": t.advisories,
                "source": "catalog",
            }
        )
        for t in image_targets(spec, workload)
    ]


def summary(changes: Sequence[Change]) -> str:
    """``postgres 16.3→16.4, shop 1.0.0→1.1.0`` (at most 256 characters)."""
    text = ", ".join(
        f"{x.component} {x.from_version or '?'}→{x.to_version or '?'}" for x in changes
    )
    return text if len(text) <= 256 else text[:255] + "…"
