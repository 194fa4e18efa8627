"""Events are posted in order by their own thread; one that fails is only logged."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from patchwarden.runtime.events import EventPoster


class Poster:
    def __init__(self) -> None:
        self.posted: list[str] = []

    def post_event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        if reason == "Broken":
            raise OSError("connection reset")
        self.posted.append(f"{body['metadata']['name']} {type_} {reason}")


def test_events_keep_their_order_and_a_failure_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = Poster()
    poster = EventPoster(kube)  # type: ignore[arg-type]
    body = {"apiVersion": "v1", "kind": "X", "metadata": {"name": "s", "namespace": "ns"}}
    with caplog.at_level(logging.WARNING):
        for reason in ("First", "Broken", "Second"):
            poster.emit(body, "Normal", reason, "m")
        body["metadata"]["name"] = "changed after emit"
        poster.pool.shutdown(wait=True)
    assert kube.posted == ["s Normal First", "s Normal Second"], "metadata copied at emit"
    assert "event Broken about ns/s not posted: connection reset" in caplog.text
