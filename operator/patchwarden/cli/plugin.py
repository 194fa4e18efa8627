"""``kubectl patchwarden``: the kubectl plugin (krew's convention: an executable named
``kubectl-patchwarden`` on the PATH), as ``kubectl cnpg`` is CloudNativePG's.

Every command reads what the operator wrote (statuses, conditions, Events, runs,
snapshots) and says it for a person; ``approve`` and ``reject`` are the only writes, and
they set exactly the annotations the approver role may set, in the caller's own name as
the API server knows it (``SelfSubjectReview``). The texts are built by pure functions
of the objects (tested without a cluster); :class:`Cluster` is the one place that talks
to the API server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from patchwarden.api.common import GROUP, VERSION
from patchwarden.cli.status import fetch, rows
from patchwarden.core.approval import (
    APPROVE,
    APPROVED_BY,
    PENDING,
    REJECT,
    REJECT_REASON,
    REJECTED_BY,
)
from patchwarden.core.builders import (
    FAILED_STATE,
    LABEL_RUN,
    LABEL_STATE,
    LABEL_SYSTEM,
    label_value,
)
from patchwarden.core.times import parse_time

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


class PluginError(Exception):
    """What a command cannot do, said for a person (exit status 1)."""


# ---- pure: what each command says --------------------------------------------------------
def _conditions(body: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c["type"]: c for c in (body.get("status") or {}).get("conditions") or []}


def _age(stamp: str | None, now: datetime) -> str:
    if not stamp:
        return "-"
    seconds = int((now - parse_time(stamp)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def describe(system: Mapping[str, Any]) -> list[str]:
    """One system for a person: its contract, its next window and what it will install,
    or why it is not updated."""
    meta, spec, status = system["metadata"], system.get("spec") or {}, system.get("status") or {}
    conds = _conditions(system)
    model = spec.get("serviceModel", "?") + (f" {spec['package']}" if spec.get("package") else "")
    duty = status.get("responsibility") or {}
    classes = ", ".join((spec.get("updates") or {}).get("classes") or []) or "by the model"
    lines = [
        f"{meta['namespace']}/{meta['name']} — customer {spec.get('customer')}, {model}",
        f"  contract: planned by {duty.get('planning', '?')}, executed by "
        f"{duty.get('execution', '?')}; classes {classes}",
    ]
    if status.get("eligible") is False:
        lines.append(f"  not eligible: {status.get('eligibilityReason')}")
    window = status.get("nextWindow")
    scheduled = conds.get("Scheduled") or {}
    if window:
        lines.append(
            f"  next window: {window['name']} {window['start']} → {window['end']} "
            f"(no run starts after {window.get('cutoff')})"
        )
    elif scheduled.get("status") == "False":
        lines.append(f"  next window: none — {scheduled.get('message')}")
    proposal = status.get("proposal")
    if proposal:
        lines.append(f"  proposal ({proposal['state']}): {proposal.get('message', '')}")
    pending = [
        f"{c['name']} {c.get('installed')}→{c.get('security') or c.get('feature')}"
        for c in status.get("components") or []
        if c.get("inScope", True) and (c.get("security") or c.get("feature"))
    ]
    if pending:
        lines.append(f"  will install (newest acceptable): {', '.join(pending)}")
    elif status.get("components"):
        lines.append("  will install: nothing (every component in scope is up to date)")
    for kind in ("Stalled", "ReleasesHeld", "UpdatesHalted", "EndOfLife"):
        cond = conds.get(kind)
        if cond and cond.get("status") == "True":
            lines.append(f"  {kind} ({cond.get('reason')}): {cond.get('message')}")
    last = status.get("lastRun")
    if last:
        lines.append(f"  last run: {last['name']} {last['result']} at {last.get('completionTime')}")
    return lines


def history_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The system's runs, newest first: when, trigger, from → to, outcome."""
    out = []
    for run in runs:
        spec, status = run.get("spec") or {}, run.get("status") or {}
        changes = status.get("changes") or [
            {"component": t.get("component"), "from": t.get("from"), "to": t.get("to")}
            for t in spec.get("targets") or []
        ]
        out.append(
            {
                "run": run["metadata"]["name"],
                "started": status.get("startTime") or run["metadata"].get("creationTimestamp", ""),
                "trigger": spec.get("trigger", ""),
                "changes": ", ".join(
                    f"{c.get('component')} {c.get('from') or '?'}→{c.get('to') or '?'}"
                    for c in changes
                )
                or "(the update Job only)",
                "outcome": status.get("phase") or "Pending",
                "message": (status.get("message") or "")[:160],
            }
        )
    return sorted(out, key=lambda r: r["started"], reverse=True)


