"""The UpdateRequest controller: accept or reject, then follow the run that serves it.

It writes only UpdateRequest statuses: Accepted or Rejected (``core/policy.py``
decides, ``core/status.py`` words it), then Running and Completed derived from
the run whose ``requestRef`` names the request (from the fleet registry). A
request deleted before its run started cancels that run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from patchwarden.api.run import Phase
from patchwarden.core.request_status import request_status
from patchwarden.core.windows import Calendar
from patchwarden.runtime import metrics
from patchwarden.runtime.fleet import Fleet
from patchwarden.runtime.kube import KubeApi
from patchwarden.runtime.writer import EventFn, StatusWriter


@dataclass
class Requests:
    kube: KubeApi
    emit: EventFn
    fleet: Fleet
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    calendar: Calendar = field(default_factory=Calendar)
    """The window expansions remembered for the requests' windows (``core/windows.py``)."""

    def reconcile(
        self, body: dict[str, Any], system: dict[str, Any] | None, now: datetime | None = None
    ) -> None:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        runs = self.fleet.runs_of_request(ns, name)
        status = request_status(body, system, runs, now or self.now(), self.calendar)
        StatusWriter(self.kube, self.emit).write("updaterequests", body, status.patch())
        metrics.observe_request(ns, name, status.state.value if status.state else None)

    def reconcile_for_system(
        self, ns: str, system: str, system_body: dict[str, Any] | None, now: datetime
    ) -> list[dict[str, Any]]:
        """Decide every request of the system (as the system's reconcile sees it); returns
        them, with their statuses as written."""
        requests = self.fleet.requests_of(ns, system)
        for request in requests:
            self.reconcile(request, system_body, now)
        return requests

    def reconcile_alone(self, body: dict[str, Any]) -> None:
        """A request changed: decide it against its system as stored."""
        ns = body["metadata"]["namespace"]
        system = self.kube.get("managedsystems", ns, body["spec"]["systemRef"]["name"])
        self.reconcile(body, system)

    def cancel(self, body: dict[str, Any]) -> None:
        """A request deleted before its run started cancels that run."""
        ns = body["metadata"]["namespace"]
        ref = (body.get("status") or {}).get("runRef")
        known = self.fleet.runs_of_request(ns, body["metadata"]["name"])
        name = (ref or {}).get("name") or (known[-1]["metadata"]["name"] if known else None)
        if not name:
            return
        run = self.kube.get("updateruns", ns, name)
        if (
            run is not None
            and (run.get("status") or {}).get("phase", Phase.PENDING.value) == Phase.PENDING.value
        ):
            self.kube.delete("updateruns", ns, name)
