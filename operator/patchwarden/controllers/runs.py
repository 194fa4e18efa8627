"""The UpdateRun controller: observe, decide (``core/run.py``), act, write the run.

Each :meth:`Runner.step` reads what the run's recorded state needs
(:func:`~patchwarden.core.run.reads`), asks the pure state machine for the next
status and actions, applies the actions in order and writes the run's status
once. A step that only records and goes on at once is followed, in the same call
and the same write, by the next. It writes nothing but its run: the system and
request controllers derive ``lastRun`` and the requests' states from the runs.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.rest import ApiException

from patchwarden.api.common import parse_duration
from patchwarden.api.run import TERMINAL, UpdateRunStatus
from patchwarden.api.system import Hook, ManagedSystemSpec
from patchwarden.core import builders
from patchwarden.core import run as machine
from patchwarden.core.history import prunable
from patchwarden.core.run import Read, Wait
from patchwarden.core.settings import Settings
from patchwarden.core.status import GROUP_DEFAULT_ANNOTATION, parse_system, resolve_snapshot_class
from patchwarden.runtime import metrics
from patchwarden.runtime.alerts import Gate
from patchwarden.runtime.kube import KubeApi

log = logging.getLogger(__name__)

EventFn = Callable[[dict[str, Any], str, str, str], None]
"""(object, type Normal|Warning, reason, message)."""
BOOKKEEPING = (machine.Emit, machine.PhaseEnded, machine.FreezeEnded)
"""Actions that change nothing in the cluster: a step with only these may be chained."""
CHAINED_STEPS = 2
"""At most this many steps follow the first in one call (Snapshotting → Recording →
Updating: the workload recorded and the images to set, in one write)."""


def bookkeeping(out: machine.Transition) -> bool:
    """The step changes nothing in the cluster: only its status, Events and metrics."""
    return all(isinstance(a, BOOKKEEPING) for a in out.actions)


def identity(run: machine.Run, body: dict[str, Any]) -> str:
    """The run's uid (its namespace and name where a test's object has none)."""
    return str(body["metadata"].get("uid") or f"{run.namespace}/{run.name}")


def namespace_terminating(exc: ApiException) -> bool:
    """The API server refused to create an object because its namespace is being deleted."""
    return exc.status == 403 and "being terminated" in str(exc.body or "")


class Runner:
    def __init__(
        self,
        kube: KubeApi,
        settings: Settings,
        emit: EventFn,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        system_of: Callable[[str, str], dict[str, Any] | None] | None = None,
        watched_wait: float | None = None,
        gate: Gate | None = None,
        snapshot_classes: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.emit = emit
        self.now = now
        self.system_of = system_of or (lambda ns, name: kube.get("managedsystems", ns, name))
        """A system as the read model has it (the operator's runtime gives the watch-fed
        cache, which has listed every system before a run steps: a system it lacks is gone);
        without one, read from the API server."""
        self.watched_wait = watched_wait or settings.run_poll_seconds
        """How long to wait for a snapshot or the Job to change: longer than the poll when a
        watch of them wakes the run (the wait is then only a safety net)."""
        self.gate = gate
        """The alert gate, asked before each step that could change the workload."""
        self.snapshot_classes = snapshot_classes or kube.snapshot_classes
        """The VolumeSnapshotClasses (the systems controller's watch-fed copy: a window's
        runs would otherwise list them in every snapshotting step)."""
        self._counted: set[str] = set()
        """The runs whose end this process counted (by uid) and has not yet recorded as
        counted (a failed write of ``counted: true`` is retried without counting again)."""
        self.timeouts = machine.Timeouts(
            snapshot=timedelta(seconds=settings.snapshot_timeout_seconds),
            rollback=timedelta(seconds=settings.rollback_timeout_seconds),
            pod_security=settings.pod_security_level,
        )

    def step(self, body: dict[str, Any]) -> float | None:
        """Advance the run by one step; seconds until the next, or None when it has ended.
        ``body`` is updated with the status written."""
        run = machine.Run.of(body)
        status = UpdateRunStatus.model_validate(body.get("status") or {})
        if status.phase in TERMINAL and status.counted is not False:
            return None
        seen = self.observe(run, status)
        out = machine.advance(run, status, seen, self.now(), self.timeouts)
        passed = [status, out.status]  # where each chained step began, then where it ended
        for _ in range(CHAINED_STEPS):
            # A step that only records (its phase, an Event) and goes on at once is followed
            # by the next one now: one status write for both, the workload read once.
            if out.wait is not Wait.NOW or out.status.phase in TERMINAL:
                break
            if not bookkeeping(out):
                break
            ahead = self.observe(run, out.status, have=seen)
            following = machine.advance(run, out.status, ahead, self.now(), self.timeouts)
            if not bookkeeping(following) and out.status != status:
                # Written ahead: a step that changes the cluster is taken only from a status
                # that is written (the next call, at once). Merged, a crash after its change
                # and before the one write would lose what the steps before it recorded
                # (the workload's spec as it was before the update: crash matrix,
                # rolls-back n=10 after and n=11 before).
                break
            seen = ahead
            out = machine.Transition(
                following.status, [*out.actions, *following.actions], following.wait
            )
            passed.append(out.status)
        try:
            for action in out.actions:
                self.apply(run, body, action)
        except ApiException as exc:
            if not namespace_terminating(exc):
                raise
            # The run ends from where the last chained step began.
            out = machine.namespace_deleted(run, passed[-2], seen, self.now(), self.timeouts)
            passed[-1] = out.status
            for action in out.actions:  # an Event (refused there, and logged) and metrics
                self.apply(run, body, action)
        if out.status != status:
            wire = out.status.wire()
            self._write(run, body, wire)
            body["status"] = wire
            if out.status.counted:  # recorded: no step counts it again, the uid can go
                self._counted.discard(identity(run, body))
            for before, after in itertools.pairwise(passed):  # the chained phases too
                if after.phase != before.phase:
                    log.info(
                        "run %s/%s: %s: %s", run.namespace, run.name, after.phase, after.message
                    )
        match out.wait:
            case Wait.DONE:
                return None
            case Wait.NOW:
                return 0.0
            case Wait.WATCHED if seen.gate is not None:
                # Nothing wakes a run when an alert fires: look again at the gate's interval.
                return min(self.watched_wait, self.settings.alert_gate_interval_seconds)
            case Wait.WATCHED:
                return self.watched_wait
            case Wait.POLL:
                return self.settings.run_poll_seconds

    def _write(self, run: machine.Run, body: dict[str, Any], wire: dict[str, Any]) -> None:
        """The step's status, written only onto the run as the step read it (its
        resourceVersion): a write that lands late — sent by a replica cut off from the API
        server, after another took over and wrote — is refused (409), not applied over the
        other's. A conflict from a change of the run's metadata alone (a finalizer, an
        annotation) is written again at once onto the new version."""
        meta = body["metadata"]
        try:
            version = self.kube.patch_status(
                "updateruns", run.namespace, run.name, wire, meta.get("resourceVersion")
            )
        except ApiException as exc:
            fresh = (
                self.kube.get("updateruns", run.namespace, run.name) if exc.status == 409 else None
            )
            if fresh is None or (fresh.get("status") or {}) != (body.get("status") or {}):
                raise  # its status changed since the step read it: the step is taken again
            version = self.kube.patch_status(
                "updateruns", run.namespace, run.name, wire, fresh["metadata"]["resourceVersion"]
            )
        if version is not None:
            meta["resourceVersion"] = version

    # ---- observe ------------------------------------------------------------------------
    def system(self, ns: str, name: str) -> dict[str, Any] | None:
        return self.system_of(ns, name)

    def observe(
        self, run: machine.Run, status: UpdateRunStatus, have: machine.Observed | None = None
    ) -> machine.Observed:
        """Read what this step needs: the system always (from the cache), the rest by
        :func:`~patchwarden.core.run.reads`; the workload from ``have`` (what the step
        before it in the same call read, and changed nothing since) when it is there."""
        ns = run.namespace
        system = self.system(ns, run.spec.system_ref.name)
        spec: ManagedSystemSpec | None = parse_system((system or {}).get("spec") or {})[0]
        wanted = machine.reads(status, spec)
        workloads = self._workloads(ns, status, spec, wanted, have)
        job = self.kube.get_job(ns, builders.job_name(run.name)) if Read.JOB in wanted else None
        hook_result, hook_job, hook_pods = self.hook(run, status, spec, workloads)
        gate = None
        if self.gate is not None and spec is not None and machine.gated(status):
            gate = self.gate.verdict(ns, spec.updates.alert_gate)
        return machine.Observed(
            system=system,
            gate=gate,
            hook_result=hook_result,
            hook_job=hook_job,
            hook_pods=tuple(hook_pods),
            workloads=workloads,
            job=job,
            **self._storage(ns, status, spec, workloads, wanted),
            **self._pods(run, workloads, wanted, job),
        )

    def _workloads(
        self,
        ns: str,
        status: UpdateRunStatus,
        spec: ManagedSystemSpec | None,
        wanted: frozenset[Read],
        have: machine.Observed | None,
    ) -> dict[str, dict[str, Any] | None]:
        """The run's workloads (those it decided, else the system's), if the step reads
        them: name → body, None when absent; from ``have`` where the step before it in the
        same call read them."""
        if Read.WORKLOAD not in wanted:
            return {}
        known = have.workloads if have is not None else {}
        out: dict[str, dict[str, Any] | None] = {}
        for workload in machine.run_workloads(status, spec):
            body = known.get(workload.name)
            if body is not None and body.get("kind") == workload.kind:
                out[workload.name] = dict(body)
            else:
                out[workload.name] = self.kube.get_workload(workload.kind, ns, workload.name)
        return out

    def _storage(
        self,
        ns: str,
        status: UpdateRunStatus,
        spec: ManagedSystemSpec | None,
        workloads: dict[str, dict[str, Any] | None],
        wanted: frozenset[Read],
    ) -> dict[str, Any]:
        """The namespace's claim names, the claims, the snapshots and the snapshot class, as
        far as the step reads them (``Observed``'s fields of those names)."""
        found = [w for w in workloads.values() if w is not None]
        existing = None
        if Read.NAMESPACE_CLAIMS in wanted and found:
            existing = tuple(self.kube.names("PersistentVolumeClaim", ns))
        claims: dict[str, Any] = {}
        if Read.CLAIMS in wanted:
            for claim in machine.claims_to_read(status, spec, found, existing):
                claims[claim] = self.kube.get_claim(ns, claim)
        snapshots: dict[str, Any] = {}
        if Read.SNAPSHOTS in wanted:
            # The backups, and the failed-state snapshots not yet seen ready.
            failed_state = status.restore.failed_state if status.restore else []
            unready = [r for r in failed_state if not r.ready_to_use]
            for record in [*status.snapshots, *unready]:
                if record.created:
                    snapshots[record.snapshot] = self.kube.get_snapshot(ns, record.snapshot)
        snapshot_class = None
        if Read.SNAPSHOT_CLASS in wanted and spec is not None:
            snapshot_class = resolve_snapshot_class(
                self.snapshot_classes(),
                spec.backup.volume_snapshot_class_name,
                self.settings.default_snapshot_class,
            )
        return {
            "namespace_claims": existing,
            "claims": claims,
            "snapshots": snapshots,
            "snapshot_class": snapshot_class,
            **self._group(ns, status, spec, wanted),
        }

    def _group(
        self,
        ns: str,
        status: UpdateRunStatus,
        spec: ManagedSystemSpec | None,
        wanted: frozenset[Read],
    ) -> dict[str, Any]:
        """The VolumeGroupSnapshotClass, the run's group snapshot and, once it is ready, its
        members (``backup.consistency: Group``), as far as the step reads them."""
        found: dict[str, Any] = {}
        if Read.GROUP_CLASS in wanted and spec is not None:
            found["group_snapshot_class"] = resolve_snapshot_class(
                self.kube.group_snapshot_classes(),
                spec.backup.volume_group_snapshot_class_name,
                None,
                GROUP_DEFAULT_ANNOTATION,
            )
        record = status.group_snapshot
        if Read.GROUP in wanted and record is not None and record.created:
            group = self.kube.get_group_snapshot(ns, record.name)
            found["group_snapshot"] = group
            ready = bool(((group or {}).get("status") or {}).get("readyToUse"))
            if ready and not record.ready_to_use:
                found["group_members"] = self.kube.group_members(ns, record.name)
        return found

    def _pods(
        self,
        run: machine.Run,
        workloads: dict[str, dict[str, Any] | None],
        wanted: frozenset[Read],
        job: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The update Job's pods, the namespace's and the number of the workload's, as far
        as the step reads them (``Observed``'s fields of those names)."""
        ns = run.namespace
        job_pods: list[dict[str, Any]] = []
        if Read.JOB_PODS in wanted or machine.job_ended(job):
            job_pods = self.kube.pods(ns, {builders.LABEL_RUN: run.name})
            if Read.JOB_PODS not in wanted:  # the update Job's own: not its hooks'
                job_pods = [
                    p
                    for p in job_pods
                    if builders.LABEL_HOOK not in p["metadata"].get("labels", {})
                ]
        found = [w for w in workloads.values() if w is not None]
        namespace_pods: list[dict[str, Any]] = []
        if Read.NAMESPACE_PODS in wanted and found:
            namespace_pods = self.kube.pods(ns, {})
        workload_pods, restarts = 0, 0
        if Read.WORKLOAD_PODS in wanted:
            pods: dict[str, dict[str, Any]] = {}  # by name: selectors may overlap
            for workload in found:
                selector = workload["spec"]["selector"].get("matchLabels", {})
                pods.update((p["metadata"]["name"], p) for p in self.kube.pods(ns, selector))
            workload_pods = len(pods)
            restarts = sum(
                int(c.get("restartCount") or 0)
                for p in pods.values()
                for c in (p.get("status") or {}).get("containerStatuses") or []
            )
        return {
            "job_pods": tuple(job_pods),
            "namespace_pods": tuple(namespace_pods),
            "workload_pods": workload_pods,
            "workload_restarts": restarts,
        }

    def hook(
        self,
        run: machine.Run,
        status: UpdateRunStatus,
        spec: ManagedSystemSpec | None,
        workloads: dict[str, dict[str, Any] | None],
    ) -> tuple[machine.HookResult | None, dict[str, Any] | None, list[dict[str, Any]]]:
        """The hook this step runs (docs/hooks.md): an ``exec`` hook is run here, in a ready
        pod of its workload (its result is what the step observes); a ``job`` hook's Job
        and, once it ended, its pods are read."""
        ns = run.namespace
        stage = machine.hook_stage(status, spec, workloads)
        hook = machine.freeze_command(status, spec)  # a freeze or thaw command (docs/workloads.md)
        if hook is None and (stage is None or spec is None):
            return None, None, []
        if not workloads:
            return None, None, []
        if hook is None:
            assert spec is not None and stage is not None
            hook = machine.next_hook(status, spec, stage)
        assert hook is not None
        if hook.exec_ is not None:
            where = hook.exec_.workload or next(iter(workloads))
            workload = workloads.get(where)
            if workload is None:
                known = ", ".join(workloads)
                why = f"workload {where} is not one of the system's ({known}) or does not exist"
                return machine.HookResult(hook.name, False, why), None, []
            return self.exec_hook(ns, hook, workload), None, []
        assert stage is not None  # freeze and thaw commands are exec only
        name = builders.hook_job_name(run.name, stage, hook.name)
        job = self.kube.get_job(ns, name)
        pods: list[dict[str, Any]] = []
        if machine.job_ended(job):
            pods = self.kube.pods(
                ns, {builders.LABEL_HOOK: f"{stage}-{hook.name}", builders.LABEL_RUN: run.name}
            )
        return None, job, pods

    def exec_hook(self, ns: str, hook: Hook, workload: dict[str, Any]) -> machine.HookResult:
        assert hook.exec_ is not None
        container = hook.exec_.container
        selector = workload["spec"]["selector"].get("matchLabels", {})
        ready = [
            p
            for p in self.kube.pods(ns, selector)
            if (p.get("status") or {}).get("phase") == "Running"
            and any(
                c.get("name") == container and c.get("ready")
                for c in (p.get("status") or {}).get("containerStatuses") or []
            )
        ]
        if not ready:
            return machine.HookResult(
                hook.name,
                False,
                f"no running pod of the workload has a ready container {container}",
            )
        pod = sorted(p["metadata"]["name"] for p in ready)[0]
        timeout = parse_duration(hook.timeout).total_seconds()
        try:
            code, output = self.kube.exec(ns, pod, container, list(hook.exec_.command), timeout)
        except ApiException as exc:
            return machine.HookResult(
                hook.name, False, f"exec in pod {pod}: {exc.status} {exc.reason}"
            )
        except Exception as exc:  # the websocket: refused, closed
            return machine.HookResult(hook.name, False, f"exec in pod {pod}: {exc}")
        if code is None:
            return machine.HookResult(
                hook.name, False, f"{output}\ntimed out after {hook.timeout} in pod {pod}"
            )
        if code != 0:
            return machine.HookResult(
                hook.name, False, f"{output}\nexited with code {code} in pod {pod}"
            )
        return machine.HookResult(hook.name, True, output)

    # ---- act ---------------------------------------------------------------------------
    def apply(self, run: machine.Run, body: dict[str, Any], action: machine.Action) -> None:
        ns = run.namespace
        match action:
            case machine.CreateSnapshot(snapshot):
                self.kube.create_snapshot(ns, snapshot)
            case machine.LabelClaims(claims, key, value):
                for claim in claims:
                    self.kube.label_claim(ns, claim, key, value)
            case machine.CreateGroupSnapshot(group):
                self.kube.create_group_snapshot(ns, group)
            case machine.FreezeEnded(seconds):
                metrics.observe_phase("Frozen", seconds)
            case machine.SetImages(kind, name, images, version):
                self.kube.apply_images(kind, ns, name, dict(images), version)
            case machine.CreateJob(job):
                self.kube.create_job(ns, job)
            case machine.StopJob(name):
                self.kube.suspend_job(ns, name)
            case machine.ScaleToZero(kind, name):
                self.kube.scale(kind, ns, name, 0)
            case machine.ScaleBack(kind, name, replicas):
                self.kube.scale(kind, ns, name, replicas)
            case machine.DeletePod(name, uid):
                self.kube.delete_pod(ns, name, uid)
            case machine.DeleteClaim(name, uid):
                self.kube.delete_claim(ns, name, uid)
            case machine.CreateClaim(claim):
                self.kube.create_claim(ns, claim)
            case machine.ReplaceWorkload(kind, workload):
                self.kube.replace_workload(kind, ns, workload)
            case machine.PruneSnapshots(system, retain, failed_state_before):
                selector = f"{builders.LABEL_SYSTEM}={builders.label_value(system)}"
                listed = self.kube.list_snapshots(ns, selector)
                for name in prunable(listed, run.name, retain, failed_state_before):
                    self.kube.delete_snapshot(ns, name)
                # Group snapshots (backup.consistency: Group) by the same rule; their members
                # go with them (one list, empty where the group API is not installed).
                groups = self.kube.list_group_snapshots(ns, selector)
                for name in prunable(groups, run.name, retain, failed_state_before):
                    self.kube.delete_group_snapshot(ns, name)
            case machine.Emit(type_, reason, message):
                self.emit(body, type_, reason, message)
            case machine.PhaseEnded(phase, seconds):
                metrics.observe_phase(phase.value, seconds)
            case machine.RunEnded(model, package):
                # Counted before the status that says so is written (at least once); the
                # same process counts a run once, also when that write fails and is retried.
                uid = identity(run, body)
                if uid not in self._counted:
                    self._counted.add(uid)
                    metrics.observe_run_end(body, body.get("status") or {}, model, package)