def why(system: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why the system did or did not update in its last window: what the operator recorded
    (the skipped window, the last run, the conditions) and its Events, newest first."""
    status = system.get("status") or {}
    conds = _conditions(system)
    lines: list[str] = []
    skipped = status.get("skippedWindow")
    last = status.get("lastRun")
    skipped_at = skipped.get("start", "") if skipped else ""
    if skipped and (not last or skipped_at >= (last.get("completionTime") or "")):
        reason = skipped.get("reason") or "nothing newer to install"
        lines.append(f"window {skipped['name']} at {skipped_at}: no run started: {reason}")
    elif last:
        detail = f": {last['message']}" if last.get("message") else ""
        lines.append(
            f"update run {last['name']} ended {last['result']} at "
            f"{last.get('completionTime')}{detail}"
        )
    else:
        lines.append("no window has come yet in which an update was due")
    if status.get("eligible") is False:
        lines.append(f"not eligible: {status.get('eligibilityReason')}")
    for kind in ("Stalled", "UpdatesHalted", "ReleasesHeld", "Scheduled", "UpToDate"):
        cond = conds.get(kind)
        bad = cond is not None and (cond.get("status") == "True") != (
            kind in ("Scheduled", "UpToDate")
        )
        if cond is not None and bad and cond.get("message"):
            lines.append(f"{kind}={cond['status']} ({cond.get('reason')}): {cond['message']}")
    recent = sorted(events, key=lambda e: e.get("lastTimestamp") or "", reverse=True)[:10]
    if recent:
        lines.append("events (newest first):")
        lines += [
            f"  {e.get('lastTimestamp') or '-'} {e.get('type')} {e.get('reason')}: "
            f"{e.get('message')}"
            for e in recent
        ]
    return lines


def snapshot_rows(snapshots: Sequence[Mapping[str, Any]], now: datetime) -> list[dict[str, str]]:
    """The system's VolumeSnapshots: pre-update and failed-state, with their age."""
    out = []
    for snap in snapshots:
        meta, status = snap["metadata"], snap.get("status") or {}
        labels = meta.get("labels") or {}
        out.append(
            {
                "snapshot": meta["name"],
                "kind": "failed-state" if labels.get(LABEL_STATE) == FAILED_STATE else "pre-update",
                "run": labels.get(LABEL_RUN, ""),
                "claim": (snap.get("spec") or {})
                .get("source", {})
                .get("persistentVolumeClaimName", ""),
                "ready": str(bool(status.get("readyToUse"))).lower(),
                "age": _age(meta.get("creationTimestamp"), now),
                "created": meta.get("creationTimestamp", ""),
            }
        )
    return sorted(out, key=lambda r: r["created"], reverse=True)


def restore_hint(namespace: str, row: Mapping[str, str]) -> str:
    """How to restore a claim from a snapshot by hand (a new claim from it; the workload
    is then pointed at it, or the old claim replaced once the workload is stopped)."""
    return (
        f"kubectl -n {namespace} apply -f - <<EOF\n"
        "apiVersion: v1\nkind: PersistentVolumeClaim\n"
        f"metadata: {{name: {row['claim']}-restored}}\n"
        "spec:\n"
        "  accessModes: [ReadWriteOnce]   # as the original claim's\n"
        "  resources: {requests: {storage: <the original claim's size>}}\n"
        f"  dataSource: {{apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, "
        f"name: {row['snapshot']}}}\nEOF"
    )


def answer(
    system: Mapping[str, Any], user: str, window: str | None, reject: str | None
) -> dict[str, str]:
    """The annotations that approve (or, with ``reject``: a reason, reject) the system's
    proposal in ``user``'s name; PluginError when there is none to answer."""
    meta = system["metadata"]
    proposal = (system.get("status") or {}).get("proposal")
    name = f"{meta['namespace']}/{meta['name']}"
    if not proposal:
        raise PluginError(f"{name} has no proposal to answer (status.proposal is empty)")
    start = window or proposal["start"]
    if start != proposal["start"]:
        raise PluginError(
            f"{name}'s proposal is for the window at {proposal['start']}, not {start}"
        )
    if reject is None and proposal["state"] != PENDING:
        raise PluginError(f"{name}'s proposal is {proposal['state']}: {proposal.get('message')}")
    if reject is not None:
        return {REJECT: start, REJECTED_BY: user, REJECT_REASON: reject}
    return {APPROVE: start, APPROVED_BY: user}


# ---- the API server -----------------------------------------------------------------------
class Cluster:
    """The API server, through the caller's kubeconfig (``--kubeconfig``, ``--context``)."""

    def __init__(
        self, kubeconfig: str | None, context: str | None, as_user: str | None = None
    ) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        self.default_namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
        self.client = client
        self.api = client.ApiClient(configuration)
        if as_user:  # kubectl's --as: the API server authorizes (and records) that user
            self.api.set_default_header("Impersonate-User", as_user)
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def systems(self, namespace: str | None) -> list[dict[str, Any]]:
        return fetch(namespace, self.custom)

    def system(self, namespace: str, name: str) -> dict[str, Any]:
        from kubernetes.client.rest import ApiException

        try:
            return dict(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "managedsystems", name
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                raise PluginError(f"ManagedSystem {namespace}/{name} not found") from exc
            raise

    def runs(self, namespace: str, system: str) -> list[dict[str, Any]]:
        found = self.custom.list_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "updateruns",
            label_selector=f"{LABEL_SYSTEM}={label_value(system)}",
        )
        return [r for r in found["items"] if r["spec"]["systemRef"]["name"] == system]

    def events(self, namespace: str, system: str) -> list[dict[str, Any]]:
        found = self.core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.kind=ManagedSystem,involvedObject.name={system}",
        )
        return [self.api.sanitize_for_serialization(e) for e in found.items]

    def snapshots(self, namespace: str, system: str) -> list[dict[str, Any]]:
        found = self.custom.list_namespaced_custom_object(
            "snapshot.storage.k8s.io",
            "v1",
            namespace,
            "volumesnapshots",
            label_selector=f"{LABEL_SYSTEM}={label_value(system)}",
        )
        return list(found["items"])

    def whoami(self) -> str:
        review = self.client.AuthenticationV1Api(self.api).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        )
        return str(review.status.user_info.username)

    def annotate(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "managedsystems",
            name,
            {"metadata": {"annotations": dict(annotations)}},
        )

    def plan_inputs(self, namespace: str | None) -> list[dict[str, Any]]:
        """What ``patchwarden plan`` reads, from the cluster: the systems, their requests
        and workloads, and the catalogs."""
        systems = self.systems(namespace)
        if namespace:
            requests = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "updaterequests"
            )["items"]
        else:
            requests = self.custom.list_cluster_custom_object(GROUP, VERSION, "updaterequests")[
                "items"
            ]
        catalogs = self.custom.list_cluster_custom_object(GROUP, VERSION, "releasecatalogs")
        apps = self.client.AppsV1Api(self.api)
        serialize = self.api.sanitize_for_serialization
        workloads = []
        for system in systems:
            spec, ns = system["spec"], system["metadata"]["namespace"]
            for ref in spec.get("workloads") or [spec.get("workload") or {}]:
                if ref.get("kind") not in {"Deployment", "StatefulSet"}:
                    continue
                read = (
                    apps.read_namespaced_deployment
                    if ref["kind"] == "Deployment"
                    else apps.read_namespaced_stateful_set
                )
                try:
                    body = serialize(read(ref["name"], ns))
                except self.client.rest.ApiException:
                    continue  # not found: the plan says the versions are unknown
                body.update({"apiVersion": "apps/v1", "kind": ref["kind"]})
                workloads.append(body)
        return [*catalogs["items"], *workloads, *systems, *requests]


