"""Two replicas never act at once: kopf's peering, read and decided as kopf does.

kopf keeps a peering object (``settings.peering_name``, a ``ClusterKopfPeering`` also for
an operator serving namespaces: :func:`ensure_peering`) in which every replica
records its identity, priority and last-seen time; kopf pauses its own handlers
(the runs' daemons, the requests) on it. The system workers follow the same
record: :func:`blocked_by` applies kopf's rule to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from patchwarden.core.settings import Settings
from patchwarden.runtime.kube import Kube
from patchwarden.runtime.reflector import Reflector, lister

POLL_SECONDS = 2.0


def blocked_by(peers: Mapping[str, Any], me: str, priority: int, now: datetime) -> list[str]:
    """Live peers (other than ``me``) that make kopf pause this replica: any with a
    higher priority, or with the same one (then kopf pauses every replica).

    ``peers`` is the ``status`` of kopf's peering object: identity →
    ``{priority, lifetime, lastseen}``.
    """
    found = []
    for identity, info in peers.items():
        if identity == me or not isinstance(info, Mapping):
            continue
        try:
            if _alive(info, now) and int(info.get("priority", 0)) >= priority:
                found.append(identity)
        except (KeyError, TypeError, ValueError):
            continue
    return sorted(found)


def _alive(info: Mapping[str, Any], now: datetime) -> bool:
    seen = datetime.fromisoformat(str(info["lastseen"]))
    seen = seen if seen.tzinfo else seen.replace(tzinfo=UTC)
    return seen.timestamp() + float(info.get("lifetime", 60)) > now.timestamp()


def stale(peers: Mapping[str, Any], me: str, now: datetime) -> bool:
    """Our copy of the record is out of date: our own entry, which our kopf renews, has
    expired in it (the watch stalled, or broke). Then the last decision stands: the clock
    would otherwise retire the other replicas' entries too, and wrongly."""
    info = peers.get(me)
    if not isinstance(info, Mapping):
        return False  # not recorded yet (kopf writes it at its start)
    try:
        return not _alive(info, now)
    except (KeyError, TypeError, ValueError):
        return False


def ensure_peering(api: client.ApiClient, settings: Settings) -> None:
    """Create the cluster's kopf peering object the replicas meet in, if missing.

    One ``ClusterKopfPeering`` whether the operator serves the whole cluster or a list of
    namespaces: kopf's default for a namespaced operator, a ``KopfPeering`` in each namespace
    served, costs a keep-alive PATCH per namespace every 50 to 55 s and a watch of each (at 50
    namespaces, about one write a second while idle; docs/scale.md). :func:`configure` in
    operator.py tells kopf to use the cluster's object (``settings.peering.clusterwide``)."""
    custom = client.CustomObjectsApi(api)
    body = {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": settings.peering_name},
    }
    try:
        custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)
    except ApiException as exc:
        if exc.status != 409:
            raise


async def watch(
    kube: Kube,
    s: Settings,
    set_active: Callable[[bool, str], None],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Let the workers run only while no live peer outranks this replica (kopf's rule).

    The peering object is watched, not polled (a GET every 2 s was half the requests of an
    idle operator); the rule is applied to the last copy every ``POLL_SECONDS``, since a
    peer that stops renewing its record dies by the clock alone."""
    plural = "clusterkopfpeerings"  # also when serving namespaces (ensure_peering)
    last: dict[str, Mapping[str, Any]] = {}

    def deliver(events: list[tuple[str, dict[str, Any]]]) -> None:  # in the watch's thread
        for kind, body in events:
            if body["metadata"]["name"] == s.peering_name:
                last["peers"] = {} if kind == "DELETED" else dict(body.get("status") or {})

    reflector = Reflector(
        lister(kube, plural, None, ("kopf.dev", "v1")), f"{plural} (peering)", deliver
    )
    reflector.start()
    try:
        while True:
            peers, at = last.get("peers", {}), now()
            if reflector.synced.is_set() and not stale(peers, s.identity, at):
                blockers = blocked_by(peers, s.identity, s.priority, at)
                set_active(
                    not blockers,
                    f"peers {', '.join(blockers)} outrank this replica"
                    if blockers
                    else "this replica holds the peering",
                )
            # Until the record is listed, look again soon: the workers wait for this.
            await asyncio.sleep(POLL_SECONDS if reflector.synced.is_set() else 0.05)
    finally:
        reflector.stop()
