"""Kubernetes Events, posted in the order made by one thread of their own: a step never
waits for one (they are on no run's critical path), and one lost is only logged."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from patchwarden.runtime.kube import Kube

log = logging.getLogger(__name__)


class EventPoster:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="events")

    def emit(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue an Event about ``body`` (its apiVersion, kind and metadata are copied now)."""
        about = {k: body.get(k) for k in ("apiVersion", "kind")}
        self.pool.submit(
            self._post, {**about, "metadata": dict(body["metadata"])}, type_, reason, message
        )

    def _post(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            self.kube.post_event(body, type_, reason, message)
        except Exception as exc:  # an API error or a dropped connection: never fail a step
            log.warning(
                "event %s about %s/%s not posted: %s",
                reason,
                body["metadata"].get("namespace"),
                body["metadata"].get("name"),
                getattr(exc, "reason", None) or exc,
            )