# ---- the commands -------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl patchwarden",
        description="patchwarden's kubectl plugin: the systems' contracts, plans, approvals, "
        "history and snapshots, from what the operator recorded in the cluster.",
    )
    parser.add_argument("-n", "--namespace", help="the namespace (default: the context's)")
    parser.add_argument("--kubeconfig", help="path to the kubeconfig (default: kubectl's)")
    parser.add_argument("--context", help="the kubeconfig context to use")
    parser.add_argument("--as", dest="as_user", help="act as this user (kubectl's --as)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    status = commands.add_parser(
        "status",
        help="the fleet, or one system: contract, next "
        "window, what it will install, why it is not eligible",
    )
    status.add_argument("system", nargs="?")
    status.add_argument("-A", "--all-namespaces", action="store_true")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    plan = commands.add_parser(
        "plan",
        help="the next windows of the namespace's systems "
        "(or every namespace's) and what each would install",
    )
    plan.add_argument("-A", "--all-namespaces", action="store_true")
    plan.add_argument("--count", type=int, default=5)
    plan.add_argument("-o", "--output", choices=["table", "json"], default="table")
    approve = commands.add_parser("approve", help="approve a system's proposal, in your name")
    approve.add_argument("system")
    approve.add_argument("--window", help="the proposed window's start (default: the proposal's)")
    reject = commands.add_parser("reject", help="reject a system's proposal, with a reason")
    reject.add_argument("system")
    reject.add_argument("--reason", required=True)
    reject.add_argument("--window", help="the proposed window's start (default: the proposal's)")
    for name, text in (
        ("history", "a system's runs: when, from → to, outcome"),
        ("why", "why a system did or did not update in its last window"),
        ("snapshots", "a system's pre-update and failed-state snapshots, and how to restore one"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("system")
    return parser


def _table(
    items: Sequence[Mapping[str, Any]], columns: Sequence[str], out: Callable[[str], None]
) -> None:
    if not items:
        out("(none)")
        return
    widths = [max(len(c), *(len(str(i.get(c) or "")) for i in items)) for c in columns]
    out("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for item in items:
        out(
            "  ".join(
                str(item.get(c) or "").ljust(w) for c, w in zip(columns, widths, strict=True)
            ).rstrip()
        )


def run(args: argparse.Namespace, cluster: Cluster, out: Callable[[str], None] = print) -> int:
    ns = args.namespace or cluster.default_namespace
    now = datetime.now(UTC)
    if args.command == "status":
        if args.system:
            for line in describe(cluster.system(ns, args.system)):
                out(line)
            return 0
        found = rows(cluster.systems(None if args.all_namespaces else ns))
        if args.output == "json":
            out(json.dumps({"systems": found}, indent=2))
        else:
            columns = [
                "namespace",
                "name",
                "model",
                "package",
                "eligible",
                "nextWindow",
                "result",
                "pending",
                "stalled",
            ]
            _table(found, columns, out)
        return 0
    if args.command == "plan":
        import yaml

        from patchwarden.cli.render import plan_table
        from patchwarden.core.plan import Inputs, as_json, load, plan

        inputs = Inputs()
        docs = cluster.plan_inputs(None if args.all_namespaces else ns)
        inputs.add(load(yaml.safe_dump_all(docs), "the cluster"))
        plans, orphans = plan(inputs, now, args.count)
        if args.output == "json":
            out(json.dumps(as_json(plans, orphans), indent=2))
        else:
            plan_table(plans, orphans)
        return 0
    if args.command in ("approve", "reject"):
        system = cluster.system(ns, args.system)
        user = cluster.whoami()
        reason = args.reason if args.command == "reject" else None
        cluster.annotate(ns, args.system, answer(system, user, args.window, reason))
        done = "rejected" if reason is not None else "approved"
        start = args.window or system["status"]["proposal"]["start"]
        out(f"{ns}/{args.system}: the proposal for the window at {start} {done} as {user}")
        return 0
    if args.command == "history":
        found = history_rows(cluster.runs(ns, args.system))
        _table(found, ["run", "started", "trigger", "changes", "outcome", "message"], out)
        return 0
    if args.command == "why":
        system = cluster.system(ns, args.system)
        for line in why(system, cluster.events(ns, args.system)):
            out(line)
        return 0
    found = snapshot_rows(cluster.snapshots(ns, args.system), now)
    _table(found, ["snapshot", "kind", "run", "claim", "ready", "age"], out)
    if found:
        out("")
        out("To restore a claim by hand from one of them (stop the workload first):")
        out(restore_hint(ns, found[0]))
    return 0


def main(argv: list[str] | None = None) -> int:
    from kubernetes.client.rest import ApiException
    from kubernetes.config import ConfigException

    args = build_parser().parse_args(argv)
    try:
        return run(args, Cluster(args.kubeconfig, args.context, args.as_user))
    except PluginError as exc:
        print(f"kubectl patchwarden {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ApiException as exc:
        said = exc.body if isinstance(exc.body, str) else str(exc)
        with contextlib.suppress(ValueError, AttributeError):
            said = json.loads(said).get("message", said)
        print(
            f"kubectl patchwarden {args.command}: {exc.status} {exc.reason}: {said}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except (ConfigException, OSError) as exc:
        print(
            f"kubectl patchwarden {args.command}: cannot reach the cluster: {exc}", file=sys.stderr
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
