"""Invalid objects, each with the field the rejection must name.

Used twice: the real API server must reject each one (tests/cluster), and the
offline validation of ``patchwarden plan`` must too (tests/unit).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SYSTEM: dict[str, Any] = {
    "apiVersion": "patchwarden.io/v1alpha1",
    "kind": "ManagedSystem",
    "metadata": {"name": "sys"},
    "spec": {
        "customer": "acme",
        "serviceModel": "PaaS",
        "package": "advanced",
        "workload": {"kind": "Deployment", "name": "app"},
        "components": [
            {
                "name": "debian",
                "version": "12",
                "installedBy": "provider",
                "source": "standard-repository",
            }
        ],
        "maintenance": {
            "timeZone": "Europe/Berlin",
            "windows": [{"name": "sunday", "cron": "0 23 * * 0", "duration": "4h"}],
            "freezes": [
                {"name": "xmas", "once": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00Z"}
            ],
            "cadence": {"period": "quarterly"},
        },
    },
}

CATALOG: dict[str, Any] = {
    "apiVersion": "patchwarden.io/v1alpha1",
    "kind": "ReleaseCatalog",
    "metadata": {"name": "cat"},
    "spec": {
        "components": [
            {
                "name": "postgresql",
                "releases": [
                    {
                        "version": "15.8",
                        "image": "example.com/pg:15.8",
                        "classes": ["security"],
                        "released": "2024-08-08T00:00:00Z",
                    }
                ],
            }
        ]
    },
}
"""Cluster-scoped: the API server checks it with a dry run."""

REQUEST: dict[str, Any] = {
    "apiVersion": "patchwarden.io/v1alpha1",
    "kind": "UpdateRequest",
    "metadata": {"name": "req"},
    "spec": {"systemRef": {"name": "sys"}, "classes": ["security"], "ticket": "HD-1"},
}


@dataclass(frozen=True)
class Bad:
    name: str
    base: dict[str, Any]
    change: Callable[[dict[str, Any]], None]
    field: str
    """The path the API server's message must contain, e.g. spec.package."""
    whole: bool = False
    """``change`` takes the whole object (metadata too), not only its spec."""
    offline: bool = True
    """The offline validation (plan, operator) must reject it too; False for what
    only the API server guards (metadata, unknown fields it prunes)."""

    def object(self) -> dict[str, Any]:
        obj = copy.deepcopy(self.base)
        self.change(obj if self.whole else obj["spec"])
        return obj


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[int(last) if last.isdigit() else last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return change


_DELETE = object()
W0 = "maintenance.windows.0"

CATALOGUE = [
    Bad("unknown service model", SYSTEM, _set("serviceModel", "Colo"), "spec.serviceModel"),
    Bad(
        "package on SaaS",
        SYSTEM,
        lambda s: (s.update(serviceModel="SaaS"), s["maintenance"].pop("cadence")),
        "spec.package",
    ),
    Bad(
        "PaaS without package",
        SYSTEM,
        lambda s: (s.pop("package"), s["maintenance"].pop("cadence")),
        "spec.package",
    ),
    Bad("cadence on basic", SYSTEM, _set("package", "basic"), "spec.maintenance.cadence"),
    Bad(
        "feature updates on PaaS",
        SYSTEM,
        _set("updates", {"classes": ["security", "feature"]}),
        "spec.updates.classes",
    ),
    Bad(
        "unknown update class",
        SYSTEM,
        _set("updates", {"classes": ["bugfix"]}),
        "spec.updates.classes[0]",
    ),
    Bad("workload kind Pod", SYSTEM, _set("workload.kind", "Pod"), "spec.workload.kind"),
    Bad("missing customer", SYSTEM, _set("customer", _DELETE), "spec.customer"),
    Bad(
        "admin access not a boolean",
        SYSTEM,
        _set("customerAdminAccess", "yes"),
        "spec.customerAdminAccess",
    ),
    Bad(
        "negative duration",
        SYSTEM,
        _set(f"{W0}.duration", "-1h"),
        f"spec.{W0.replace('.0', '[0]')}.duration",
    ),
    Bad(
        "duration without unit",
        SYSTEM,
        _set(f"{W0}.duration", "90"),
        "spec.maintenance.windows[0].duration",
    ),
    Bad(
        "zero duration",
        SYSTEM,
        _set(f"{W0}.duration", "0h"),
        "spec.maintenance.windows[0].duration",
    ),
    Bad(
        "cron and rrule together",
        SYSTEM,
        _set(f"{W0}.rrule", "FREQ=WEEKLY"),
        "spec.maintenance.windows[0].cron",
    ),
    Bad("no recurrence", SYSTEM, _set(f"{W0}.cron", _DELETE), "spec.maintenance.windows[0].cron"),
    Bad(
        "window without duration",
        SYSTEM,
        _set(f"{W0}.duration", _DELETE),
        "spec.maintenance.windows[0].duration",
    ),
    Bad("at without rrule", SYSTEM, _set(f"{W0}.at", "02:00"), "spec.maintenance.windows[0].at"),
    Bad(
        "at out of range",
        SYSTEM,
        lambda s: (
            s["maintenance"]["windows"][0].update(cron=None, rrule="FREQ=WEEKLY", at="25:00")
            or s["maintenance"]["windows"][0].pop("cron")
        ),
        "spec.maintenance.windows[0].at",
    ),
    Bad(
        "offset too large",
        SYSTEM,
        _set(f"{W0}.offsetDays", 40),
        "spec.maintenance.windows[0].offsetDays",
    ),
    Bad(
        "window name not a DNS label",
        SYSTEM,
        _set(f"{W0}.name", "Sunday Night"),
        "spec.maintenance.windows[0].name",
    ),
    Bad(
        "duplicate window names",
        SYSTEM,
        lambda s: s["maintenance"]["windows"].append(dict(s["maintenance"]["windows"][0])),
        "spec.maintenance.windows[1]",
    ),
    Bad(
        "once not a timestamp",
        SYSTEM,
        _set("maintenance.freezes.0.once", "christmas"),
        "spec.maintenance.freezes[0].once",
    ),
    Bad(
        "freeze end without once",
        SYSTEM,
        lambda s: (
            s["maintenance"]["freezes"][0].update(once=None, cron="0 0 24 12 *")
            or s["maintenance"]["freezes"][0].pop("once")
        ),
        "spec.maintenance.freezes[0].end",
    ),
    Bad(
        "cadence weeks without everyWeeks",
        SYSTEM,
        _set("maintenance.cadence", {"period": "weeks"}),
        "spec.maintenance.cadence.everyWeeks",
    ),
    Bad(
        "unknown cadence period",
        SYSTEM,
        _set("maintenance.cadence", {"period": "yearly"}),
        "spec.maintenance.cadence.period",
    ),
    Bad(
        "component installed by a vendor",
        SYSTEM,
        _set("components.0.installedBy", "vendor"),
        "spec.components[0].installedBy",
    ),
    Bad(
        "end of life not a date",
        SYSTEM,
        _set("components.0.endOfLife", "soon"),
        "spec.components[0].endOfLife",
    ),
    Bad("retain zero snapshots", SYSTEM, _set("backup", {"retain": 0}), "spec.backup.retain"),
    Bad("volume name with spaces", SYSTEM, _set("volumes", ["my data"]), "spec.volumes[0]"),
    Bad("request without ticket", REQUEST, _set("ticket", _DELETE), "spec.ticket"),
    Bad("request for an unknown class", REQUEST, _set("classes", ["bugfix"]), "spec.classes[0]"),
    Bad("request with no class", REQUEST, _set("classes", []), "spec.classes"),
    Bad(
        "request notBefore not a timestamp",
        REQUEST,
        _set("notBefore", "next week"),
        "spec.notBefore",
    ),
    Bad("request without systemRef", REQUEST, _set("systemRef", _DELETE), "spec.systemRef"),
]


def _meta(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        obj["metadata"][key] = value

    return change


CATALOGUE += [
    Bad(
        "1 MB annotation",
        SYSTEM,
        _meta("annotations", {"a": "x" * 1_000_000}),
        "metadata.annotations",
        whole=True,
        offline=False,
    ),
    Bad(
        "300-character name",
        SYSTEM,
        _meta("name", "s" * 300),
        "metadata.name",
        whole=True,
        offline=False,
    ),
    Bad(
        "unicode name",
        SYSTEM,
        _meta("name", "système-ünïcode"),
        "metadata.name",
        whole=True,
        offline=False,
    ),
    Bad(
        "workload in another namespace",
        SYSTEM,
        _set("workload.namespace", "other"),
        "spec.workload.namespace",
    ),
    Bad(
        "request naming another namespace",
        REQUEST,
        _set("systemRef.namespace", "other"),
        "spec.systemRef.namespace",
    ),
    Bad(
        "duration with a trailing number",
        SYSTEM,
        _set(f"{W0}.duration", "1h30"),
        "spec.maintenance.windows[0].duration",
    ),
    Bad("empty customer", SYSTEM, _set("customer", ""), "spec.customer"),
    Bad(
        "workload and workloads",
        SYSTEM,
        _set("workloads", [{"kind": "StatefulSet", "name": "db"}]),
        "spec.workloads",
    ),
    Bad(
        "a workload named twice",
        SYSTEM,
        lambda s: (
            s.pop("workload"),
            s.update(workloads=[{"kind": "StatefulSet", "name": "db"}] * 2),
        ),
        "spec.workloads[1]",
    ),
    Bad(
        "a component in a workload the system does not list",
        SYSTEM,
        lambda s: (
            s.pop("workload"),
            s.update(workloads=[{"kind": "StatefulSet", "name": "db"}]),
            s["components"].append(
                {
                    "name": "postgresql",
                    "container": "pg",
                    "workload": "cache",
                    "installedBy": "provider",
                    "source": "standard-repository",
                }
            ),
        ),
        "spec.components",
    ),
    Bad(
        "a container without its workload among several",
        SYSTEM,
        lambda s: (
            s.pop("workload"),
            s.update(
                workloads=[
                    {"kind": "StatefulSet", "name": "db"},
                    {"kind": "Deployment", "name": "app"},
                ]
            ),
            s["components"].append(
                {
                    "name": "postgresql",
                    "container": "pg",
                    "installedBy": "provider",
                    "source": "standard-repository",
                }
            ),
        ),
        "spec.components",
    ),
    Bad(
        "freeze hooks with Stopped",
        SYSTEM,
        _set(
            "backup",
            {
                "consistency": "Stopped",
                "freeze": [{"name": "f", "container": "c", "freeze": ["a"], "thaw": ["b"]}],
            },
        ),
        "spec.backup.freeze",
    ),
    Bad(
        "129-character component name",
        SYSTEM,
        _set("components.0.name", "c" * 129),
        "spec.components[0].name",
    ),
    Bad(
        "time zone of 65 characters",
        SYSTEM,
        _set("maintenance.timeZone", "Z" * 65),
        "spec.maintenance.timeZone",
    ),
    Bad(
        "everyWeeks of zero",
        SYSTEM,
        _set("maintenance.cadence", {"period": "weeks", "everyWeeks": 0}),
        "spec.maintenance.cadence.everyWeeks",
    ),
    Bad(
        "33 windows",
        SYSTEM,
        _set(
            "maintenance.windows",
            [{"name": f"w{i}", "cron": "0 1 * * *", "duration": "1h"} for i in range(33)],
        ),
        "spec.maintenance.windows",
    ),
]


BOUND = {"name": "postgresql", "installedBy": "provider", "source": "standard-repository"}
R0 = "components.0.releases.0"
CATALOGUE += [
    Bad(
        "component with version and container",
        SYSTEM,
        _set("components.0", {**BOUND, "version": "15.8", "container": "db"}),
        "spec.components[0].version",
    ),
    Bad(
        "component with neither version nor container",
        SYSTEM,
        _set("components.0", BOUND),
        "spec.components[0].version",
    ),
    Bad(
        "container name not a DNS label",
        SYSTEM,
        _set("components.0", {**BOUND, "container": "DB_1"}),
        "spec.components[0].container",
    ),
    Bad(
        "unknown track",
        SYSTEM,
        _set("components.0", {**BOUND, "container": "db", "track": "newest"}),
        "spec.components[0].track",
    ),
    Bad(
        "catalog name", SYSTEM, _set("updates", {"catalogs": ["Tested!"]}), "spec.updates.catalogs"
    ),
    Bad(
        "approveAfter in days",
        SYSTEM,
        _set("updates", {"approveAfter": "7d"}),
        "spec.updates.approveAfter",
    ),
    Bad(
        "alert gate without a query",
        SYSTEM,
        _set("updates", {"alertGate": {"onError": "Block"}}),
        "spec.updates.alertGate.query",
    ),
    Bad(
        "alert gate's empty query",
        SYSTEM,
        _set("updates", {"alertGate": {"query": ""}}),
        "spec.updates.alertGate.query",
    ),
    Bad(
        "alert gate's onError not Block or Proceed",
        SYSTEM,
        _set("updates", {"alertGate": {"query": "up == 0", "onError": "ignore"}}),
        "spec.updates.alertGate.onError",
    ),
    Bad(
        "alert gate naming its own endpoint",
        SYSTEM,
        _set("updates", {"alertGate": {"query": "up == 0", "url": "http://10.0.0.1:9090"}}),
        "spec.updates.alertGate.url",
    ),
    Bad(
        "wave name not a DNS label",
        CATALOG,
        _set("rollout", {"waves": [{"name": "Canary!", "selector": {}}]}),
        "spec.rollout.waves[0].name",
    ),
    Bad(
        "repeated wave name",
        CATALOG,
        _set("rollout", {"waves": [{"name": "a", "selector": {}}, {"name": "a", "selector": {}}]}),
        "spec.rollout.waves",
    ),
    Bad(
        "wave soak in days",
        CATALOG,
        _set("rollout", {"waves": [{"name": "a", "selector": {}, "soak": "1d"}]}),
        "spec.rollout.waves[0].soak",
    ),
    Bad(
        "selector operator In without values",
        CATALOG,
        _set(
            "rollout",
            {
                "waves": [
                    {
                        "name": "a",
                        "selector": {"matchExpressions": [{"key": "k", "operator": "In"}]},
                    }
                ]
            },
        ),
        # The API server names the requirement (its values are absent), offline its values.
        "spec.rollout.waves[0].selector.matchExpressions[0]",
    ),
    Bad(
        "unknown selector operator",
        CATALOG,
        _set(
            "rollout",
            {
                "waves": [
                    {
                        "name": "a",
                        "selector": {
                            "matchExpressions": [{"key": "k", "operator": "Gt", "values": ["1"]}]
                        },
                    }
                ]
            },
        ),
        "spec.rollout.waves[0].selector.matchExpressions[0].operator",
    ),
    Bad("rollout without waves", CATALOG, _set("rollout", {"waves": []}), "spec.rollout.waves"),
    Bad(
        "approval on a system updated only on request",
        SYSTEM,
        lambda s: (
            s.update(package="basic", updates={"approval": {}}),
            s["maintenance"].pop("cadence"),
        ),
        "spec.updates.approval",
    ),
    Bad(
        "approval deadline in days",
        SYSTEM,
        _set("updates", {"approval": {"before": "1d"}}),
        "spec.updates.approval.before",
    ),
    Bad(
        "approval required not a boolean",
        SYSTEM,
        _set("updates", {"approval": {"required": "yes"}}),
        "spec.updates.approval.required",
    ),
    Bad(
        "repeated release version",
        CATALOG,
        lambda s: s["components"][0]["releases"].append(dict(s["components"][0]["releases"][0])),
        "spec.components[0].releases",
    ),
    Bad("empty image", CATALOG, _set(f"{R0}.image", ""), "spec.components[0].releases[0].image"),
    Bad(
        "image with a broken digest",
        CATALOG,
        _set(f"{R0}.image", "example.com/pg@sha256:abc"),
        "spec.components[0].releases[0].image",
    ),
    Bad(
        "release without classes",
        CATALOG,
        _set(f"{R0}.classes", []),
        "spec.components[0].releases[0].classes",
    ),
    Bad(
        "version not starting with a digit",
        CATALOG,
        _set(f"{R0}.version", "v15.8"),
        "spec.components[0].releases[0].version",
    ),
    Bad(
        "SemVer scheme with a Debian version",
        CATALOG,
        _set("components.0.versionScheme", "SemVer"),
        "spec.components[0].releases",
    ),
    Bad(
        "end of life before the release",
        CATALOG,
        _set(f"{R0}.endOfLife", "2024-01-01"),
        "spec.components[0].releases[0].endOfLife",
    ),
    Bad(
        "repeated component",
        CATALOG,
        lambda s: s["components"].append(dict(s["components"][0])),
        "spec.components",
    ),
]


@dataclass(frozen=True)
class Unusable:
    """Accepted by the API server (no schema can tell) but not usable: the operator
    must report it as Stalled with ``reason`` and a message containing ``words``."""

    name: str
    change: Callable[[dict[str, Any]], None]
    reason: str
    words: str


def _window(**window: Any) -> Callable[[dict[str, Any]], None]:
    return _set("maintenance.windows", [{"name": "w", **window}])


UNUSABLE = [
    Unusable(
        "unknown time zone",
        _set("maintenance.timeZone", "Mars/Olympus"),
        "InvalidSpec",
        "spec.maintenance.timeZone",
    ),
    Unusable(
        "cron out of range",
        _window(cron="61 25 * * *", duration="1h"),
        "InvalidSpec",
        "spec.maintenance.windows[0].cron",
    ),
    Unusable(
        "cron with six fields",
        _window(cron="0 0 1 * * *", duration="1h"),
        "InvalidSpec",
        "5-field cron",
    ),
    Unusable(
        "nonsense RRULE",
        _window(rrule="FREQ=SOMETIMES", duration="1h"),
        "InvalidSpec",
        "spec.maintenance.windows[0].rrule",
    ),
    Unusable(
        "iCalendar without events",
        _window(ical="BEGIN:VCALENDAR\nEND:VCALENDAR\n"),
        "InvalidSpec",
        "spec.maintenance.windows[0].ical",
    ),
    Unusable(
        "window longer than its period",
        _window(cron="0 1 * * *", duration="25h"),
        "WindowLongerThanPeriod",
        "window w",
    ),
    Unusable(
        "freeze over every window",
        lambda s: s["maintenance"].update(
            freezes=[
                {"name": "forever", "once": "2000-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z"}
            ]
        ),
        "NoUsableWindow",
        "frozen",
    ),
    Unusable(
        "expected duration longer than the window",
        _set("updates", {"expectedDuration": "5h"}),
        "NoUsableWindow",
        "shorter than updates.expectedDuration",
    ),
    Unusable(
        "workload that does not exist",
        _set("workload.name", "nowhere"),
        "WorkloadNotFound",
        "Deployment nowhere",
    ),
    Unusable(
        "claims that do not exist",
        _set("volumes", ["no-such-claim"]),
        "ClaimNotFound",
        "no-such-claim",
    ),
    Unusable(
        "snapshot class that does not exist",
        _set("backup", {"volumeSnapshotClassName": "gone"}),
        "SnapshotClassNotFound",
        "gone",
    ),
    Unusable(
        "component bound to a container the workload lacks",
        _set("components", [{**BOUND, "container": "nope"}]),
        "ContainerNotFound",
        "spec.components[0]: container nope not found in Deployment app",
    ),
    Unusable(
        "privileged update Job",
        _set(
            "updates",
            {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "u", "image": "x", "securityContext": {"privileged": True}}
                        ]
                    }
                }
            },
        ),
        "PodSecurity",
        "spec.updates.template.spec.containers[0].securityContext.privileged",
    ),
    Unusable(
        "update Job with a hostPath volume",
        _set(
            "updates",
            {
                "template": {
                    "spec": {
                        "containers": [{"name": "u", "image": "x"}],
                        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
                    }
                }
            },
        ),
        "PodSecurity",
        "spec.updates.template.spec.volumes[0].hostPath",
    ),
    Unusable(
        "update Job on the host network",
        _set(
            "updates",
            {
                "template": {
                    "spec": {"hostNetwork": True, "containers": [{"name": "u", "image": "x"}]}
                }
            },
        ),
        "PodSecurity",
        "spec.updates.template.spec.hostNetwork",
    ),
    Unusable(
        "no update template",
        lambda s: s.pop("updates", None),
        "NoUpdateTemplate",
        "spec.updates.template",
    ),
]
