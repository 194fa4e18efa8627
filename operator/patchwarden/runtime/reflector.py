"""List, then watch, one kind in one namespace: client-go's reflector, in small.

kopf's watch hands every event through its handler machinery (progress
storage, diff bases, per-object loggers) before it reaches a handler; for
ManagedSystems, where the controller only wants the bodies, that was about
a third of the operator's CPU in a 10,000-system sync (py-spy, see
docs/scale.md). A :class:`Reflector` runs in its own thread with the
kubernetes client: a paged LIST, then a WATCH from the list's
resourceVersion (bookmarks on, the server ends it after 15 to 30 minutes, ``WATCH_SECONDS``
and it resumes from the last version seen). A ``410 Gone`` (the version is
too old) starts over with a LIST; an object known before but missing from a
new LIST is reported deleted, so the consumer's cache never keeps a ghost.

Events go to ``deliver`` in batches (one page of a LIST, one chunk of the
stream), as ``(type, body)`` pairs with ``type`` ADDED, MODIFIED or DELETED.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from patchwarden.api.common import GROUP, VERSION
from patchwarden.core.builders import LABEL_RUN
from patchwarden.runtime import metrics
from patchwarden.runtime.inventory import Inventory, Ref, Snapshots
from patchwarden.runtime.kube import SNAPSHOTS, Kube, api_client, pages

log = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]
Deliver = Callable[[list[Event]], object]
PAGE = 500
WATCH_SECONDS = (900, 1800)
"""A watch asks the server to end it after a time drawn from this range (client-go draws
5 to 10 minutes): each watch is one request per that time, and an operator serving 50
namespaces keeps 300 of them. Bookmarks keep its resourceVersion fresh meanwhile."""
READ_TIMEOUT = WATCH_SECONDS[1] + 30.0
"""The server ends every watch before this: silence this long is a dead connection."""
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
AFTER_SECONDS = 30.0


def handoff(loop: asyncio.AbstractEventLoop, fn: Callable[[list[Event]], object]) -> Deliver:
    """Deliver a watch's batches to ``fn`` on the event loop, one at a time: the watch
    thread waits until the loop has taken each batch. Without that wait, a LIST parsed
    faster than the loop takes it can pile up in the loop's queue, pages of parsed bodies
    in memory at once (inferred: at a start over 30,000 systems the peak RSS was 588 MB,
    462 MB once synced). A closed or stopped loop (the operator exits) takes nothing."""

    def deliver(events: list[Event]) -> None:
        taken = threading.Event()

        def run() -> None:
            try:
                fn(events)
            finally:
                taken.set()

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop is closed
            return
        while not taken.wait(1.0):
            if loop.is_closed() or not loop.is_running():
                return

    return deliver


class Gone(Exception):
    """The resourceVersion to resume from is too old: list again."""


def lines(chunks: Iterable[bytes]) -> Iterator[list[bytes]]:
    """Complete lines of a byte stream, a list of them per chunk that completed any."""
    rest = b""
    for chunk in chunks:
        *complete, rest = (rest + chunk).split(b"\n")
        done = [line for line in complete if line.strip()]
        if done:
            yield done
    if rest.strip():
        yield [rest]


class Known:
    """The objects one reflector has reported and not yet reported deleted (their
    namespace and name), and the last resourceVersion seen. Pure bookkeeping: no I/O."""

    def __init__(self) -> None:
        self.keys: set[tuple[str, str]] = set()
        self.version = ""
        self._listed: set[tuple[str, str]] = set()

    @staticmethod
    def key(meta: dict[str, Any]) -> tuple[str, str]:
        return meta.get("namespace") or "", meta["name"]

    def listed(self, items: list[dict[str, Any]], version: str, first_page: bool) -> list[Event]:
        """One page of a LIST; ``first_page`` starts a new listing."""
        if first_page:
            self._listed = set()
        events: list[Event] = []
        for item in items:
            key = self.key(item["metadata"])
            self._listed.add(key)
            events.append(("MODIFIED" if key in self.keys else "ADDED", item))
            self.keys.add(key)
        self.version = version
        return events

    def relisted(self) -> list[Event]:
        """After the last page: whatever was known and is no longer listed went meanwhile."""
        gone = sorted(self.keys - self._listed)
        self.keys = self._listed
        return [("DELETED", {"metadata": {"namespace": ns, "name": n}}) for ns, n in gone]

    def event(self, line: bytes) -> Event | None:
        """One line of a watch stream; None for bookmarks. Raises :class:`Gone` on a 410."""
        event = json.loads(line)
        kind, body = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if body.get("code") == 410:
                raise Gone(body.get("message", "resource version too old"))
            raise ApiException(status=body.get("code"), reason=body.get("message"))
        meta = body.get("metadata") or {}
        if meta.get("resourceVersion"):
            self.version = meta["resourceVersion"]
        if kind == "BOOKMARK":
            return None
        if kind == "DELETED":
            self.keys.discard(self.key(meta))
        else:
            self.keys.add(self.key(meta))
        return str(kind), body


def lister(
    kube: Kube,
    plural: str,
    namespace: str | None,
    group: tuple[str, str] = (GROUP, VERSION),
    selector: str | None = None,
) -> Callable[..., Any]:
    """The client call that lists (or, with ``watch=True``, watches) ``plural`` of
    ``group`` in ``namespace`` (None: every namespace), returning the raw response."""
    extra: dict[str, Any] = {"_preload_content": False}
    if selector:
        extra["label_selector"] = selector
    builtin = {
        ("apps", "deployments"): (
            "list_deployment_for_all_namespaces",
            "list_namespaced_deployment",
        ),
        ("apps", "statefulsets"): (
            "list_stateful_set_for_all_namespaces",
            "list_namespaced_stateful_set",
        ),
        ("", "persistentvolumeclaims"): (
            "list_persistent_volume_claim_for_all_namespaces",
            "list_namespaced_persistent_volume_claim",
        ),
    }.get((group[0], plural))
    if builtin is not None:
        api = kube.apps if group[0] == "apps" else kube.core
        everywhere, namespaced = builtin
        if namespace is None:
            return functools.partial(getattr(api, everywhere), **extra)
        return functools.partial(getattr(api, namespaced), namespace, **extra)
    if group == ("batch", "v1") and plural == "jobs":
        if namespace is None:
            return functools.partial(kube.batch.list_job_for_all_namespaces, **extra)
        return functools.partial(kube.batch.list_namespaced_job, namespace, **extra)
    if namespace is None:
        return functools.partial(kube.custom.list_cluster_custom_object, *group, plural, **extra)
    return functools.partial(
        kube.custom.list_namespaced_custom_object, *group, namespace, plural, **extra
    )


class Reflector:
    """One LIST+WATCH loop in a daemon thread; ``call`` is a :func:`lister`."""

    def __init__(
        self,
        call: Callable[..., Any],
        what: str,
        deliver: Deliver,
        page: int = PAGE,
        listing: threading.Semaphore | None = None,
        after: tuple[threading.Event, ...] = (),
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self._call, self.what, self.deliver = call, what, deliver
        self.read_timeout = read_timeout
        """A watch silent this long is taken as stalled (a cut connection) and opened again."""
        self.page, self.listing = page, listing
        """Pages of ``page`` objects; ``listing``, if given, is held for the whole LIST."""
        self.after = after
        """The first LIST waits for these (other reflectors' ``synced``), at most
        ``AFTER_SECONDS`` in all."""
        self.known = Known()
        self._stop = threading.Event()
        self._response: Any = None
        self._last_error = ""
        self.synced = threading.Event()
        """Set once the first LIST has been delivered."""
        self.thread = threading.Thread(target=self._run, name=f"watch {what}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            response.shutdown()  # unblocks the read in the watch thread

    def _list(self) -> None:
        if self.listing is None:
            self._pages()
            return
        with self.listing:
            self._pages()

    def _pages(self) -> None:
        first = True
        for page in pages(lambda **kw: json.loads(self._call(**kw).data), self.page):
            meta = page.get("metadata") or {}
            events = self.known.listed(page.get("items") or [], meta["resourceVersion"], first)
            first = False
            if not meta.get("continue"):
                events += self.known.relisted()
            if events:
                self.deliver(events)

    def _watch(self) -> None:
        response = self._call(
            watch=True,
            resource_version=self.known.version,
            allow_watch_bookmarks=True,
            timeout_seconds=random.randint(*WATCH_SECONDS),
            _request_timeout=(10.0, self.read_timeout),
        )
        self._response = response
        try:
            for batch in lines(response.stream(64 * 1024, decode_content=True)):
                events = [e for e in map(self.known.event, batch) if e is not None]
                if events:
                    self.deliver(events)
                if self._stop.is_set():
                    return
        finally:
            self._response = None
            response.release_conn()

    def _wait_for_the_lists_before(self) -> None:
        """Wait until every list in ``after`` is done, at most ``AFTER_SECONDS``; a stop
        ends the wait (looked at every 0.1 s)."""
        deadline = time.monotonic() + AFTER_SECONDS
        for event in self.after:
            while not event.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
                if self._stop.is_set():
                    return
                if time.monotonic() >= deadline:
                    log.info("listing %s before the lists it waits for are done", self.what)
                    return

    def _run(self) -> None:
        self._wait_for_the_lists_before()
        listed, backoff = False, BACKOFF_FIRST
        while not self._stop.is_set():
            try:
                if not listed:
                    self._list()
                    listed = True
                    self.synced.set()
                began = time.monotonic()
                self._watch()
                if time.monotonic() - began >= 1.0:  # a normal end (the server's timeout)
                    backoff, self._last_error = BACKOFF_FIRST, ""
                    continue
                why = "the watch ended at once"  # never spin: back off as after an error
            except Gone as exc:
                log.info("watching %s: %s; listing again", self.what, exc)
                listed = False
                continue
            except ApiException as exc:
                if exc.status == 410:
                    listed = False
                    continue
                if exc.status == 404 and not listed:
                    # The kind is not installed (no snapshot CRDs): there is none of it,
                    # which is an answer; it is listed again until it is installed.
                    self.synced.set()
                why = f"API error {exc.status}: {exc.reason}"
            except (HTTPError, OSError, ValueError, KeyError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # never let the watch thread die: list again, later
                log.exception("watching %s: unexpected error; listing again", self.what)
                why, listed = f"{type(exc).__name__}: {exc}", False
            if self._stop.is_set():
                return
            # A lasting failure (a kind not installed, a missing permission) is a warning
            # once, not every 30 s; any other message is a warning again.
            level = logging.DEBUG if why == self._last_error else logging.WARNING
            self._last_error = why
            log.log(level, "watching %s failed (%s); again in %.0f s", self.what, why, backoff)
            self._stop.wait(backoff * random.uniform(0.8, 1.2))  # jitter
            backoff = min(backoff * 2, BACKOFF_MAX)


WORKLOADS = (("apps", "deployments", "Deployment"), ("apps", "statefulsets", "StatefulSet"))
INVENTORY_PAGE = 100
INVENTORY_LISTS = 8
INVENTORY_BODIES = 800
"""The workloads and claims are listed eight LISTs at a time, whatever the number of
namespaces, in pages of about ``INVENTORY_BODIES`` bodies in all (100 each at least, 500 at
most): their bodies are large (a Deployment's pod template) and fifty namespaces listed at
once held 200 MB of them at a 10,000-system start (docs/scale.md). Serving the whole cluster
(three LISTs), pages of 266: 30,000 Deployments in 113 requests, not 300."""
CLAIMS = ("", "persistentvolumeclaims", "PersistentVolumeClaim")


def watches(
    namespaces: tuple[str, ...],
    systems: Deliver,
    run_objects: Deliver,
    catalogs: Deliver,
    snapshot_classes: Deliver,
    inventory: Inventory,
    changed: Callable[[list[Ref]], object],
    snapshots: Snapshots,
) -> list[Reflector]:
    """Per namespace served (none: the whole cluster): ManagedSystems (to ``systems``); the
    runs' snapshots (into ``snapshots``, in the watch's thread) and Jobs (to ``run_objects``:
    a change wakes the run that waits); the
    Deployments, StatefulSets and PersistentVolumeClaims (into the ``inventory``, in the
    watch's thread; what a system can see of them changed goes to ``changed``). And the
    cluster's ReleaseCatalogs and VolumeSnapshotClasses (to ``catalogs`` and
    ``snapshot_classes``: a change concerns every system that uses them)."""
    served: tuple[str | None, ...] = namespaces or (None,)
    # Their own connections: a watch holds one for minutes.
    kube = Kube(api_client(6 * len(served) + 2), metrics.count_kube_request)
    found = [
        Reflector(lister(kube, "releasecatalogs", None), "releasecatalogs", catalogs),
        Reflector(
            lister(kube, "volumesnapshotclasses", None, SNAPSHOTS),
            "volumesnapshotclasses",
            snapshot_classes,
        ),
    ]
    inventory_lists = threading.BoundedSemaphore(INVENTORY_LISTS)
    kinds = (*WORKLOADS, CLAIMS)
    at_once = min(INVENTORY_LISTS, len(served) * len(kinds))
    page = min(PAGE, max(INVENTORY_PAGE, INVENTORY_BODIES // at_once))
    for ns in served:
        where = ns or "every namespace"
        listed_first = []
        for group, plural, kind in kinds:
            reflector = Reflector(
                lister(kube, plural, ns, (group, "v1")),
                f"{plural} in {where}",
                functools.partial(_inventory, inventory, kind, changed),
                page=page,
                listing=inventory_lists,
            )
            inventory.watched_by(kind, reflector.synced)
            listed_first.append(reflector)
        snapshot_watch = Reflector(
            lister(kube, "volumesnapshots", ns, SNAPSHOTS, LABEL_RUN),
            f"volumesnapshots in {where}",
            functools.partial(_snapshots, snapshots, run_objects),
        )
        snapshots.watched_by(snapshot_watch.synced)
        found += [
            # After the namespace's workloads and claims: no system is reconciled before
            # they are listed, and the two LISTs at once (both CPU-bound at a start) would
            # only make the workers wait longer for the first.
            Reflector(
                lister(kube, "managedsystems", ns),
                f"managedsystems in {where}",
                systems,
                after=tuple(r.synced for r in listed_first),
            ),
            snapshot_watch,
            Reflector(
                lister(kube, "jobs", ns, ("batch", "v1"), LABEL_RUN),
                f"jobs in {where}",
                run_objects,
            ),
            *listed_first,
        ]
    return found


def _snapshots(snapshots: Snapshots, then: Deliver, events: list[Event]) -> None:
    snapshots.observe(events)
    then(events)


def _inventory(
    inventory: Inventory, kind: str, changed: Callable[[list[Ref]], object], events: list[Event]
) -> None:
    refs = inventory.observe(kind, events)
    if refs:
        changed(refs)
