"""The alert gate's side that talks to Prometheus: instant queries, answered once per
interval for every system that asks.

The decision itself is pure (:mod:`patchwarden.core.gate`); this module only asks the
operator's endpoint (``PATCHWARDEN_PROMETHEUS_URL``) the fleet-wide query and the
systems' own queries over Prometheus' HTTP API (``GET /api/v1/query``), and keeps each
answer for ``alert_gate_interval_seconds``: ten thousand systems sharing the fleet-wide
query cost one request per interval, not ten thousand.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError

from patchwarden.api.system import AlertGate, OnError
from patchwarden.core.gate import Answer, Verdict, decide
from patchwarden.core.settings import Settings
from patchwarden.runtime import metrics

log = logging.getLogger(__name__)

TIMEOUT = urllib3.Timeout(connect=3.0, read=10.0)
"""A query that takes longer is unanswered (and blocks, fail closed)."""
ERROR_CHARS = 300
"""Characters of an endpoint's error kept in a condition."""


class Gate:
    """Answers the alert gate's queries, cached per query for the interval."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = settings.prometheus_url.rstrip("/")
        self.fleet_query = settings.alert_gate_query
        self.on_error = settings.alert_gate_on_error
        self.interval = settings.alert_gate_interval_seconds
        self.token_file = settings.prometheus_bearer_token_file
        self.clock = clock
        self.http = urllib3.PoolManager(
            num_pools=2, maxsize=4, ca_certs=settings.prometheus_ca_file, retries=False
        )
        self._answers: dict[str, tuple[float, Answer]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        """Whether an endpoint is named (without one, no query can be asked)."""
        return bool(self.url)

    def verdict(self, namespace: str, own: AlertGate | None) -> Verdict | None:
        """The gate's verdict for a system of ``namespace`` with its own gate ``own``; None
        when neither the operator nor the system names a query."""
        fleet = self.answer(self.fleet_query) if self.fleet_query else None
        mine = self.answer(own.query) if own is not None else None
        on_error = own.on_error if own is not None and own.on_error else self.on_error
        return decide(namespace, fleet, mine, on_error)

    def answer(self, query: str) -> Answer:
        """The endpoint's answer to ``query``, at most ``interval`` seconds old. One request
        per query at a time: the systems asking meanwhile wait for it and share it."""
        with self._lock:
            lock = self._locks.setdefault(query, threading.Lock())
        with lock:
            cached = self._answers.get(query)
            if cached is not None and self.clock() - cached[0] < self.interval:
                return cached[1]
            answer = self._ask(query)
            self._answers[query] = (self.clock(), answer)
            metrics.ALERT_GATE_QUERIES.labels("error" if answer.error else "ok").inc()
            if answer.error:
                log.warning("alert gate: %s", answer.error)
            return answer

    def _ask(self, query: str) -> Answer:
        if not self.url:
            return Answer(
                query,
                error="no Prometheus endpoint is configured "
                "(PATCHWARDEN_PROMETHEUS_URL, chart alertGate.prometheusURL)",
            )
        headers = {"Accept": "application/json"}
        if self.token_file:
            try:
                token = Path(self.token_file).read_text().strip()
            except OSError as exc:
                return Answer(query, error=f"bearer token file {self.token_file}: {exc.strerror}")
            headers["Authorization"] = f"Bearer {token}"
        where = f"{self.url}/api/v1/query"
        try:
            reply = self.http.request(
                "GET", where, fields={"query": query}, headers=headers, timeout=TIMEOUT
            )
        except HTTPError as exc:
            return Answer(query, error=f"{where}: {_short(str(exc))}")
        return _parse(query, where, reply.status, reply.data)


def _parse(query: str, where: str, status: int, data: bytes) -> Answer:
    """An answer from the HTTP API's reply: the series of a vector result (any value: a
    series returned is an alert), or the endpoint's error."""
    try:
        body: Any = json.loads(data)
    except ValueError:
        return Answer(query, error=f"{where}: HTTP {status}, not JSON: {_short(repr(data[:200]))}")
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        return Answer(query, error=f"{where}: HTTP {status}: {_short(str(error or body))}")
    result = body.get("data") or {}
    if result.get("resultType") != "vector":
        return Answer(
            query,
            error=f"the query returns a {result.get('resultType')}, not an instant vector",
        )
    series = tuple(dict(item.get("metric") or {}) for item in result.get("result") or [])
    return Answer(query, series)


def _short(text: str) -> str:
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


__all__ = ["Gate", "OnError"]
