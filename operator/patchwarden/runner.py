"""One update run, step by step: snapshot, record, update, verify — or roll back.

Each call of :meth:`Runner.step` looks at the run's recorded phase, does the
next idempotent piece of work, and records what it did in the run's status
*before* doing anything that depends on it. Killed at any point and started
again, the operator continues from the recorded phase: every object it
creates has a name derived from the run, so a retry finds its own object and
never makes a second Job or snapshot. Every wait has a deadline.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from patchwarden import builders, metrics
from patchwarden import conditions as c
from patchwarden.api.common import parse_duration
from patchwarden.api.run import Phase
from patchwarden.kube import Kube
from patchwarden.policy import assess
from patchwarden.reconcile import parse_system, utc_text
from patchwarden.scheduler import TERMINAL
from patchwarden.settings import Settings

log = logging.getLogger(__name__)

EventFn = Callable[[dict[str, Any], str, str, str], None]
"""(run body, type Normal|Warning, reason, message)."""


class Abort(Exception):
    """The current phase failed; the message says why, for the run's status."""


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def workload_ready(workload: dict[str, Any]) -> bool:
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


class Runner:
    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        emit: EventFn,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        cached_system: Callable[[str, str], dict[str, Any] | None] = lambda ns, name: None,
        watched_wait: float | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.emit = emit
        self.now = now
        self.cached_system = cached_system
        """The controller's watch-fed copy of a system, if it has one (saves a GET per step)."""
        self.watched_wait = watched_wait or settings.run_poll_seconds
        """How long to wait for a snapshot or the Job to change: longer than the poll when a
        watch of them wakes the run (the wait is then only a safety net)."""

    # ---- driver -------------------------------------------------------------
    def step(self, run: dict[str, Any]) -> float | None:
        """Advance ``run`` by one step; seconds until the next, or None when it has ended."""
        status: dict[str, Any] = copy.deepcopy(run.get("status") or {})
        phase = status.get("phase") or Phase.PENDING.value
        if phase in TERMINAL:
            return None
        before = copy.deepcopy(status)
        delay: float | None
        try:
            delay = getattr(self, f"_{phase.lower()}")(run, status)
        except Abort as exc:
            delay = self._fail(run, status, phase, str(exc))
        if status != before:
            self.kube.patch_status(
                "updateruns", run["metadata"]["namespace"], run["metadata"]["name"], status
            )
            run["status"] = status
        return delay

    def _enter(
        self, run: dict[str, Any], status: dict[str, Any], phase: Phase, message: str
    ) -> float:
        if status.get("phase") and status.get("phaseStartTime"):
            metrics.observe_phase(status["phase"], self._waited(status).total_seconds())
        status["phase"] = phase.value
        now = utc_text(self.now())
        status["phaseStartTime"] = now
        status["message"] = message
        status["observedGeneration"] = run["metadata"].get("generation")
        # kstatus: in progress until the run ends; Failed (a person must look) stalls it.
        ended = phase.value in TERMINAL
        conds = c.set_condition(
            status.get("conditions", []),
            c.RECONCILING,
            not ended,
            phase.value,
            message,
            generation=None,
            now=now,
        )
        status["conditions"] = c.set_condition(
            conds,
            c.STALLED,
            phase == Phase.FAILED,
            phase.value,
            message if phase == Phase.FAILED else "",
            generation=None,
            now=now,
        )
        log.info(
            "run %s/%s: %s: %s",
            run["metadata"]["namespace"],
            run["metadata"]["name"],
            phase.value,
            message,
        )
        return 0.0

    def _waited(self, status: dict[str, Any]) -> timedelta:
        return self.now() - parse_time(status.get("phaseStartTime") or utc_text(self.now()))

    def _get_system(self, run: dict[str, Any]) -> dict[str, Any] | None:
        ns, name = run["metadata"]["namespace"], run["spec"]["systemRef"]["name"]
        return self.cached_system(ns, name) or self.kube.get("managedsystems", ns, name)

    def _system(self, run: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        body = self._get_system(run)
        if body is None:
            raise Abort(f"ManagedSystem {run['spec']['systemRef']['name']} no longer exists")
        spec, invalid = parse_system(body.get("spec") or {})
        if spec is None:
            raise Abort(f"the system's spec cannot be used: {invalid}")
        return body, spec

    # ---- phases ----------------------------------------------------------------
    def _pending(self, run: dict[str, Any], status: dict[str, Any]) -> float:
        _, spec = self._system(run)
        assessment = assess(spec)
        if not assessment.eligible:
            raise Abort(f"the system is no longer eligible: {assessment.reason}")
        now = self.now()
        if now > parse_time(run["spec"]["window"]["cutoff"]):
            raise Abort(
                "the window's cutoff passed before the run could start; nothing was changed"
            )
        status["startTime"] = utc_text(now)
        self._set_request(run, "Running", f"update run {run['metadata']['name']} started")
        self.emit(
            run,
            "Normal",
            "Started",
            f"{run['spec']['trigger']} update in window {run['spec']['window']['name']}",
        )
        return self._enter(
            run, status, Phase.SNAPSHOTTING, "taking VolumeSnapshots of the system's claims"
        )

    def _snapshotting(self, run: dict[str, Any], status: dict[str, Any]) -> float:
        ns, name = run["metadata"]["namespace"], run["metadata"]["name"]
        system, spec = self._system(run)
        if "snapshots" not in status:
            workload = self.kube.get_workload(spec.workload.kind, ns, spec.workload.name)
            if workload is None:
                raise Abort(
                    f"{spec.workload.kind} {spec.workload.name} not found; nothing was changed"
                )
            claims = spec.volumes or builders.workload_claims(workload)
            records = []
            for claim in claims:
                body = self.kube.get_claim(ns, claim)
                if body is None:
                    raise Abort(f"PersistentVolumeClaim {claim} not found; nothing was changed")
                records.append(
                    {
                        "claim": claim,
                        "snapshot": builders.snapshot_name(name, claim),
                        "created": False,
                        "readyToUse": False,
                        "claimSpec": body["spec"],
                    }
                )
            status["snapshots"] = records  # recorded with the snapshots' creation below
        snapshot_class = self._snapshot_class(spec)
        if spec.backup.required and status["snapshots"] and snapshot_class is None:
            raise Abort("no VolumeSnapshotClass to take the required backups; nothing was changed")
        for record in status["snapshots"]:
            if not record["created"]:
                # An existing one (made before a restart) is taken as ours: the name is the run's.
                self.kube.create_snapshot(
                    ns,
                    builders.volume_snapshot(
                        run=name,
                        system=system["metadata"]["name"],
                        claim=record["claim"],
                        snapshot_class=snapshot_class,
                    ),
                )
                record["created"] = True
                # The deadline counts from the request, however late it was made
                # (after a restart, or while peering paused this replica).
                status["phaseStartTime"] = utc_text(self.now())
                continue
            existing = self.kube.get_snapshot(ns, record["snapshot"])
            if existing is None:
                raise Abort(f"VolumeSnapshot {record['snapshot']} disappeared before it was ready")
            snap_status = existing.get("status") or {}
            if snap_status.get("error", {}).get("message") and not snap_status.get("readyToUse"):
                log.info(
                    "snapshot %s reports: %s", record["snapshot"], snap_status["error"]["message"]
                )
            record["readyToUse"] = bool(snap_status.get("readyToUse"))
        if all(r["readyToUse"] for r in status["snapshots"]):
            return self._enter(
                run, status, Phase.RECORDING, f"{len(status['snapshots'])} snapshots ready"
            )
        if self._waited(status).total_seconds() > self.settings.snapshot_timeout_seconds:
            waiting = [r["snapshot"] for r in status["snapshots"] if not r["readyToUse"]]
            raise Abort(
                f"snapshots not ready within {self.settings.snapshot_timeout_seconds:.0f}s: "
                f"{', '.join(waiting)}; the workload was not touched"
            )
        return self.watched_wait

    def _recording(self, run: dict[str, Any], status: dict[str, Any]) -> float:
        ns = run["metadata"]["namespace"]
        _, spec = self._system(run)
        workload = self.kube.get_workload(spec.workload.kind, ns, spec.workload.name)
        if workload is None:
            raise Abort(f"{spec.workload.kind} {spec.workload.name} not found; nothing was changed")
        status["recorded"] = {
            "kind": spec.workload.kind,
            "name": spec.workload.name,
            "replicas": workload["spec"].get("replicas", 1),
            "template": workload["spec"]["template"],
        }
        return self._enter(run, status, Phase.UPDATING, "running the update Job")

    def _updating(self, run: dict[str, Any], status: dict[str, Any]) -> float:
        ns, name = run["metadata"]["namespace"], run["metadata"]["name"]
        job_name = builders.job_name(name)
        job = self.kube.get_job(ns, job_name)
        record = status.setdefault("job", {"name": job_name, "created": False})
        if job is None:
            if record["created"]:
                raise Abort(f"the update Job {job_name} was deleted before it finished")
            system, spec = self._system(run)
            now = self.now()
            window_end = parse_time(run["spec"]["window"]["end"])
            if now >= window_end:
                raise Abort("the window ended before the update could start; nothing was changed")
            run_timeout = parse_duration(spec.updates.run_timeout)
            deadline = min(run_timeout, window_end - now)
            self.kube.create_job(
                ns,
                builders.update_job(
                    run=name,
                    run_uid=run["metadata"]["uid"],
                    system=system["metadata"]["name"],
                    spec=spec,
                    classes=run["spec"]["classes"],
                    ticket=run["spec"].get("ticket"),
                    deadline_seconds=int(deadline.total_seconds()),
                ),
            )
            record["created"] = True
            return self.watched_wait
        record["created"] = True
        result = _job_result(job)
        if result is None:
            return self.watched_wait
        record["result"] = result
        if result != "Complete":
            termination = _termination(self.kube.pods(ns, {builders.LABEL_RUN: name}))
            if termination:
                record["termination"] = termination
            raise Abort(
                f"the update Job {job_name} failed: {_job_message(job)}"
                + (f"; {termination.splitlines()[0]}" if termination else "")
            )
        return self._enter(
            run, status, Phase.VERIFYING, "waiting for the workload to be ready again"
        )

    def _verifying(self, run: dict[str, Any], status: dict[str, Any]) -> float:
        ns = run["metadata"]["namespace"]
        system, spec = self._system(run)
        workload = self.kube.get_workload(spec.workload.kind, ns, spec.workload.name)
        if workload is not None and workload_ready(workload):
            return self._succeed(run, status, system, spec)
        limit = parse_duration(spec.updates.verify_timeout)
        if self._waited(status) > limit:
            raise Abort(
                f"{spec.workload.kind} {spec.workload.name} not ready within "
                f"{spec.updates.verify_timeout} after the update"
            )
        return self.settings.run_poll_seconds

    def _succeed(
        self, run: dict[str, Any], status: dict[str, Any], system: dict[str, Any], spec: Any
    ) -> float:
        self._prune(run, system, spec.backup.retain)
        self._end(
            run,
            status,
            system,
            Phase.SUCCEEDED,
            "the update succeeded and the workload is ready",
            "the update succeeded",
        )
        return 0.0

    def _end(
        self,
        run: dict[str, Any],
        status: dict[str, Any],
        system: dict[str, Any] | None,
        phase: Phase,
        message: str,
        summary: str | None = None,
    ) -> None:
        """Record a terminal phase: completion time, Ready, the request and the system,
        an Event (``summary``, default ``message``) and the metrics."""
        now = utc_text(self.now())
        succeeded = phase == Phase.SUCCEEDED
        self._enter(run, status, phase, message)
        status["completionTime"] = now
        status["conditions"] = c.set_condition(
            status.get("conditions", []),
            c.READY,
            succeeded,
            phase.value,
            summary or message,
            generation=None,
            now=now,
        )
        self._finish(run, status, system, success=succeeded)
        self.emit(run, "Normal" if succeeded else "Warning", phase.value, summary or message)

    # ---- rollback ----------------------------------------------------------------
    def _fail(
        self, run: dict[str, Any], status: dict[str, Any], phase: str, why: str
    ) -> float | None:
        rollback = phase in {Phase.UPDATING.value, Phase.VERIFYING.value}
        system = self._get_system(run)
        spec, _ = parse_system((system or {}).get("spec") or {})
        if rollback and spec is not None and spec.rollback.enabled and status.get("recorded"):
            self.emit(run, "Warning", "UpdateFailed", f"{why}; rolling back")
            status["restore"] = {"step": "ScaleDown", "claims": [], "completed": False}
            status["failure"] = why
            return self._enter(run, status, Phase.ROLLING_BACK, f"{why}; rolling back")
        if phase == Phase.ROLLING_BACK.value:
            self._end_failed(run, status, system, f"the rollback failed: {why}", needs_person=True)
        else:
            self._end_failed(run, status, system, why, needs_person=rollback)
        return None

    def _end_failed(
        self,
        run: dict[str, Any],
        status: dict[str, Any],
        system: dict[str, Any] | None,
        why: str,
        needs_person: bool,
    ) -> None:
        if needs_person:
            status["conditions"] = c.set_condition(
                status.get("conditions", []),
                c.NEEDS_ATTENTION,
                True,
                c.ROLLBACK_FAILED,
                f"{why}; a person must check the workload and its claims",
                generation=None,
                now=utc_text(self.now()),
            )
        self._end(run, status, system, Phase.FAILED, why)

    def _rollingback(self, run: dict[str, Any], status: dict[str, Any]) -> float:
        ns = run["metadata"]["namespace"]
        recorded = status["recorded"]
        kind, name = recorded["kind"], recorded["name"]
        restore = status["restore"]
        timeout = self.settings.rollback_timeout_seconds
        workload = self.kube.get_workload(kind, ns, name)
        if workload is None:
            raise Abort(f"{kind} {name} disappeared during the rollback")
        step = restore["step"]
        if step == "ScaleDown":
            if workload["spec"].get("replicas", 1) != 0:
                self.kube.scale(kind, ns, name, 0)
                status["phaseStartTime"] = utc_text(self.now())  # the deadline starts now
            match = workload["spec"]["selector"].get("matchLabels", {})
            if self.kube.pods(ns, match):
                if self._waited(status).total_seconds() > timeout:
                    raise Abort(
                        f"pods of {kind} {name} still present {timeout:.0f}s after scaling to zero"
                    )
                return self.settings.run_poll_seconds
            # The update Job's pods, finished or not, keep the claims they mount in use:
            # the claims' protection would hold their deletion until the pods are gone.
            job_pods = self.kube.pods(ns, {builders.LABEL_RUN: run["metadata"]["name"]})
            if job_pods:
                for pod in job_pods:
                    if not pod["metadata"].get("deletionTimestamp"):
                        self.kube.delete_pod(ns, pod["metadata"]["name"])
                if self._waited(status).total_seconds() > timeout:
                    raise Abort(f"the update Job's pods still present after {timeout:.0f}s")
                return self.settings.run_poll_seconds
            restore["step"] = "RestoreClaims"
            status["phaseStartTime"] = utc_text(self.now())
            return 0.0
        if step == "RestoreClaims":
            for record in status.get("snapshots", []):
                claim = record["claim"]
                if claim in restore["claims"]:
                    continue
                if self.kube.get_snapshot(ns, record["snapshot"]) is None:
                    raise Abort(
                        f"VolumeSnapshot {record['snapshot']} is gone; "
                        f"claim {claim} cannot be restored"
                    )
                existing = self.kube.get_claim(ns, claim)
                source = (existing or {}).get("spec", {}).get("dataSource") or {}
                if existing is not None and source.get("name") == record["snapshot"]:
                    restore["claims"].append(claim)  # already recreated from the snapshot
                    continue
                if existing is not None:
                    if not existing["metadata"].get("deletionTimestamp"):
                        self.kube.delete_claim(ns, claim)
                        status["phaseStartTime"] = utc_text(self.now())  # the deadline starts now
                    if self._waited(status).total_seconds() > timeout:
                        raise Abort(f"claim {claim} still terminating after {timeout:.0f}s")
                    return self.settings.run_poll_seconds
                original = {"metadata": {"name": claim}, "spec": record["claimSpec"]}
                self.kube.create_claim(ns, builders.restored_claim(original, record["snapshot"]))
                restore["claims"].append(claim)
            restore["step"] = "RestoreWorkload"
            status["phaseStartTime"] = utc_text(self.now())
            return 0.0
        if step == "RestoreWorkload":
            workload["spec"]["template"] = recorded["template"]
            workload["spec"]["replicas"] = recorded["replicas"]
            workload.pop("status", None)
            self.kube.replace_workload(kind, ns, workload)
            restore["step"] = "Verify"
            status["phaseStartTime"] = utc_text(self.now())
            return self.settings.run_poll_seconds
        # Verify
        if workload_ready(workload) and workload["spec"].get("replicas") == recorded["replicas"]:
            restore["completed"] = True
            why = status.get("failure", "the update failed")
            system = self._get_system(run)
            self._end(
                run,
                status,
                system,
                Phase.ROLLED_BACK,
                f"{why}; restored {len(restore['claims'])} claims and the workload",
            )
            return 0.0
        if self._waited(status).total_seconds() > timeout:
            raise Abort(f"{kind} {name} not ready {timeout:.0f}s after the restore")
        return self.settings.run_poll_seconds

    # ---- helpers -------------------------------------------------------------------
    def _snapshot_class(self, spec: Any) -> str | None:
        return resolve_snapshot_class(
            self.kube.snapshot_classes(),
            spec.backup.volume_snapshot_class_name,
            self.settings.default_snapshot_class,
        )

    def _set_request(self, run: dict[str, Any], state: str, message: str) -> None:
        ref = run["spec"].get("requestRef")
        if not ref:
            return
        ns = run["metadata"]["namespace"]
        if self.kube.get("updaterequests", ns, ref["name"]) is None:
            return
        self.kube.patch_status(
            "updaterequests",
            ns,
            ref["name"],
            {"state": state, "message": message, "runRef": {"name": run["metadata"]["name"]}},
        )

    def _finish(
        self,
        run: dict[str, Any],
        status: dict[str, Any],
        system: dict[str, Any] | None,
        success: bool,
    ) -> None:
        ns, name = run["metadata"]["namespace"], run["metadata"]["name"]
        system_spec = (system or {}).get("spec") or {}
        metrics.observe_run_end(
            run, status, system_spec.get("serviceModel", ""), system_spec.get("package", "")
        )
        self._set_request(
            run, "Completed", f"update run {name}: {status['phase']}: {status.get('message', '')}"
        )
        if system is None:
            return
        patch: dict[str, Any] = {
            "lastRun": {
                "name": name,
                "result": status["phase"],
                "completionTime": status.get("completionTime"),
            }
        }
        if success:
            patch["lastSuccessfulUpdate"] = status.get("completionTime")
        self.kube.patch_status("managedsystems", ns, system["metadata"]["name"], patch)

    def _prune(self, run: dict[str, Any], system: dict[str, Any], retain: int) -> None:
        """Keep the snapshots of the newest ``retain`` runs (this successful one among them)."""
        ns = run["metadata"]["namespace"]
        selector = f"{builders.LABEL_SYSTEM}={builders.label_value(system['metadata']['name'])}"
        by_run: dict[str, list[dict[str, Any]]] = {}
        for snap in self.kube.list_snapshots(ns, selector):
            by_run.setdefault(snap["metadata"]["labels"].get(builders.LABEL_RUN, ""), []).append(
                snap
            )
        newest_first = sorted(
            by_run,
            key=lambda r: min(s["metadata"]["creationTimestamp"] for s in by_run[r]),
            reverse=True,
        )
        keep = {run["metadata"]["name"], *newest_first[:retain]}
        for other in newest_first:
            if other not in keep:
                for snap in by_run[other]:
                    self.kube.delete_snapshot(ns, snap["metadata"]["name"])


def resolve_snapshot_class(
    classes: list[dict[str, Any]], wanted: str | None, fallback: str | None
) -> str | None:
    """The class a system's snapshots use: its own, else the cluster's default, else the setting."""
    names = {k["metadata"]["name"] for k in classes}
    if wanted:
        return wanted if wanted in names else None
    for k in classes:
        if (
            k["metadata"]
            .get("annotations", {})
            .get("snapshot.storage.kubernetes.io/is-default-class")
            == "true"
        ):
            return str(k["metadata"]["name"])
    return fallback if fallback in names else None


def _job_result(job: dict[str, Any]) -> str | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in {"Complete", "Failed"} and cond.get("status") == "True":
            return str(cond["type"])
    return None


TERMINATION_LIMIT = 1024
"""Characters of a failed update container's termination message kept in the run."""


def _termination(pods: list[dict[str, Any]]) -> str | None:
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


def _job_message(job: dict[str, Any]) -> str:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed":
            return f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
    return "failed"
