"""Two replicas never act at once: kopf's peering, read and decided as kopf does.

kopf keeps a peering object (``settings.peering_name``, a ``ClusterKopfPeering`` also for
an operator serving namespaces: :func:`ensure_peering`) in which every replica
records its identity, priority and last-seen time; kopf pauses its own handlers
(the runs' daemons, the requests) on it. The system workers follow the same
record: :func:`blocked_by` applies kopf's rule to it.

Beyond kopf: a replica that cannot renew its own entry stops acting before the entry
expires (:func:`fenced`), since a standby takes over at its expiry; the runs' steps and
the requests' handlers wait for the same decision (``operator.py``), not only kopf's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from kubernetes import client
from kubernetes.client.rest import ApiException

from patchwarden.core.settings import Settings
from patchwarden.runtime import metrics
from patchwarden.runtime.kube import Kube
from patchwarden.runtime.reflector import Reflector, lister

POLL_SECONDS = 2.0
log = logging.getLogger(__name__)


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


FENCE_SECONDS = 3.0
"""A replica stops acting this long before its own entry would expire unrenewed. kopf
renews the entry 5 to 10 s before its expiry, so a live replica's entry is never this old;
a standby takes over only once the entry has expired: it is the margin for the step in
flight and for the replicas' clocks (kopf compares one replica's timestamp with another's
clock)."""
RENEWED = "renewed after a fence: a standby that took over pauses first"
REJOIN_SECONDS = 5.0
"""After a fence, how long this replica's renewed entry must have been seen before it acts
again: the time a standby that took over needs to see it and pause (its kopf at once,
its system workers within :data:`POLL_SECONDS`)."""


def fenced(peers: Mapping[str, Any], me: str, now: datetime) -> float | None:
    """How old this replica's own entry is, when too old to act on (it was not renewed, or
    the renewal was not seen: cut off from the API server); None while it may act."""
    left = fence_in(peers, me, now)
    if left is None or left > 0:
        return None
    info = peers[me]
    return float(info.get("lifetime", 60)) - FENCE_SECONDS - left


def fence_in(peers: Mapping[str, Any], me: str, now: datetime) -> float | None:
    """Seconds until this replica's own entry is too old to act on (≤ 0: it is); None when
    it has none that can be read (kopf writes it at its start)."""
    info = peers.get(me)
    if not isinstance(info, Mapping):
        return None
    try:
        seen = datetime.fromisoformat(str(info["lastseen"]))
        seen = seen if seen.tzinfo else seen.replace(tzinfo=UTC)
        limit = float(info.get("lifetime", 60)) - FENCE_SECONDS
        return seen.timestamp() + limit - now.timestamp()
    except (KeyError, TypeError, ValueError):
        return None


class Decision(NamedTuple):
    active: bool
    why: str
    fenced: bool = False
    """Inactive because this replica's own entry was not renewed in time."""


def decide(peers: Mapping[str, Any], me: str, priority: int, now: datetime) -> Decision:
    """Whether this replica may act, and why: not while its own entry is about to expire
    unrenewed (:func:`fenced`: a standby may take over at its expiry), nor while a live peer
    outranks it (:func:`blocked_by`, kopf's rule)."""
    age = fenced(peers, me, now)
    if age is not None:
        why = (
            f"this replica's peering entry was not renewed for {age:.0f}s (cut off from the "
            "API server?): it stops acting before a standby may take over"
        )
        return Decision(False, why, fenced=True)
    blockers = blocked_by(peers, me, priority, now)
    if blockers:
        return Decision(False, f"peers {', '.join(blockers)} outrank this replica")
    return Decision(True, "this replica holds the peering")


def state(active: bool) -> str:
    return "acting" if active else "outranked"


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
    """Let the workers (and the runs' steps) act only while :func:`decide` says this
    replica may: no live peer outranks it, and its own entry is renewed in time.

    The peering object is watched, not polled (a GET every 2 s was half the requests of an
    idle operator); the rule is applied to the last copy every ``POLL_SECONDS``, since a
    peer that stops renewing its record dies by the clock alone."""
    plural = "clusterkopfpeerings"  # also when serving namespaces (ensure_peering)
    last: dict[str, Mapping[str, Any]] = {}

    def deliver(events: list[tuple[str, dict[str, Any]]]) -> None:  # in the watch's thread
        for kind, body in events:
            if body["metadata"]["name"] == s.peering_name:
                last["peers"] = {} if kind == "DELETED" else dict(body.get("status") or {})

    # Every replica renews its entry within a lifetime, this one too: a watch silent that
    # long has stalled (a cut connection), and is opened again rather than waited on.
    reflector = Reflector(
        lister(kube, plural, None, ("kopf.dev", "v1")),
        f"{plural} (peering)",
        deliver,
        read_timeout=float(s.peering_lifetime_seconds),
    )
    reflector.start()
    rejoin = 0.0  # after a fence: when this replica may act again
    was_fenced = False
    try:
        while True:
            if reflector.synced.is_set():
                at = now()
                active, why, fenced_now = decide(last.get("peers", {}), s.identity, s.priority, at)
                if fenced_now:
                    if not was_fenced:
                        log.warning("fenced: %s", why)
                    rejoin = at.timestamp() + REJOIN_SECONDS
                elif was_fenced:
                    log.info("%s (%.0f s)", RENEWED, REJOIN_SECONDS)
                rejoining = active and at.timestamp() < rejoin
                if rejoining:
                    active, why = False, RENEWED
                was_fenced = fenced_now
                set_active(active, why)
                metrics.observe_replica(
                    "fenced" if fenced_now else "rejoining" if rejoining else state(active)
                )
            # Until the record is listed, look again soon: the workers wait for this; and no
            # later than the moment this replica's own entry becomes too old to act on.
            wait = POLL_SECONDS if reflector.synced.is_set() else 0.05
            due = fence_in(last.get("peers", {}), s.identity, now())
            if due is not None and due > 0:
                wait = min(wait, due + 0.01)
            await asyncio.sleep(wait)
    finally:
        reflector.stop()
